//! What tollgate decided about one request, before it is rendered for Envoy.

use crate::check::request::RequestError;
use crate::limit::Limit;
use crate::store::Outcome;

/// The quota state that the `X-RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// The limit of the bucket.
    pub limit: Limit,
    /// Requests still admitted in the window after this one.
    pub remaining: u32,
    /// Unix time in ms at which one more request will be admitted (rounded up, so a client that
    /// waits until then is never too early).
    pub reset_millis: u64,
    /// Whole seconds until `reset_millis`, at least 1: the `Retry-After` of a 429.
    pub retry_after_secs: u64,
}

impl Quota {
    /// Converts a store outcome, measuring the wait on the store's own clock.
    pub fn new(limit: Limit, outcome: &Outcome) -> Self {
        let wait_micros = outcome.reset_micros.saturating_sub(outcome.now_micros);
        Self {
            limit,
            remaining: outcome.remaining,
            reset_millis: outcome.reset_micros.div_ceil(1000),
            retry_after_secs: wait_micros.div_ceil(1_000_000).max(1),
        }
    }
}

/// The decision about one check request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not rate limited (outside the prefix, or a CORS preflight): allowed, no headers.
    Unlimited,
    /// Admitted and counted.
    Allowed(Quota),
    /// Over the limit: 429.
    RateLimited(Quota),
    /// No API key under the prefix: 401.
    MissingKey,
    /// More than one API key under the prefix: 400, since no bucket is the right one.
    AmbiguousKey,
    /// The check request cannot be evaluated: 400.
    BadRequest(RequestError),
    /// The store failed and `failure_mode` is `allow`: allowed, no headers.
    FailedOpen,
    /// The store failed and `failure_mode` is `deny`: 503.
    FailedClosed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;
    use std::time::Duration;

    fn quota(reset_micros: u64, now_micros: u64) -> Quota {
        let limit = Limit {
            requests: NonZeroU32::new(5).unwrap(),
            window: Duration::from_secs(60),
        };
        Quota::new(
            limit,
            &Outcome {
                allowed: false,
                remaining: 0,
                reset_micros,
                now_micros,
            },
        )
    }

    #[test]
    fn reset_rounds_up_to_the_millisecond_and_retry_after_to_the_second() {
        let q = quota(10_000_001, 1_000_000);
        assert_eq!(q.reset_millis, 10_001);
        assert_eq!(q.retry_after_secs, 10);
        assert_eq!(quota(10_000_000, 1_000_000).retry_after_secs, 9);
        assert_eq!(quota(2_000_000, 1_999_999).retry_after_secs, 1);
        assert_eq!(quota(1_000_000, 1_000_000).retry_after_secs, 1, "never 0");
    }
}
