//! The Redis store: one `EVALSHA` of the sliding-window script per check.

use super::breaker::{Breaker, BreakerSettings, Call, Transition};
use super::connections::Connections;
use super::{BucketRef, Outcome, QuotaStore, StoreError};
use crate::limit::Limit;
use redis::IntoConnectionInfo;
use redis::aio::ConnectionManagerConfig;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::{TcpSettings, socket2::TcpKeepalive};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The script, compiled into the binary and hashed once; `invoke_async` sends `EVALSHA` and falls
/// back to loading the script when Redis answers `NOSCRIPT` (after a restart or `SCRIPT FLUSH`).
const SCRIPT: &str = include_str!("sliding_window.lua");

/// The standalone store's breaker. Five failures in a row is a Redis that is down, not one slow
/// answer; half a second between probes bounds both the checks that wait for a probe (two a
/// second) and the time limits stay off after Redis heals.
const BREAKER: BreakerSettings = BreakerSettings {
    failures_to_open: 5,
    probe_interval: Duration::from_millis(500),
};

/// Time allowed to connect to a Redis Cluster in the background: the topology takes several
/// round trips, which need not fit in one check's timeout.
const CLUSTER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Backoff between background attempts to connect to the cluster.
const CLUSTER_RETRY_MIN: Duration = Duration::from_millis(100);
const CLUSTER_RETRY_MAX: Duration = Duration::from_secs(5);

/// TCP settings of every Redis socket. Keepalive finds a dead peer of an idle connection, and
/// TCP_USER_TIMEOUT one that leaves sent data unacknowledged, in about ten seconds instead of the
/// kernel's defaults (two hours, and about fifteen minutes of retransmissions). Nagle's algorithm
/// stays as redis-rs sets it.
fn tcp_settings() -> TcpSettings {
    TcpSettings::default()
        .set_keepalive(
            TcpKeepalive::new()
                .with_time(Duration::from_secs(5))
                .with_interval(Duration::from_secs(2))
                .with_retries(3),
        )
        .set_user_timeout(Duration::from_secs(10))
}

/// How the store reaches Redis.
#[derive(Clone)]
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
    /// The CA that signs the server's certificate (`rediss://` only); without it the system's
    /// trust store is used.
    pub tls_ca: Option<TlsCa>,
    /// `url` is one node of a Redis Cluster; the others are discovered from it.
    pub cluster: bool,
}

/// By hand, so that printing a `Config` with `{:?}` never shows the password.
impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &crate::config::redact_url(&self.url))
            .field("timeout", &self.timeout)
            .field("connections", &self.connections)
            .field("key_prefix", &self.key_prefix)
            .field("tls_ca", &self.tls_ca)
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// A CA certificate for Redis TLS, read once when the configuration is validated.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsCa {
    /// Where it was read from, for display.
    pub path: PathBuf,
    /// The PEM text.
    pub pem: Vec<u8>,
}

/// The path only: the certificate itself is noise in a log line.
impl std::fmt::Debug for TlsCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsCa({})", self.path.display())
    }
}

/// Quotas kept in Redis, shared by every replica.
pub struct RedisStore {
    backend: Backend,
    script: redis::Script,
    timeout: Duration,
    key_prefix: String,
}

impl RedisStore {
    /// Prepares the connections without connecting, so tollgate starts (and fails open) while
    /// Redis is down. A cluster is connected by a background task (see [`connect_cluster`]), so
    /// this must run inside the tokio runtime.
    pub fn new(settings: &RedisSettings) -> Result<Self, StoreError> {
        let certificates = settings.tls_ca.as_ref().map(|ca| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.pem.clone()),
        });
        let script = redis::Script::new(SCRIPT);
        let backend = if settings.cluster {
            let mut builder = ClusterClient::builder(vec![settings.url.as_str()])
                .connection_timeout(CLUSTER_CONNECT_TIMEOUT.max(settings.timeout))
                .response_timeout(settings.timeout)
                .tcp_settings(tcp_settings())
                // A redirect after a resharding is retried; a dead node is not waited for.
                .retries(2);
            if let Some(certificates) = certificates {
                builder = builder.certs(certificates);
            }
            let connection = Arc::new(OnceLock::new());
            let connected = Arc::new(Notify::new());
            let connector = tokio::spawn(connect_cluster(
                builder.build()?,
                connection.clone(),
                connected.clone(),
                script.clone(),
            ));
            Backend::Cluster {
                connection,
                connected,
                _connector: AbortOnDrop(connector.abort_handle()),
            }
        } else {
            let info = settings
                .url
                .as_str()
                .into_connection_info()?
                .set_tcp_settings(tcp_settings());
            let client = match certificates {
                None => redis::Client::open(info)?,
                Some(certificates) => redis::Client::build_with_tls(info, certificates)?,
            };
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(settings.timeout))
                .set_response_timeout(Some(settings.timeout))
                // Fail fast and let the next check try again: a check never waits for backoff.
                .set_number_of_retries(0);
            Backend::Standalone {
                connections: Box::new(Connections::new(client, config, settings.connections)?),
                breaker: Breaker::new(BREAKER),
            }
        };
        Ok(Self {
            backend,
            script,
            timeout: settings.timeout,
            key_prefix: settings.key_prefix.clone(),
        })
    }

    /// Gets ready for the first check, so that a healthy Redis is used from the start: loads the
    /// script on a standalone server, or waits a moment for the background connection to a
    /// cluster (which loads the script on every primary). Failure is not fatal: checks fail open
    /// until Redis answers, and the first check then loads the script.
    pub async fn preload(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Standalone { connections, .. } => {
                let mut lease = connections.lease();
                tokio::time::timeout(self.timeout, self.script.load_async(&mut lease.manager))
                    .await
                    .map_err(|_| StoreError::Timeout(self.timeout))??;
            }
            Backend::Cluster {
                connection,
                connected,
                ..
            } => {
                let wait = async {
                    loop {
                        // Registered before the look, so a connection made in between wakes it.
                        let notified = connected.notified();
                        if connection.get().is_some() {
                            return;
                        }
                        notified.await;
                    }
                };
                tokio::time::timeout(CLUSTER_CONNECT_TIMEOUT, wait)
                    .await
                    .map_err(|_| StoreError::NotConnected)?;
            }
        }
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

    /// One script call on a standalone server, through the breaker, on the next connection.
    async fn call_standalone(
        &self,
        connections: &Connections,
        breaker: &Breaker,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<Reply, StoreError> {
        let Some(call) = breaker.admit(Instant::now()) else {
            return Err(StoreError::CircuitOpen);
        };
        let mut lease = connections.lease();
        let result = self
            .within_timeout(invocation.invoke_async(&mut lease.manager))
            .await;
        match (&result, call) {
            (Ok(_), _) => connections.succeeded(&lease),
            // The next probe must not find the same dead connection.
            (Err(_), Call::Probe) => connections.replace(&lease),
            (Err(_), Call::Normal) => connections.failed(&lease),
        }
        match breaker.record(call, result.is_ok(), Instant::now()) {
            Some(Transition::Opened) => {
                // Any of them may be dead: each reconnects from scratch on its next use.
                connections.replace_all();
                if let Err(e) = &result {
                    tracing::warn!(
                        error = %e,
                        failures = BREAKER.failures_to_open,
                        probe_interval = ?BREAKER.probe_interval,
                        "redis keeps failing: circuit breaker open, checks fail at once while one check per interval probes redis"
                    );
                }
            }
            Some(Transition::Closed) => {
                tracing::info!("redis answered the probe: circuit breaker closed");
            }
            None => {}
        }
        result
    }

    async fn within_timeout(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<Reply>>,
    ) -> Result<Reply, StoreError> {
        Ok(tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))??)
    }
}

/// The script's answer: allowed (0/1), remaining, reset and now in Unix µs.
type Reply = (u8, u32, u64, u64);

/// How the store reaches Redis.
enum Backend {
    /// A single Redis (or a primary behind a proxy): a few multiplexed connections that pipeline
    /// concurrent requests, behind one breaker (they all reach the same server).
    Standalone {
        /// Boxed: the client and its configuration are large and there is one per process.
        connections: Box<Connections>,
        breaker: Breaker,
    },
    /// Redis Cluster: one cluster connection that routes each script call to the node owning the
    /// key's slot, follows redirects and reconnects to nodes by itself. No breaker: one for all
    /// keys would open when a single node fails, and redis-rs keeps its slot map to itself, so a
    /// breaker per node cannot be built on it. A dead node's keys fail fast instead: a killed
    /// node refuses connections at once, and the cluster client refreshes its slot map and finds
    /// the promoted replica by itself; a node that vanished costs its keys the timeout.
    Cluster {
        /// Set once by the background connector; empty until the cluster first answers.
        connection: Arc<OnceLock<ClusterConnection>>,
        /// Woken when `connection` is set.
        connected: Arc<Notify>,
        _connector: AbortOnDrop,
    },
}

/// Stops the background connector when the store goes away (tests start many in one process).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Connects to the cluster outside any check, retrying with backoff until it answers, then
/// loads the script on every primary. A first connection discovers the whole topology, which
/// under load can take longer than a check's timeout: made inside a check, it would be cancelled
/// again and again. Until it is made, checks fail open at once.
async fn connect_cluster(
    client: ClusterClient,
    connection: Arc<OnceLock<ClusterConnection>>,
    connected: Arc<Notify>,
    script: redis::Script,
) {
    let mut delay = CLUSTER_RETRY_MIN;
    let mut warned = false;
    loop {
        let attempt = tokio::time::timeout(CLUSTER_CONNECT_TIMEOUT, client.get_async_connection());
        match attempt.await {
            Ok(Ok(mut ready)) => {
                let load =
                    tokio::time::timeout(CLUSTER_CONNECT_TIMEOUT, script.load_async(&mut ready));
                if !matches!(load.await, Ok(Ok(_))) {
                    tracing::warn!(
                        "cannot load the quota script into the redis cluster yet; the first checks load it"
                    );
                }
                tracing::info!("connected to the redis cluster");
                let _ = connection.set(ready);
                connected.notify_waiters();
                return;
            }
            Ok(Err(e)) if !warned => {
                warned = true;
                tracing::warn!(error = %e, "cannot connect to the redis cluster yet; checks fail open until it answers, retrying in the background");
            }
            Err(_) if !warned => {
                warned = true;
                tracing::warn!(timeout = ?CLUSTER_CONNECT_TIMEOUT, "the redis cluster did not answer in time; checks fail open until it answers, retrying in the background");
            }
            Ok(Err(_)) | Err(_) => {}
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(CLUSTER_RETRY_MAX);
    }
}

impl QuotaStore for RedisStore {
    async fn check(&self, bucket: BucketRef<'_>, limit: Limit) -> Result<Outcome, StoreError> {
        let mut invocation = self.script.key(self.key_name(bucket));
        invocation
            .arg(limit.requests.get())
            .arg(limit.window_micros());
        let (allowed, remaining, reset_micros, now_micros) = match &self.backend {
            Backend::Standalone {
                connections,
                breaker,
            } => {
                self.call_standalone(connections, breaker, &invocation)
                    .await?
            }
            Backend::Cluster { connection, .. } => {
                let mut connection = connection.get().ok_or(StoreError::NotConnected)?.clone();
                self.within_timeout(invocation.invoke_async(&mut connection))
                    .await?
            }
        };
        Ok(Outcome {
            allowed: allowed == 1,
            remaining,
            reset_micros,
            now_micros,
        })
    }
}
