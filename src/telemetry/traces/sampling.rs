//! Which checks are traced, decided before the SDK is asked for anything: a check that is not
//! traced (nearly all of them at a small ratio) costs a few comparisons, no span, no allocation.
//!
//! The decisions are those of OpenTelemetry's `ParentBased(TraceIdRatioBased)` sampler, with one
//! change: only the trace context Envoy sent with the gRPC call is trusted for its sampled flag.
//! A request's own `traceparent` was written by the client, so such a check is sampled by the
//! ratio on its trace id, like any other service sampling that trace by ratio would.

use super::Context;
use std::cell::Cell;
use std::hash::BuildHasher;

/// A `traceparent`'s parts as a sampler reads them: version 00's layout (`vv-<32 hex trace
/// id>-<16 hex span id>-<2 hex flags>`, 55 bytes), which later versions keep as their prefix.
struct TraceParent {
    /// The trace id's low 64 bits: what `TraceIdRatioBased` compares with the ratio.
    trace_id_low: u64,
    sampled: bool,
}

impl TraceParent {
    fn read(value: &[u8]) -> Option<Self> {
        let dashes =
            value.len() >= 55 && value[2] == b'-' && value[35] == b'-' && value[52] == b'-';
        if !dashes || (value.len() > 55 && value[55] != b'-') {
            return None;
        }
        let hex = |digits: &[u8]| {
            std::str::from_utf8(digits)
                .ok()
                .and_then(|text| u64::from_str_radix(text, 16).ok())
        };
        Some(Self {
            trace_id_low: hex(&value[19..35])?,
            sampled: hex(&value[53..55])? & 1 == 1,
        })
    }
}

/// Whether a check with `context` is traced at `ratio` (0 to 1).
pub(super) fn sampled(context: Context<'_>, ratio: f64) -> bool {
    let read = |value| TraceParent::read(value);
    match context {
        Context::Call(value) => match read(value) {
            Some(parent) => parent.sampled,
            None => by_ratio(random(), ratio),
        },
        Context::Request(value) => match read(value) {
            Some(parent) => by_ratio(parent.trace_id_low, ratio),
            None => by_ratio(random(), ratio),
        },
        Context::None => by_ratio(random(), ratio),
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
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
            &[b'-'; 100_000],
        ] {
            assert!(
                !sampled(Context::Call(value), 0.0),
                "{:?}",
                &value[..value.len().min(60)]
            );
            assert!(sampled(Context::Request(value), 1.0));
        }
    }
}
