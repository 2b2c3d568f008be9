//! Wiring: the store chosen by the configuration, the ext_authz and health services on one
//! listener, the admin API and the metrics on listeners of their own, and the bounded shutdown:
//! drain, grace, then close.

use crate::admin;
use crate::check::admission::{Admission, ConnectionPermit};
use crate::check::authz::{PLAN_REFRESH, RateLimiter};
use crate::check::service::{AuthorizationService, SERVICE_NAME};
use crate::config::reload::{self, Reload};
use crate::config::{Config, StoreSettings};
use crate::store::{MemoryStore, QuotaStore, Readiness, RedisStore, StoreError, Topology};
use crate::telemetry::http::{self, METRICS_PATH};
use crate::telemetry::metrics::Metrics;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tonic::codegen::tokio_stream::StreamExt;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};
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
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
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
    let limiter = Arc::new(RateLimiter::new(config, store, metrics.clone()));
    let admission = Arc::new(Admission::new(metrics.clone()));
    // Plan assignments before the first check, so that no key starts on the wrong limits; a store
    // that cannot answer yet does not hold the start up for long.
    if limiter.policy().uses_assignments()
        && let Ok(Err(e)) | Err(e) = tokio::time::timeout(PLAN_REFRESH, limiter.refresh_plans())
            .await
            .map_err(|_| StoreError::Timeout(PLAN_REFRESH))
    {
        tracing::warn!(error = %e, "cannot read plan assignments yet; keys use the top-level limits until they are read");
    }
    let plans = tokio::spawn(refresh_plans(limiter.clone()));
    // Aborting the task closes the listener and every metrics connection with it.
    let metrics_task = listeners.metrics.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, path = METRICS_PATH, "serving Prometheus metrics");
        }
        let limiter = limiter.clone();
        tokio::spawn(http::serve(
            listener,
            metrics,
            Arc::new(move || limiter.sample()),
        ))
    });

    let (health, health_service) = tonic_health::server::health_reporter();
    let serving = report_serving_once_ready(health.clone(), readiness).await;

    let drain_period = config.drain_period;
    let (drain_over, drain_ended) = oneshot::channel();
    // The admin listener stops accepting when the ext_authz one does.
    let (admin_stop, mut admin_stopping) = watch::channel(false);
    let drained = async move {
        shutdown.await;
        tracing::info!(
            ?drain_period,
            "shutting down: health reports NOT_SERVING, still answering checks while draining"
        );
        // A store that becomes ready now must not turn health back to SERVING: the task is
        // stopped, and waited for, before NOT_SERVING is set.
        if let Some(serving) = serving {
            serving.abort();
            let _ = serving.await;
        }
        health
            .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
            .await;
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        tokio::time::sleep(drain_period).await;
        tracing::info!("drain period over; finishing in-flight calls and stopping");
        let _ = admin_stop.send(true);
        let _ = drain_over.send(());
    };
    // tonic's graceful shutdown waits for every connection to close, and a connection carrying a
    // health Watch stream (or any stream the client never ends) never does: the grace bounds it.
    let shutdown_grace = config.shutdown_grace;
    let grace_over = async move {
        if drain_ended.await.is_err() {
            // The server stopped before the drain ended (it failed): nothing to bound.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(shutdown_grace).await;
    };
    let (close, closing) = watch::channel(false);

    // With a configuration file, changes to it apply without a restart.
    let reload = config.source.clone().map(|source| {
        let limiter = limiter.clone();
        tokio::spawn(reload::watch(source, config.clone(), move |reload| {
            if let Reload::Applied(new) = &reload {
                limiter.apply(new);
            }
            limiter
                .metrics()
                .config_reloaded(matches!(reload, Reload::Applied(_)));
        }))
    });
    let admin_stopped = {
        let mut closing = closing.clone();
        // At the end of the drain, or when the ext_authz server stopped without one (it failed).
        // An error means the sender is gone, which also ends it.
        async move {
            tokio::select! {
                _ = admin_stopping.wait_for(|stop| *stop) => {}
                _ = closing.wait_for(|closed| *closed) => {}
            }
        }
    };
    let admin = tokio::spawn({
        let (limiter, settings, closing) = (limiter.clone(), config.admin.clone(), closing.clone());
        async move { admin::serve(listeners.admin, limiter, &settings, admin_stopped, closing).await }
    });
    let incoming = TcpIncoming::from(listeners.ext_authz)
        .with_nodelay(Some(true))
        .with_keepalive(Some(KEEPALIVE))
        .filter_map({
            let admission = admission.clone();
            move |accepted| match accepted {
                // Past the connections budget a connection is closed as soon as it is accepted:
                // the client sees it end before any HTTP/2 byte (Envoy tries another replica or
                // applies its failure mode), and it costs nothing to hold.
                Ok(stream) => admission
                    .connection()
                    .map(|permit| Ok(Accepted::new(stream, closing.clone(), permit))),
                Err(e) => Some(Err(e)),
            }
        });
    let served = tonic::transport::Server::builder()
        // tonic's default is no limit at all: each stream holds state, so a client opening
        // thousands would cost memory. Envoy does not follow the limit a server announces (it
        // queues streams past it), so the shipped Envoy cluster states the same number and opens
        // another connection instead.
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_max_local_error_reset_streams(Some(MAX_RESETS_PER_CONNECTION))
        // A peer that vanished without a FIN is found and its connection closed.
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE))
        .add_service(health_service)
        .add_service(AuthorizationService::new(
            limiter,
            config.max_request_bytes,
            admission,
        ))
        .serve_with_incoming_shutdown(incoming, drained);
    tokio::pin!(served);
    let served = tokio::select! {
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
    };
    if let Some(reload) = reload {
        reload.abort();
    }
    plans.abort();
    // Admin calls had as long to finish as checks; a connection a client keeps open is closed.
    let _ = close.send(true);
    let admin = admin.await;
    if let Some(task) = metrics_task {
        task.abort();
        // Once the aborted task is joined its listener and connections are closed: the port is
        // free when `run` returns.
        let _ = task.await;
    }
    served?;
    match admin {
        Ok(result) => result.map_err(ServerError::Admin)?,
        Err(e) => tracing::error!(error = %e, "the admin server task failed"),
    }
    tracing::info!("stopped");
    Ok(())
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

/// An accepted connection. It does not offer vectored writes, so that h2 copies every frame of
/// up to 1 KiB into its write buffer and sends the answers of many checks in one write. With
/// vectored writes h2 keeps each DATA payload over 256 bytes out of its buffer and must write it
/// before it buffers the next frame: every 429 (about 360 bytes) then cost a `writev` of its own
/// (1.09 per check measured, against 0.12 for the small OK answers; BENCHMARKS.md).
///
/// It also ends when the shutdown grace is over: its I/O then fails, so hyper drops the
/// connection with whatever streams are still open, and tonic's graceful shutdown completes.
/// And it holds its share of the connections budget while it is served.
pub(crate) struct Accepted {
    stream: TcpStream,
    /// Resolves when the shutdown grace is over; `None` once it has.
    closed: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    _permit: Option<ConnectionPermit>,
}

impl Accepted {
    pub(crate) fn new(
        stream: TcpStream,
        mut closing: watch::Receiver<bool>,
        permit: impl Into<Option<ConnectionPermit>>,
    ) -> Self {
        let closed = async move {
            // An error means the server is gone, which also ends the connection.
            let _ = closing.wait_for(|closed| *closed).await;
        };
        Self {
            stream,
            closed: Some(Box::pin(closed)),
            _permit: permit.into(),
        }
    }

    /// `io` as it is, unless it is pending and the shutdown grace is over: then an error. Only
    /// pending I/O looks at the grace, so a busy connection pays nothing for it; hyper reads until
    /// the socket would block, so every connection reaches this regularly.
    fn unless_closed<T>(
        &mut self,
        cx: &mut Context<'_>,
        io: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if io.is_ready() {
            return io;
        }
        if let Some(closed) = &mut self.closed {
            if closed.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.closed = None;
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "closed at the end of the shutdown grace",
        )))
    }
}

impl Connected for Accepted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Accepted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let io = Pin::new(&mut self.stream).poll_read(cx, buf);
        self.unless_closed(cx, io)
    }
}

/// `poll_write_vectored` and `is_write_vectored` keep their defaults: not vectored.
impl AsyncWrite for Accepted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let io = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.unless_closed(cx, io)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let io = Pin::new(&mut self.stream).poll_flush(cx);
        self.unless_closed(cx, io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
