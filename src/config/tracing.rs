//! The `tracing` section: where checks' spans are exported, and how many roots are sampled.

use super::parse::value_or;
use super::raw::{Problems, RawTracing, Setting};

/// Traces of checks, exported over OTLP/gRPC.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    /// The collector's OTLP/gRPC endpoint, `http://host:4317`.
    pub otlp_endpoint: String,
    /// The share of checks without a `traceparent` that start a trace of their own, 0 to 1. A
    /// check whose request carries one follows its sampled flag instead (Envoy decided).
    pub sampling_ratio: f64,
}

/// Validates the section: `None` inside when absent (no traces, no exporter).
pub(super) fn parse_tracing(
    section: Setting<RawTracing>,
    problems: &mut Problems,
) -> Option<Option<TracingSettings>> {
    let Some(section) = section else {
        return Some(None);
    };
    let raw = section.take("tracing", problems)?;
    let endpoint = match raw.otlp_endpoint {
        None => {
            problems.add("tracing", "otlp_endpoint is missing");
            None
        }
        Some(text) => text.take("tracing.otlp_endpoint", problems).and_then(|url| {
            // Plain gRPC only: the exporter is built without TLS. A collector on the same node or in
            // the same pod (an agent, a sidecar) forwards over TLS where that is needed.
            if url.strip_prefix("http://").is_some_and(|host| !host.is_empty()) {
                Some(url)
            } else {
                problems.add(
                    "tracing.otlp_endpoint",
                    format!("{url:?} must be an http:// URL such as http://otel-collector:4317 (no TLS: send to a collector agent that forwards over TLS)"),
                );
                None
            }
        }),
    };
    let ratio =
        value_or(raw.sampling_ratio, "tracing.sampling_ratio", 0.0, problems).and_then(|ratio| {
            if (0.0..=1.0).contains(&ratio) {
                Some(ratio)
            } else {
                problems.add(
                    "tracing.sampling_ratio",
                    format!("must be from 0 to 1, not {ratio}"),
                );
                None
            }
        });
    Some(Some(TracingSettings {
        otlp_endpoint: endpoint?,
        sampling_ratio: ratio?,
    }))
}
