//! The quota store: one atomic sliding-window check per request.
//!
//! Two backends share one contract: [`RedisStore`] for production (many replicas, one truth) and
//! [`MemoryStore`] as the embedded default for a single instance. Both implement the same sliding
//! log, so the same tests run against both.

mod breaker;
mod cluster;
mod connections;
mod memory;
mod redis;

pub use memory::MemoryStore;
pub use redis::{RedisSettings, RedisStore, TlsCa};

use crate::api_key::KeyDigest;
use crate::limit::Limit;
use std::future::Future;

/// The (API key, route) pair whose requests are counted together.
#[derive(Debug, Clone, Copy)]
pub struct BucketRef<'a> {
    /// Digest of the API key.
    pub key: &'a KeyDigest,
    /// Bucket name from the route table (`GET /campaigns/:id`, `default`, ...).
    pub name: &'a str,
}

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Whether this request was admitted (and counted).
    pub allowed: bool,
    /// Requests still admitted in the current window after this one.
    pub remaining: u32,
    /// Unix time in µs at which one more request will be admitted.
    pub reset_micros: u64,
    /// The store's clock at the check, in Unix µs; `Retry-After` is measured from it.
    pub now_micros: u64,
}

/// Why the store could not answer. Every variant is treated as "backend unavailable".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis did not answer within the configured timeout.
    #[error("redis did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// Redis answered with an error, or the connection failed.
    #[error("redis error: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// The in-memory store holds as many buckets as it may, all of them live.
    #[error("the in-memory store is full ({0} buckets, memory_store_entries)")]
    Full(usize),
    /// Redis failed several times in a row; checks fail at once until a probe gets an answer.
    #[error("redis circuit breaker open after repeated failures")]
    CircuitOpen,
    /// The Redis Cluster connection is still being made in the background.
    #[error("not connected to the redis cluster yet")]
    NotConnected,
}

/// A bucket as it stands, read without counting anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Requests counted in the trailing window.
    pub used: u32,
    /// Requests that would still be admitted now.
    pub remaining: u32,
    /// Unix time in µs at which one more request will be admitted; now when the bucket is empty.
    pub reset_micros: u64,
    /// The store's clock at the read, in Unix µs.
    pub now_micros: u64,
}

/// The check script's answer: allowed (0/1), remaining, reset and now in Unix µs.
type Reply = (u8, u32, u64, u64);

/// The read-only script's answer: used, remaining, reset and now in Unix µs.
type PeekReply = (u32, u32, u64, u64);

/// A backend that evaluates sliding-window quotas.
pub trait QuotaStore: Send + Sync + 'static {
    /// Counts one request in `bucket` if `limit` admits it, atomically.
    fn check(
        &self,
        bucket: BucketRef<'_>,
        limit: Limit,
    ) -> impl Future<Output = Result<Outcome, StoreError>> + Send;

    /// Reads `bucket` under `limit` without counting a request or changing anything.
    fn peek(
        &self,
        bucket: BucketRef<'_>,
        limit: Limit,
    ) -> impl Future<Output = Result<Usage, StoreError>> + Send;

    /// Forgets every request counted in `bucket`; returns how many of them lay in the trailing
    /// `limit.window`.
    fn reset(
        &self,
        bucket: BucketRef<'_>,
        limit: Limit,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;

    /// Circuit breakers that are open now, for the metrics; a store without breakers has none.
    fn breakers_open(&self) -> usize {
        0
    }
}
