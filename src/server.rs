//! Wiring: the store chosen by the configuration, the ext_authz and health services on one
//! listener, and the drain on shutdown.

use crate::authz::RateLimiter;
use crate::config::Config;
use crate::deny_cache::DenyCache;
use crate::service::{AuthorizationService, SERVICE_NAME};
use crate::store::{MemoryStore, QuotaStore, RedisStore, StoreError};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

/// How often the over-limit cache reports its hits.
const DENY_CACHE_REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The Redis client could not be set up.
    #[error("cannot set up the Redis store: {0}")]
    Store(#[from] StoreError),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves ext_authz and health on `listener` until `shutdown` resolves, then reports NOT_SERVING,
/// keeps answering for the drain period and stops once in-flight checks are answered.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    match &config.redis {
        None => {
            tracing::warn!(
                "using the in-memory store: quotas are per process, so run a single instance only (configure redis.url for several)"
            );
            serve(&config, MemoryStore::new(), listener, shutdown).await
        }
        Some(settings) => {
            let store = RedisStore::new(settings)?;
            if let Err(e) = store.preload().await {
                tracing::warn!(error = %e, "cannot load the quota script into Redis yet; checks fail open until it answers");
            }
            serve(&config, store, listener, shutdown).await
        }
    }
}

async fn serve<S: QuotaStore>(
    config: &Config,
    store: S,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(SERVICE_NAME, ServingStatus::Serving)
        .await;
    health.set_service_status("", ServingStatus::Serving).await;

    let drain_period = config.drain_period;
    let drained = async move {
        shutdown.await;
        tracing::info!(
            ?drain_period,
            "shutting down: health reports NOT_SERVING, still answering checks while draining"
        );
        health
            .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
            .await;
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        tokio::time::sleep(drain_period).await;
        tracing::info!("drain period over; finishing in-flight checks and stopping");
    };

    let limiter = RateLimiter::new(config, store);
    let report = tokio::spawn(report_deny_cache(limiter.deny_cache()));
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let served = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(AuthorizationService::new(limiter))
        .serve_with_incoming_shutdown(incoming, drained)
        .await;
    report.abort();
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// Logs, once a minute when it did anything, how many checks the over-limit cache answered.
async fn report_deny_cache(cache: Arc<DenyCache>) {
    let mut interval = tokio::time::interval(DENY_CACHE_REPORT_INTERVAL);
    interval.tick().await;
    loop {
        interval.tick().await;
        let hits = cache.take_hits();
        if hits > 0 {
            tracing::info!(
                answered_from_memory = hits,
                buckets = cache.len(),
                "over-limit cache: 429s answered without asking the store in the last minute"
            );
        }
    }
}
