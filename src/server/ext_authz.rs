//! The ext_authz listener: `Authorization/Check` and gRPC health, on hyper's HTTP/2 directly.
//!
//! tonic's `Server` puts a router and its layers around every call: the `grpc-timeout` header, the
//! peer's address in the request, error recovery, and a boxed body in and out at each of them.
//! That was an eighth of a check's instructions at the floor (BENCHMARKS.md), for nothing this
//! listener uses: Envoy keeps its own timeout, the connections budget reads the peer's address at
//! the accept, and the Check service answers every call itself. The admin API stays on tonic.

use super::accept::BoundedConnection;
use super::{KEEPALIVE, MAX_RESETS_PER_CONNECTION, MAX_STREAMS_PER_CONNECTION};
use crate::check::service::{AuthorizationService, SERVICE_NAME, UnaryBody};
use crate::store::QuotaStore;
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::time::Duration;
use tonic::codegen::Service as _;
use tonic::codegen::tokio_stream::{Stream, StreamExt};
use tonic::server::NamedService;
use tonic_health::pb::health_server::{Health, HealthServer};

/// How long the listener waits after a failed accept.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// The services of the listener, chosen by the gRPC service in a call's path.
pub(super) struct Routes<S, H> {
    check: AuthorizationService<S>,
    health: HealthServer<H>,
}

impl<S, H> Clone for Routes<S, H> {
    fn clone(&self) -> Self {
        Self {
            check: self.check.clone(),
            health: self.health.clone(),
        }
    }
}

impl<S, H> Routes<S, H> {
    pub(super) fn new(check: AuthorizationService<S>, health: HealthServer<H>) -> Self {
        Self { check, health }
    }
}

/// A call's answer: the Check service's own body, or the health service's.
type Answer = Response<Either<UnaryBody, tonic::body::Body>>;

impl<S: QuotaStore, H: Health> hyper::service::Service<Request<Incoming>> for Routes<S, H> {
    type Response = Answer;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let path = request.uri().path();
        let service = service_of(path);
        if service == Some(SERVICE_NAME) {
            let answer = self.check.call(request);
            Box::pin(async move { Ok(answer.await.map(Either::Left)) })
        } else if service == Some(<HealthServer<H> as NamedService>::NAME) {
            // tonic's generated server is always ready.
            let answer = self.health.clone().call(request);
            Box::pin(async move {
                let answer = answer.await.unwrap_or_else(|never| match never {});
                Ok(answer.map(Either::Right))
            })
        } else {
            let status = tonic::Status::unimplemented("tollgate serves ext_authz and health only");
            Box::pin(std::future::ready(Ok(status
                .into_http::<UnaryBody>()
                .map(Either::Left))))
        }
    }
}

/// The service of a gRPC path, `/package.Service/Method`.
fn service_of(path: &str) -> Option<&str> {
    let (service, _method) = path.strip_prefix('/')?.split_once('/')?;
    Some(service)
}

/// Serves `routes` on every connection of `incoming` until `stop` resolves; then stops accepting
/// (closing the listener), sends every connection a GOAWAY, and resolves once all have closed:
/// the calls in flight are answered, and a connection whose streams never end (a health Watch)
/// is left to the shutdown grace.
pub(super) async fn serve<S: QuotaStore, H: Health>(
    incoming: impl Stream<Item = io::Result<BoundedConnection>>,
    routes: Routes<S, H>,
    stop: impl Future<Output = ()>,
) {
    let builder = connection_settings();
    let graceful = GracefulShutdown::new();
    {
        let mut incoming = pin!(incoming);
        let mut stop = pin!(stop);
        loop {
            let connection = tokio::select! {
                () = &mut stop => break,
                accepted = incoming.next() => match accepted {
                    Some(Ok(connection)) => connection,
                    Some(Err(e)) => {
                        // Out of file descriptors, say: a moment for connections to close, rather
                        // than a loop that fails again at once.
                        tracing::debug!(error = %e, "cannot accept an ext_authz connection");
                        tokio::time::sleep(ACCEPT_RETRY).await;
                        continue;
                    }
                    None => break,
                },
            };
            let served = builder.serve_connection(TokioIo::new(connection), routes.clone());
            let served = graceful.watch(served);
            tokio::spawn(async move {
                if let Err(e) = served.await {
                    tracing::debug!(error = %e, "an ext_authz connection ended with an error");
                }
            });
        }
    }
    graceful.shutdown().await;
}

/// HTTP/2 as the listener speaks it.
fn connection_settings() -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        // hyper's default is no limit at all: each stream holds state, so a client opening
        // thousands would cost memory. Envoy does not follow the limit a server announces (it
        // queues streams past it), so the shipped Envoy cluster states the same number and opens
        // another connection instead.
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .max_local_error_reset_streams(Some(MAX_RESETS_PER_CONNECTION))
        // A peer that vanished without a FIN is found and its connection closed.
        .keep_alive_interval(Some(KEEPALIVE))
        .keep_alive_timeout(KEEPALIVE)
        // No `date` on every answer: a gRPC client has no use for it, and a value that changes
        // every second is a literal to encode (and for Envoy to decode) again and again.
        .auto_date_header(false);
    builder
}

#[cfg(test)]
mod tests {
    use super::service_of;

    #[test]
    fn a_call_is_routed_by_the_service_in_its_path() {
        assert_eq!(
            service_of("/envoy.service.auth.v3.Authorization/Check"),
            Some("envoy.service.auth.v3.Authorization")
        );
        assert_eq!(
            service_of("/grpc.health.v1.Health/Watch"),
            Some("grpc.health.v1.Health")
        );
        assert_eq!(service_of("/grpc.health.v1.Health"), None);
        assert_eq!(service_of("grpc.health.v1.Health/Check"), None);
        assert_eq!(service_of(""), None);
    }
}
