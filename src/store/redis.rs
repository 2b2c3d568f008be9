//! The Redis store: one `EVALSHA` of the sliding-window script per check.

use super::{BucketRef, Outcome, QuotaStore, StoreError};
use crate::limit::Limit;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The script, compiled into the binary and hashed once; `invoke_async` sends `EVALSHA` and falls
/// back to loading the script when Redis answers `NOSCRIPT` (after a restart or `SCRIPT FLUSH`).
const SCRIPT: &str = include_str!("sliding_window.lua");

/// How the store reaches Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL.
    pub url: String,
    /// Time allowed for one check, connection included; past it the backend counts as
    /// unavailable.
    pub timeout: Duration,
    /// Multiplexed connections; checks are spread over them round-robin.
    pub connections: usize,
    /// Prefix of every key name, so several deployments can share one Redis.
    pub key_prefix: String,
    /// PEM file of the CA that signs the server's certificate (`rediss://` only); without it the
    /// system's trust store is used.
    pub tls_ca_file: Option<PathBuf>,
}

/// Quotas kept in Redis, shared by every replica.
///
/// Each connection is a [`ConnectionManager`]: one multiplexed connection that pipelines
/// concurrent requests and reconnects by itself when Redis comes back.
pub struct RedisStore {
    connections: Vec<ConnectionManager>,
    next: AtomicUsize,
    script: redis::Script,
    timeout: Duration,
    key_prefix: String,
}

impl RedisStore {
    /// Prepares the connections without connecting, so tollgate starts (and fails open) while
    /// Redis is down.
    pub fn new(settings: &RedisSettings) -> Result<Self, StoreError> {
        let client = match &settings.tls_ca_file {
            None => redis::Client::open(settings.url.as_str())?,
            Some(path) => {
                let root_cert =
                    std::fs::read(path).map_err(|e| StoreError::CaFile(path.clone(), e))?;
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                };
                redis::Client::build_with_tls(settings.url.as_str(), certificates)?
            }
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            // Fail fast and let the next check try again: a check never waits for backoff.
            .set_number_of_retries(0);
        let connections = (0..settings.connections.max(1))
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), config.clone()))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            connections,
            next: AtomicUsize::new(0),
            script: redis::Script::new(SCRIPT),
            timeout: settings.timeout,
            key_prefix: settings.key_prefix.clone(),
        })
    }

    /// Loads the script on the server ahead of the first check. Failure is not fatal: the first
    /// check loads it when Redis is reachable again.
    pub async fn preload(&self) -> Result<(), StoreError> {
        let mut connection = self.connections[0].clone();
        let load = self.script.load_async(&mut connection);
        tokio::time::timeout(self.timeout, load)
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))??;
        Ok(())
    }

    /// `<prefix>:{<key digest>}:<bucket>`. The hash tag keeps every bucket of one API key in one
    /// Redis Cluster slot, so a script that touches several of them stays legal.
    pub fn key_name(&self, bucket: BucketRef<'_>) -> String {
        format!(
            "{}:{{{}}}:{}",
            self.key_prefix,
            bucket.key.as_str(),
            bucket.name
        )
    }
}

impl QuotaStore for RedisStore {
    async fn check(&self, bucket: BucketRef<'_>, limit: Limit) -> Result<Outcome, StoreError> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        let mut connection = self.connections[index].clone();
        let mut invocation = self.script.key(self.key_name(bucket));
        invocation
            .arg(limit.requests.get())
            .arg(limit.window_micros());
        let reply: (u8, u32, u64, u64) =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection))
                .await
                .map_err(|_| StoreError::Timeout(self.timeout))??;
        let (allowed, remaining, reset_micros, now_micros) = reply;
        Ok(Outcome {
            allowed: allowed == 1,
            remaining,
            reset_micros,
            now_micros,
        })
    }
}
