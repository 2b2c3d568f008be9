//! The metrics listener: HTTP/1.1, `GET /metrics` in the Prometheus text format, 404 elsewhere.
//!
//! hyper directly (it comes with tonic) rather than a web framework: one path, one method.

use super::metrics::{Metrics, Sample};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// The path Prometheus scrapes.
pub const METRICS_PATH: &str = "/metrics";

/// The text exposition format's media type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A client that opens a connection and sends nothing (or stops half-way through its headers)
/// is dropped after this long, so idle connections cannot pile up.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a scrape reads besides the registry.
pub type Sampler = Arc<dyn Fn() -> Sample + Send + Sync>;

/// Serves `/metrics` on `listener` until the returned future is dropped; dropping it also closes
/// every connection it accepted (they live in its `JoinSet`).
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, sample: Sampler) {
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: the gRPC listener matters more; try again shortly.
                tracing::warn!(error = %e, "metrics listener cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Finished connections are collected here, so the set does not grow.
        while connections.try_join_next().is_some() {}
        let metrics = metrics.clone();
        let sample = sample.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let response = respond(&request, &metrics, &sample);
                async move { Ok::<_, Infallible>(response) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}

fn respond(
    request: &Request<Incoming>,
    metrics: &Metrics,
    sample: &Sampler,
) -> Response<Full<Bytes>> {
    if request.uri().path() != METRICS_PATH {
        return plain(
            StatusCode::NOT_FOUND,
            "not found; metrics are at /metrics\n",
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n");
        response
            .headers_mut()
            .insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let mut response = Response::new(Full::new(Bytes::from(metrics.encode(sample()))));
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(TEXT_FORMAT),
    );
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}
