//! The Redis store: one `EVALSHA` of the sliding-window script per check.

use super::{BucketRef, Outcome, QuotaStore, StoreError};
use crate::limit::Limit;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::OnceCell;

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
    /// The CA that signs the server's certificate (`rediss://` only); without it the system's
    /// trust store is used.
    pub tls_ca: Option<TlsCa>,
    /// `url` is one node of a Redis Cluster; the others are discovered from it.
    pub cluster: bool,
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
    /// Redis is down.
    pub fn new(settings: &RedisSettings) -> Result<Self, StoreError> {
        let certificates = settings.tls_ca.as_ref().map(|ca| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.pem.clone()),
        });
        let backend = if settings.cluster {
            let mut builder = ClusterClient::builder(vec![settings.url.as_str()])
                .connection_timeout(settings.timeout)
                .response_timeout(settings.timeout)
                // A redirect after a resharding is retried; a dead node is not waited for.
                .retries(2);
            if let Some(certificates) = certificates {
                builder = builder.certs(certificates);
            }
            Backend::Cluster {
                client: Box::new(builder.build()?),
                connection: OnceCell::new(),
            }
        } else {
            let client = match certificates {
                None => redis::Client::open(settings.url.as_str())?,
                Some(certificates) => {
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
            Backend::Standalone {
                connections,
                next: AtomicUsize::new(0),
            }
        };
        Ok(Self {
            backend,
            script: redis::Script::new(SCRIPT),
            timeout: settings.timeout,
            key_prefix: settings.key_prefix.clone(),
        })
    }

    /// Loads the script on the server ahead of the first check. Failure is not fatal: the first
    /// check loads it when Redis is reachable again.
    pub async fn preload(&self) -> Result<(), StoreError> {
        let load = async {
            match &self.backend {
                Backend::Standalone { connections, .. } => {
                    self.script.load_async(&mut connections[0].clone()).await
                }
                // SCRIPT LOAD goes to every primary of the cluster.
                Backend::Cluster { client, connection } => {
                    let mut connection = connection
                        .get_or_try_init(|| client.get_async_connection())
                        .await?
                        .clone();
                    self.script.load_async(&mut connection).await
                }
            }
        };
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

/// How the store reaches Redis.
enum Backend {
    /// A single Redis (or a primary behind a proxy): a few [`ConnectionManager`]s, each one
    /// multiplexed connection that pipelines concurrent requests and reconnects by itself.
    Standalone {
        connections: Vec<ConnectionManager>,
        next: AtomicUsize,
    },
    /// Redis Cluster: one cluster connection that routes each script call to the node owning the
    /// key's slot, follows redirects and reconnects to nodes by itself.
    Cluster {
        /// Boxed: the client is large and there is one per process.
        client: Box<ClusterClient>,
        connection: OnceCell<ClusterConnection>,
    },
}

impl QuotaStore for RedisStore {
    async fn check(&self, bucket: BucketRef<'_>, limit: Limit) -> Result<Outcome, StoreError> {
        let mut invocation = self.script.key(self.key_name(bucket));
        invocation
            .arg(limit.requests.get())
            .arg(limit.window_micros());
        let call = async {
            match &self.backend {
                Backend::Standalone { connections, next } => {
                    let index = next.fetch_add(1, Ordering::Relaxed) % connections.len();
                    invocation
                        .invoke_async(&mut connections[index].clone())
                        .await
                }
                Backend::Cluster { client, connection } => {
                    // Connects on first use (and again after a failed attempt), so tollgate
                    // starts while the cluster is unreachable.
                    let mut connection = connection
                        .get_or_try_init(|| client.get_async_connection())
                        .await?
                        .clone();
                    invocation.invoke_async(&mut connection).await
                }
            }
        };
        let reply: (u8, u32, u64, u64) = tokio::time::timeout(self.timeout, call)
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
