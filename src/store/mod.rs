//! The quota store: one atomic sliding-window check per request.
//!
//! Two backends share one contract: [`RedisStore`] for production (many replicas, one truth) and
//! [`MemoryStore`] as the embedded default for a single instance. Both implement the same sliding
//! log, so the same tests run against both.
//!
//! A bucket remembers the times of its last `capacity` admitted slots (the largest `requests` of
//! its windows), newest last. A window of N requests and length W has room for a request of cost
//! c iff the (N − c)-th most recent time (0: the newest) is at least W old, or does not exist; so
//! one log answers every window of a route exactly, and memory per bucket is bounded by its
//! capacity whatever the traffic.

mod breaker;
mod call;
mod cluster;
mod connections;
mod function;
mod memory;
mod readiness;
mod redis;
mod script;
pub mod version;

pub use function::{SCRIPT as CHECK_SCRIPT, check_function};
pub use memory::MemoryStore;
pub use readiness::Readiness;
pub use redis::RedisStore;

use crate::api_key::KeyDigest;
use crate::policy::limit::Rule;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

/// The (API key, route) pair whose requests are counted together.
#[derive(Debug, Clone, Copy)]
pub struct BucketRef<'a> {
    /// Digest of the API key.
    pub key: &'a KeyDigest,
    /// Bucket name from the route table (`GET /campaigns/:id`, `default`, ...).
    pub name: &'a str,
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Whether every window had room for the request. A request is counted when it was allowed,
    /// and in shadow mode also when it was not.
    pub allowed: bool,
    /// The store's clock at the check, in Unix µs; `Retry-After` is measured from it.
    pub now_micros: u64,
    /// One entry per window of the rule, in the rule's order.
    pub windows: Vec<WindowOutcome>,
}

/// One window's state after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowOutcome {
    /// Slots still free in the window after this request.
    pub remaining: u32,
    /// Unix time in µs: after a counted request, when the window frees one more slot; after a
    /// denied one, when the window has room for the request (now if it has room already).
    pub reset_micros: u64,
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
    /// No connection to Redis is ready: each is being made in the background (Redis is down,
    /// unreachable or older than the supported minimum).
    #[error("no connection to redis is ready")]
    NotConnected,
}

impl StoreError {
    /// Every [`kind`](Self::kind), in the order of [`kind_index`](Self::kind_index): the `kind`
    /// label of `tollgate_store_errors_total`.
    pub const KINDS: [&'static str; 5] =
        ["timeout", "error", "full", "circuit_open", "not_connected"];

    /// What kind of failure it is, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        Self::KINDS[self.kind_index()]
    }

    /// The position of its kind in [`KINDS`](Self::KINDS).
    pub fn kind_index(&self) -> usize {
        match self {
            Self::Timeout(_) => 0,
            Self::Redis(_) => 1,
            Self::Full(_) => 2,
            Self::CircuitOpen => 3,
            Self::NotConnected => 4,
        }
    }

    /// Whether a check it fails is refused whatever `failure_mode` says. A full memory store is a
    /// flood of invented keys, not an outage: failing open would give the flood, and any key whose
    /// bucket expired, unlimited requests.
    pub fn fails_closed(&self) -> bool {
        matches!(self, Self::Full(_))
    }
}

/// A bucket as it stands, read without counting anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// The store's clock at the read, in Unix µs.
    pub now_micros: u64,
    /// One entry per window of the rule, in the rule's order.
    pub windows: Vec<WindowUsage>,
}

/// One window of a bucket as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowUsage {
    /// Slots counted in the trailing window.
    pub used: u32,
    /// Slots still free now.
    pub remaining: u32,
    /// Unix time in µs at which one more slot is free; now when none is used.
    pub reset_micros: u64,
}

/// The quota endpoint's read of one API key: its own request counted, and when admitted, every
/// bucket asked for as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaRead {
    /// The endpoint's own request, checked against its own limit (cost 1, enforced).
    pub admitted: Outcome,
    /// One entry per bucket asked for, in their order; empty when the request was not admitted.
    pub buckets: Vec<Usage>,
}

/// Which plan each API key is on, as of one version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanAssignments {
    /// Changes with every change (`None`: never changed).
    pub version: Option<String>,
    /// Plan names by key digest.
    pub plans: HashMap<KeyDigest, Arc<str>>,
}

/// A backend that evaluates sliding-window quotas.
pub trait QuotaStore: Send + Sync + 'static {
    /// Counts one request of `rule.cost()` slots in `bucket` if every window of `rule` has room
    /// for it, atomically; in shadow mode counts it either way.
    fn check(
        &self,
        bucket: BucketRef<'_>,
        rule: &Rule,
    ) -> impl Future<Output = Result<Outcome, StoreError>> + Send;

    /// Reads `bucket` under `rule` without counting a request or changing anything.
    fn peek(
        &self,
        bucket: BucketRef<'_>,
        rule: &Rule,
    ) -> impl Future<Output = Result<Usage, StoreError>> + Send;

    /// The quota endpoint's call, one store call however many buckets: counts one request in
    /// `own` under `own_rule`, and when that admits it reads every bucket of `key` in `buckets`
    /// (name and rule) as [`QuotaStore::peek`] would, without counting.
    fn read_quotas(
        &self,
        own: BucketRef<'_>,
        own_rule: &Rule,
        buckets: &[(&str, &Rule)],
    ) -> impl Future<Output = Result<QuotaRead, StoreError>> + Send;

    /// Forgets every request counted in `bucket`; returns how many slots of them lay in the
    /// rule's retention (its longest window, or a longer one of another plan's rule).
    fn reset(
        &self,
        bucket: BucketRef<'_>,
        rule: &Rule,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;

    /// Puts `key` on `plan`, or on none; every replica's [`QuotaStore::plans_since`] sees it.
    fn set_plan(
        &self,
        key: &KeyDigest,
        plan: Option<&str>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Writes `plans` back as every assignment, if the store has lost them (their hash has no
    /// version: a Redis restarted without persistence, the hash deleted or evicted); in one
    /// atomic step, so that of the replicas that try only the first writes, and nothing changed
    /// since is overwritten. Whether this call wrote them.
    fn restore_plans(
        &self,
        plans: &HashMap<KeyDigest, Arc<str>>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The plan `key` is on, as the store holds it now.
    fn get_plan(
        &self,
        key: &KeyDigest,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// Every plan assignment, unless their version is still `known` (one small call when
    /// nothing changed).
    fn plans_since(
        &self,
        known: Option<&str>,
    ) -> impl Future<Output = Result<Option<PlanAssignments>, StoreError>> + Send;

    /// When the store first answered: health reports NOT_SERVING until then. A store that needs no
    /// server is ready at once.
    fn readiness(&self) -> Readiness {
        Readiness::ready()
    }

    /// Circuit breakers that are open now, for the metrics; a store without breakers has none.
    fn breakers_open(&self) -> usize {
        0
    }
}

/// Aborts a background task when dropped (tests start many stores in one process).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
