//! Wiring: the store chosen by the configuration, the ext_authz and health services on one
//! listener, the admin API and the metrics on listeners of their own, and the bounded shutdown:
//! drain, grace, then close.

mod accept;
mod admin;
mod ext_authz;
mod reload;
pub mod shutdown;

use crate::check::admission::Admission;
use crate::check::authz::{PLAN_REFRESH, RateLimiter};
use crate::check::service::{AuthorizationService, SERVICE_NAME};
use crate::config::reload::Reload;
use crate::config::{AdminSettings, Config, Source, StoreSettings, Topology};
use crate::store::{MemoryStore, QuotaStore, Readiness, RedisStore, StoreError};
use crate::telemetry::http::{self, METRICS_PATH};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::traces::Traces;
use accept::BoundedConnection;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tonic::codegen::tokio_stream::StreamExt;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Concurrent streams a client may open on one ext_authz connection. The process-wide budgets of
/// [`Admission`] bound what all connections hold together.
const MAX_STREAMS_PER_CONNECTION: u32 = 128;

/// Streams tollgate may reset on one connection for the client's errors (a stream past the
/// stream limit, DATA on a stream already closed) before it closes the connection with GOAWAY
/// `ENHANCE_YOUR_CALM`. Each reset holds a stream's state until the frame is written, and a
/// client that does not read makes that forever; Envoy causes none.
const MAX_RESETS_PER_CONNECTION: usize = 256;

/// How long the start waits for Redis before serving (health NOT_SERVING until it answers).
const STARTUP_WAIT: Duration = Duration::from_secs(2);

/// HTTP/2 PING and TCP keepalive interval on ext_authz connections.
const KEEPALIVE: Duration = Duration::from_secs(20);

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The Redis client could not be set up.
    #[error("cannot set up the Redis store: {0}")]
    Store(#[from] StoreError),
    /// A listener's address could not be bound.
    #[error("cannot bind the {listener} listener on {addr}: {source}")]
    Bind {
        /// Which one: `ext_authz`, `admin` or `metrics`.
        listener: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The admin API's server failed.
    #[error("admin gRPC server failed: {0}")]
    Admin(#[source] tonic::transport::Error),
    /// The OTLP trace exporter could not be set up.
    #[error("cannot set up the trace exporter: {0}")]
    Traces(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The sockets tollgate serves on, bound before anything else so that a taken port stops the
/// start at once.
pub struct Listeners {
    /// ext_authz and health (`listen`).
    pub ext_authz: TcpListener,
    /// The admin API (`admin.listen`).
    pub admin: TcpListener,
    /// Prometheus metrics (`metrics.listen`), unless they are off.
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds `listen`, `admin.listen` and `metrics.listen`; the error names the address that
    /// could not be bound.
    pub async fn bind(config: &Config) -> Result<Self, ServerError> {
        let bind = |listener: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind {
                    listener,
                    addr,
                    source,
                })
        };
        Ok(Self {
            ext_authz: bind("ext_authz", config.listen).await?,
            admin: bind("admin", config.admin.listen).await?,
            metrics: match config.metrics_listen {
                None => None,
                Some(addr) => Some(bind("metrics", addr).await?),
            },
        })
    }
}

/// Serves ext_authz and health, the admin API and the metrics on their own listeners, until
/// `shutdown` resolves; then reports NOT_SERVING, keeps answering for the drain period, stops accepting on
/// both, gives the calls still in flight up to the shutdown grace to finish, and then closes every
/// connection that remains. The metrics are served until the end, drain included.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let (settings, topology) = match &config.store {
        StoreSettings::Memory { max_entries } => {
            tracing::warn!(
                "using the in-memory store: quotas are per process, so run a single instance only (configure redis.url for several)"
            );
            let store = MemoryStore::new(*max_entries);
            return serve(&config, store, listeners, shutdown).await;
        }
        StoreSettings::Redis(settings) => (settings, Topology::Standalone),
        StoreSettings::Cluster(settings) => (settings, Topology::Cluster),
    };
    let store = RedisStore::new(settings, topology)?;
    // A Redis that answers at once is used from the first check; one that does not holds the
    // start up no longer (the store logs why, and keeps trying in the background).
    let _ = tokio::time::timeout(STARTUP_WAIT, store.readiness().wait()).await;
    serve(&config, store, listeners, shutdown).await
}

async fn serve<S: QuotaStore>(
    config: &Config,
    store: S,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let metrics = Arc::new(Metrics::new());
    let readiness = store.readiness();
    let traces = match &config.tracing {
        Some(settings) => Some(Traces::start(settings, metrics.clone())?),
        None => None,
    };
    let limiter = Arc::new(RateLimiter::new(config, store, metrics.clone()).with_traces(traces));
    let admission = Arc::new(Admission::new(config.max_request_bytes, metrics.clone()));
    read_plans_before_the_first_check(&limiter).await;
    let (health, health_service) = tonic_health::server::health_reporter();
    let serving = report_serving_once_ready(health.clone(), readiness).await;
    let (drain_over, drain_ended) = oneshot::channel();
    // The admin listener stops accepting when the ext_authz one does.
    let (admin_stop, admin_stopping) = watch::channel(false);
    let drained = drain(shutdown, health, serving, config.drain_period, move || {
        let _ = admin_stop.send(true);
        let _ = drain_over.send(());
    });
    let (close, closing) = watch::channel(false);
    let tasks = Tasks {
        plans: tokio::spawn(refresh_plans(limiter.clone())),
        metrics: listeners
            .metrics
            .map(|listener| spawn_metrics(listener, metrics, limiter.clone())),
        reload: config
            .source
            .clone()
            .map(|source| spawn_reload(source, config.clone(), limiter.clone())),
        admin: spawn_admin(
            listeners.admin,
            limiter.clone(),
            config.admin.clone(),
            admin_stopping,
            closing.clone(),
        ),
    };
    let check = AuthorizationService::new(limiter, config.max_request_bytes, admission.clone());
    let served = ext_authz::serve(
        admitted(listeners.ext_authz, admission, closing),
        ext_authz::Routes::new(check, health_service),
        drained,
    );
    within_grace(served, drain_ended, config.shutdown_grace, &close).await;
    tasks.stop(&close).await?;
    tracing::info!("stopped");
    Ok(())
}

/// The tasks that run beside the ext_authz server.
struct Tasks {
    plans: tokio::task::JoinHandle<()>,
    metrics: Option<tokio::task::JoinHandle<()>>,
    reload: Option<tokio::task::JoinHandle<()>>,
    admin: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Tasks {
    /// Stops them once the ext_authz server has: the admin calls had as long to finish as the
    /// checks, and a connection a client keeps open is closed (`close`). Returns how the admin
    /// server ended.
    async fn stop(self, close: &watch::Sender<bool>) -> Result<(), ServerError> {
        if let Some(reload) = self.reload {
            reload.abort();
        }
        self.plans.abort();
        let _ = close.send(true);
        let admin = self.admin.await;
        if let Some(task) = self.metrics {
            task.abort();
            // Once the aborted task is joined its listener and connections are closed: the port
            // is free when `run` returns.
            let _ = task.await;
        }
        match admin {
            Ok(result) => result.map_err(ServerError::Admin),
            Err(e) => {
                tracing::error!(error = %e, "the admin server task failed");
                Ok(())
            }
        }
    }
}

/// Plan assignments before the first check, so that no key starts on the wrong limits; a store
/// that cannot answer yet does not hold the start up for long.
async fn read_plans_before_the_first_check<S: QuotaStore>(limiter: &RateLimiter<S>) {
    if limiter.policy().uses_assignments()
        && let Ok(Err(e)) | Err(e) = tokio::time::timeout(PLAN_REFRESH, limiter.refresh_plans())
            .await
            .map_err(|_| StoreError::Timeout(PLAN_REFRESH))
    {
        tracing::warn!(error = %e, "cannot read plan assignments yet; keys use the top-level limits until they are read");
    }
}

/// Serves the metrics on `listener`; aborting the task closes the listener and every metrics
/// connection with it.
fn spawn_metrics<S: QuotaStore>(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    limiter: Arc<RateLimiter<S>>,
) -> tokio::task::JoinHandle<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, path = METRICS_PATH, "serving Prometheus metrics");
    }
    tokio::spawn(http::serve(
        listener,
        metrics,
        Arc::new(move || limiter.sample()),
    ))
}

/// Resolves at the end of the drain: after `shutdown`, health reports NOT_SERVING for
/// `drain_period` while checks are still answered; then `drain_over` runs.
async fn drain(
    shutdown: impl Future<Output = ()>,
    health: HealthReporter,
    serving: Option<tokio::task::JoinHandle<()>>,
    drain_period: Duration,
    drain_over: impl FnOnce(),
) {
    shutdown.await;
    tracing::info!(
        ?drain_period,
        "shutting down: health reports NOT_SERVING, still answering checks while draining"
    );
    // A store that becomes ready now must not turn health back to SERVING: the task is stopped,
    // and waited for, before NOT_SERVING is set.
    if let Some(serving) = serving {
        serving.abort();
        let _ = serving.await;
    }
    set_health(&health, ServingStatus::NotServing).await;
    tokio::time::sleep(drain_period).await;
    tracing::info!("drain period over; finishing in-flight calls and stopping");
    drain_over();
}

/// Resolves when the ext_authz server has stopped, or, once the grace after the drain is over,
/// after every connection still open was closed. The graceful shutdown waits for every connection
/// to close, and a connection carrying a health Watch stream (or any stream the client never ends)
/// never does: the grace bounds it.
async fn within_grace(
    served: impl Future<Output = ()>,
    drain_ended: oneshot::Receiver<()>,
    shutdown_grace: Duration,
    close: &watch::Sender<bool>,
) {
    let grace_over = async move {
        if drain_ended.await.is_err() {
            // The server stopped before the drain ended (its listener ended): nothing to bound.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(shutdown_grace).await;
    };
    tokio::pin!(served);
    tokio::select! {
        served = &mut served => served,
        () = grace_over => {
            tracing::info!(
                ?shutdown_grace,
                "shutdown grace over; closing the connections still open"
            );
            let _ = close.send(true);
            // Each connection fails its next I/O at once, so this returns promptly.
            served.await
        }
    }
}

/// With a configuration file, changes to it apply without a restart.
fn spawn_reload<S: QuotaStore>(
    source: Source,
    running: Config,
    limiter: Arc<RateLimiter<S>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(reload::watch(source, running, move |reload| {
        if let Reload::Applied(new) = &reload {
            limiter.apply(new);
        }
        limiter
            .metrics()
            .config_reloaded(matches!(reload, Reload::Applied(_)));
    }))
}

/// Serves the admin API until the end of the drain, or until the ext_authz server stopped without
/// one (its listener ended); `closing` closes the connections still open.
fn spawn_admin<S: QuotaStore>(
    listener: TcpListener,
    limiter: Arc<RateLimiter<S>>,
    settings: AdminSettings,
    mut stopping: watch::Receiver<bool>,
    closing: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Result<(), tonic::transport::Error>> {
    let mut closed = closing.clone();
    // An error means the sender is gone, which also ends it.
    let stopped = async move {
        tokio::select! {
            _ = stopping.wait_for(|stop| *stop) => {}
            _ = closed.wait_for(|closed| *closed) => {}
        }
    };
    tokio::spawn(async move { admin::serve(listener, limiter, &settings, stopped, closing).await })
}

/// The ext_authz listener's connections, each within the connections budget of `admission`.
/// Past it a connection is closed as soon as it is accepted: the client sees it end before any
/// HTTP/2 byte (Envoy tries another replica or applies its failure mode), and it costs nothing to
/// hold.
fn admitted(
    listener: TcpListener,
    admission: Arc<Admission>,
    closing: watch::Receiver<bool>,
) -> impl tonic::codegen::tokio_stream::Stream<Item = io::Result<BoundedConnection>> {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(KEEPALIVE))
        .filter_map(move |accepted| match accepted {
            Ok(stream) => {
                let peer = stream
                    .peer_addr()
                    .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
                admission
                    .connection(peer)
                    .map(|permit| Ok(BoundedConnection::new(stream, closing.clone(), permit)))
            }
            Err(e) => Some(Err(e)),
        })
}

/// Reports both health services NOT_SERVING until the store has answered once, then SERVING for
/// good: a replica that cannot reach its Redis (a wrong address, an unsupported version) never
/// takes traffic it would only fail open. Once SERVING it stays so when Redis is lost later: every
/// replica shares the one Redis, so turning them all NOT_SERVING would only make a store outage an
/// ext_authz outage, which Envoy answers with `failure_mode_allow` anyway, later than the breaker
/// fails open. Returns the task that waits, if the store is not ready yet; aborting it keeps
/// NOT_SERVING.
async fn report_serving_once_ready(
    health: HealthReporter,
    readiness: Readiness,
) -> Option<tokio::task::JoinHandle<()>> {
    if readiness.is_ready() {
        set_health(&health, ServingStatus::Serving).await;
        return None;
    }
    // Before the listener serves: tonic-health reports `""` SERVING until told otherwise.
    set_health(&health, ServingStatus::NotServing).await;
    tracing::info!("health reports NOT_SERVING until the store answers");
    Some(tokio::spawn(async move {
        if readiness.wait().await {
            set_health(&health, ServingStatus::Serving).await;
        }
    }))
}

/// Sets both health services, the server's (`""`) and the Authorization service's.
async fn set_health(health: &HealthReporter, status: ServingStatus) {
    for service in [SERVICE_NAME, ""] {
        health.set_service_status(service, status).await;
    }
}

/// Keeps the plan assignments of `limiter` current while its policy uses them: reads them from the
/// store every [`PLAN_REFRESH`], which costs one small call when nothing changed. While the store cannot
/// answer, the last assignments read stay in force; the failure is logged when it starts and
/// when it ends, not on every attempt.
async fn refresh_plans<S: QuotaStore>(limiter: Arc<RateLimiter<S>>) {
    let mut interval = tokio::time::interval(PLAN_REFRESH);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        interval.tick().await;
        // Nothing reads them (no plans, or a plan header): no call to the store either. A reload
        // that changes that is followed within one interval.
        if !limiter.policy().uses_assignments() {
            continue;
        }
        match limiter.refresh_plans().await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("plan assignments are read from the store again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot read plan assignments; the last ones read stay in force");
            }
            Err(_) => {}
        }
    }
}
