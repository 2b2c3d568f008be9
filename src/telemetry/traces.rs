//! Traces of checks: one `tollgate.check` span per sampled check, with a `tollgate.store` child for
//! its store call, exported over OTLP/gRPC.
//!
//! A check's span is a child of the span in its W3C trace context. Envoy, when it traces, sends its
//! ext_authz client span's context with the gRPC call: the check follows that span's sampled flag
//! (Envoy decided). Otherwise the request's own `traceparent` (a header of the `CheckRequest`) is
//! the parent, but a client wrote it, so its sampled flag is not trusted: such a check is sampled
//! at `tracing.sampling_ratio` by its trace id, as a check without any context is (0 by default:
//! none); a client cannot switch tracing on for its own checks and flood the export queue.
//!
//! The spans are built after the decision, from the times the check recorded, so nothing is
//! carried across the check's awaits; whether a check is traced is decided first, in a few
//! comparisons ([`sampling`]), so a check that is not costs no span and no allocation.
//!
//! Export never holds a check back: a finished span goes into a bounded queue without waiting, and
//! is dropped (and counted, `tollgate_trace_spans_total{result="queue_full"}`) when the queue is
//! full, as it is while the collector is slow or down. One task sends the queue in batches.
//! The SDK's own batch processor would do the same, but keeps its count of dropped spans to
//! itself; operators need it as a metric.

use crate::config::TracingSettings;
use crate::policy::limit::Limit;
use crate::telemetry::metrics::{Metrics, SpanFate};
use crate::telemetry::throttle::Throttle;
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span, SpanKind, TraceContextExt, Tracer, TracerProvider};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter as _, SpanProcessor,
};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

mod sampling;

/// Spans that may wait for export; past this many, new ones are dropped.
const QUEUE: usize = 4096;

/// Spans sent in one export call.
const BATCH: usize = 512;

/// How long a span waits for others to fill its batch.
const BATCH_DELAY: Duration = Duration::from_secs(1);

/// How long one export may take before it counts as failed; the queue fills meanwhile.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The tracer of checks, and the queue its spans leave by.
pub struct Traces {
    /// Samples everything it is given: [`sampling`] decided before.
    tracer: SdkTracer,
    /// Kept so that the tracer's processor lives as long as the tracer.
    _provider: SdkTracerProvider,
    ratio: f64,
}

/// One store call of a check, as timed by the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreCall {
    /// When it was sent.
    pub started: Instant,
    /// How long its answer took.
    pub took: Duration,
}

/// Where a check's trace context came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context<'a> {
    /// The gRPC call's `traceparent`: Envoy's ext_authz client span.
    Call(&'a [u8]),
    /// The request's own `traceparent` header, as the client sent it.
    Request(&'a [u8]),
    /// Neither.
    None,
}

/// What one check's span says.
pub struct CheckSpan<'a> {
    /// The check's trace context.
    pub context: Context<'a>,
    /// When the check started, on the wall clock (spans are in Unix time) and on the monotonic
    /// one (which the store call's time is measured on).
    pub started: (SystemTime, Instant),
    /// How long the check took.
    pub took: Duration,
    /// Its store call, if it made one.
    pub store: Option<StoreCall>,
    /// The bucket (`GET /campaigns/:id`, `default`...).
    pub bucket: Option<&'a str>,
    /// The decision, as the metrics' `result` label says it.
    pub decision: &'static str,
    /// The plan whose table applied.
    pub plan: Option<&'a str>,
    /// The slots the request takes.
    pub cost: Option<u32>,
    /// The window the answer's rate-limit headers describe (`30 requests / 60s`).
    pub window: Option<Limit>,
}

impl Traces {
    /// A tracer exporting to `settings.otlp_endpoint`, counting its spans' fates in `metrics`.
    /// Must run inside the tokio runtime (the export task and the gRPC channel live there).
    pub fn start(
        settings: &TracingSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, opentelemetry_otlp::ExporterBuildError> {
        let exporter = SpanExporter::builder()
            .with_tonic()
            .with_endpoint(settings.otlp_endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()?;
        let (sender, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(export(receiver, exporter, metrics.clone()));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Queue { sender, metrics })
            .with_sampler(Sampler::AlwaysOn)
            .with_resource(Resource::builder().with_service_name("tollgate").build())
            .build();
        Ok(Self {
            tracer: provider.tracer("tollgate"),
            _provider: provider,
            ratio: settings.sampling_ratio,
        })
    }

    /// Records `check` as a span, if it is sampled.
    pub fn record(&self, check: &CheckSpan<'_>) {
        let Some(parent) = sampling::traced(check.context, self.ratio) else {
            return;
        };
        let tracer = &self.tracer;
        let (wall, monotonic) = check.started;
        let mut span = tracer
            .span_builder("tollgate.check")
            .with_kind(SpanKind::Server)
            .with_start_time(wall)
            .start_with_context(tracer, &parent);
        span.set_attribute(KeyValue::new("tollgate.decision", check.decision));
        let optional = [
            check
                .bucket
                .map(|b| KeyValue::new("tollgate.route", b.to_owned())),
            check
                .plan
                .map(|p| KeyValue::new("tollgate.plan", p.to_owned())),
            check
                .cost
                .map(|c| KeyValue::new("tollgate.cost", i64::from(c))),
            check
                .window
                .map(|w| KeyValue::new("tollgate.window", w.to_string())),
            check.store.map(|store| {
                KeyValue::new("tollgate.store.duration_us", store.took.as_micros() as i64)
            }),
        ];
        span.set_attributes(optional.into_iter().flatten());
        let context = parent.with_span(span);
        if let Some(store) = check.store {
            let sent = wall + store.started.saturating_duration_since(monotonic);
            tracer
                .span_builder("tollgate.store")
                .with_kind(SpanKind::Client)
                .with_start_time(sent)
                .start_with_context(tracer, &context)
                .end_with_timestamp(sent + store.took);
        }
        context.span().end_with_timestamp(wall + check.took);
    }
}

/// Finished spans into the export queue, never waiting for room.
struct Queue {
    sender: mpsc::Sender<SpanData>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("waiting", &(QUEUE - self.sender.capacity()))
            .finish()
    }
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        match self.sender.try_send(span) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.metrics.spans(SpanFate::QueueFull, 1),
            // The export task is gone (the runtime is shutting down).
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.metrics.spans(SpanFate::ExportFailed, 1)
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Sends the queue in batches of up to [`BATCH`] spans, each within [`EXPORT_TIMEOUT`]; a batch
/// leaves when it is full or [`BATCH_DELAY`] after its first span.
async fn export(
    mut queue: mpsc::Receiver<SpanData>,
    exporter: SpanExporter,
    metrics: Arc<Metrics>,
) {
    let failures = Throttle::new(Duration::from_secs(10));
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = queue.recv().await {
        batch.push(first);
        let deadline = tokio::time::Instant::now() + BATCH_DELAY;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, queue.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let count = batch.len() as u64;
        let sent = exporter.export(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)));
        let error = match tokio::time::timeout(EXPORT_TIMEOUT, sent).await {
            Ok(Ok(())) => {
                metrics.spans(SpanFate::Exported, count);
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {EXPORT_TIMEOUT:?}"),
        };
        metrics.spans(SpanFate::ExportFailed, count);
        if let Some(unlogged) = failures.event() {
            tracing::warn!(
                error,
                spans = count,
                failures_not_logged = unlogged,
                "trace export failed; its spans are dropped"
            );
        }
    }
}
