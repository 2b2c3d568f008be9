//! Which checks are traced, and under which parent, decided before the SDK is asked for anything:
//! a check that is not traced (nearly all of them at a small ratio) costs a few comparisons, no
//! span, no allocation. The W3C `traceparent` is read once, in place, for both.
//!
//! The decisions are those of OpenTelemetry's `ParentBased(TraceIdRatioBased)` sampler, with one
//! change: only the trace context Envoy sent with the gRPC call is trusted for its sampled flag.
//! A request's own `traceparent` was written by the client, so such a check is sampled by the
//! ratio on its trace id, like any other service sampling that trace by ratio would.

use super::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use std::cell::Cell;
use std::hash::BuildHasher;

/// A `traceparent` as W3C Trace Context defines it: version 00's layout (`vv-<32 hex trace
/// id>-<16 hex span id>-<2 hex flags>`, 55 bytes), which later versions keep as their prefix.
struct TraceParent {
    trace_id: u128,
    span_id: u64,
    sampled: bool,
}

impl TraceParent {
    /// The context in `value`, or `None` when it is not one (the specification's rule: then it
    /// is ignored). Only lower-case hex digits count; ids of zeros and version `ff` are invalid.
    fn read(value: &[u8]) -> Option<Self> {
        let dashes =
            value.len() >= 55 && value[2] == b'-' && value[35] == b'-' && value[52] == b'-';
        if !dashes || (value.len() > 55 && value[55] != b'-') {
            return None;
        }
        let version = hex(&value[..2])?;
        let parent = Self {
            trace_id: hex(&value[3..35])?,
            span_id: hex(&value[36..52])? as u64,
            sampled: hex(&value[53..55])? & 1 == 1,
        };
        let valid = version != 0xff && parent.trace_id != 0 && parent.span_id != 0;
        valid.then_some(parent)
    }

    /// The remote parent of a span.
    fn context(&self) -> opentelemetry::Context {
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_bytes(self.trace_id.to_be_bytes()),
            SpanId::from_bytes(self.span_id.to_be_bytes()),
            flags,
            true,
            TraceState::default(),
        ))
    }
}

/// Lower-case hex digits (at most 32) as a number; `None` for anything else.
fn hex(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |value, &digit| {
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        Some(value << 4 | u128::from(nibble))
    })
}

/// The parent of the span of a check with `context` when the check is traced at `ratio` (0 to
/// 1): a remote parent, or none for a root; `None` when the check is not traced.
pub(super) fn traced(context: Context<'_>, ratio: f64) -> Option<opentelemetry::Context> {
    let root = || by_ratio(random(), ratio).then(opentelemetry::Context::new);
    match context {
        Context::Call(value) => match TraceParent::read(value) {
            Some(parent) => parent.sampled.then(|| parent.context()),
            None => root(),
        },
        // The trace id's low 64 bits are what `TraceIdRatioBased` compares with the ratio.
        Context::Request(value) => match TraceParent::read(value) {
            Some(parent) => by_ratio(parent.trace_id as u64, ratio).then(|| parent.context()),
            None => root(),
        },
        Context::None => root(),
    }
}

/// `TraceIdRatioBased`'s rule: the id's low 63 bits below `ratio` of their range.
fn by_ratio(id_low: u64, ratio: f64) -> bool {
    (id_low >> 1) < (ratio.clamp(0.0, 1.0) * (1u64 << 63) as f64) as u64
}

/// A random number for a check without a usable trace context (a new trace's id is random too):
/// xorshift on a per-thread seed, no lock, no system call.
fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(std::hash::RandomState::new().hash_one(0u64) | 1);
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLED: &[u8] = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const NOT_SAMPLED: &[u8] = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";

    fn sampled(context: Context<'_>, ratio: f64) -> bool {
        traced(context, ratio).is_some()
    }

    #[test]
    fn envoys_flag_decides_a_clients_does_not() {
        assert!(sampled(Context::Call(SAMPLED), 0.0));
        assert!(!sampled(Context::Call(NOT_SAMPLED), 1.0));
        assert!(!sampled(Context::Request(SAMPLED), 0.0));
        assert!(sampled(Context::Request(NOT_SAMPLED), 1.0));
        assert!(!sampled(Context::None, 0.0));
        assert!(sampled(Context::None, 1.0));
    }

    #[test]
    fn the_parent_is_the_context_read() {
        let parent = traced(Context::Call(SAMPLED), 0.0).unwrap();
        let span = parent.span();
        let context = span.span_context();
        assert!(context.is_remote() && context.is_sampled());
        assert_eq!(
            context.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(context.span_id().to_string(), "b7ad6b7169203331");
        let root = traced(Context::None, 1.0).unwrap();
        assert!(!root.has_active_span());
    }

    #[test]
    fn the_ratio_is_the_trace_ids_as_opentelemetry_reads_it() {
        // Low 64 bits 0x8448eb211c80319c: (>> 1) / 2^63 = 0.5178...
        assert!(sampled(Context::Request(SAMPLED), 0.52));
        assert!(!sampled(Context::Request(SAMPLED), 0.51));
        let share = (0..100_000)
            .filter(|_| sampled(Context::None, 0.01))
            .count();
        assert!((800..1200).contains(&share), "{share} of 100 000 at 0.01");
    }

    #[test]
    fn a_malformed_context_counts_as_none() {
        for value in [
            &b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331"[..],
            b"00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            b"00-0af7651916cd43dd8448eb211c80319z-b7ad6b7169203331-01",
            b"00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            b"00-+af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            b"00-00000000000000000000000000000000-b7ad6b7169203331-01",
            b"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            b"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
            &[b'-'; 100_000],
        ] {
            let shown = String::from_utf8_lossy(&value[..value.len().min(60)]);
            assert!(!sampled(Context::Call(value), 0.0), "{shown}");
            let root = traced(Context::Request(value), 1.0).expect("a root at ratio 1");
            assert!(!root.has_active_span(), "{shown}");
        }
    }
}
