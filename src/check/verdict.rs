//! What tollgate decided about one request, before it is rendered for Envoy.

use crate::api_key::KeyDigest;
use crate::check::report::QuotaReport;
use crate::check::request::RequestError;
use crate::policy::limit::{Limit, Mode, Rule};
use crate::store::Outcome;
use crate::telemetry::metrics::CheckResult;
use crate::telemetry::traces::StoreCall;
use std::borrow::Cow;
use std::sync::Arc;

/// The quota state that the rate-limit headers report.
///
/// `X-RateLimit-*` describe one window: after a counted request, the one closest to running out
/// (fewest slots left; of those, the one that frees a slot last); after a denial, the one that
/// admits the request last, so that `Retry-After` and `X-RateLimit-Reset` give the moment the
/// request would really be admitted. `windows` describes every window, for the `RateLimit`
/// fields. Times are absolute, on the store's clock: an answer repeated later (the over-limit
/// cache's) moves `now_micros` only, and shares the windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    /// The limit of the window the headers describe.
    pub limit: Limit,
    /// Slots still free in that window after this request.
    pub remaining: u32,
    /// Unix time in µs of that window's reset.
    pub reset_micros: u64,
    /// The store's clock when this answer is given, in Unix µs.
    pub now_micros: u64,
    /// Every window of the rule, in the rule's order.
    pub windows: Arc<[WindowQuota]>,
}

/// One window's state, as the `RateLimit` field reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowQuota {
    /// The window's limit.
    pub limit: Limit,
    /// Slots still free in it.
    pub remaining: u32,
    /// Unix time in µs of its reset.
    pub reset_micros: u64,
}

impl Quota {
    /// Converts a store outcome under `rule`. `counted`: the request was counted (admitted, or
    /// over the limit in shadow mode).
    pub fn new(rule: &Rule, outcome: &Outcome, counted: bool) -> Self {
        let windows: Arc<[WindowQuota]> = rule
            .limits()
            .iter()
            .zip(&outcome.windows)
            .map(|(&limit, w)| WindowQuota {
                limit,
                remaining: w.remaining,
                reset_micros: w.reset_micros,
            })
            .collect();
        let headline = if counted {
            windows
                .iter()
                .min_by_key(|w| (w.remaining, std::cmp::Reverse(w.reset_micros)))
        } else {
            windows
                .iter()
                .max_by_key(|w| (w.reset_micros, std::cmp::Reverse(w.remaining)))
        }
        .copied()
        .unwrap_or(WindowQuota {
            limit: rule.limits()[0],
            remaining: 0,
            reset_micros: outcome.now_micros,
        });
        Self {
            limit: headline.limit,
            remaining: headline.remaining,
            reset_micros: headline.reset_micros,
            now_micros: outcome.now_micros,
            windows,
        }
    }

    /// Unix time in ms of the reset, rounded up, so a client that waits until then is never too
    /// early: `X-RateLimit-Reset`.
    pub fn reset_millis(&self) -> u64 {
        self.reset_micros.div_ceil(1000)
    }

    /// Microseconds from now to the reset: how long a denial stays true.
    pub fn wait_micros(&self) -> u64 {
        self.wait_until(self.reset_micros)
    }

    /// Whole seconds until the reset, at least 1: the `Retry-After` of a 429.
    pub fn retry_after_secs(&self) -> u64 {
        self.wait_micros().div_ceil(1_000_000).max(1)
    }

    /// Microseconds from now to `micros` (Unix µs on the store's clock), or 0 once past.
    pub fn wait_until(&self, micros: u64) -> u64 {
        micros.saturating_sub(self.now_micros)
    }
}

/// The decision about one check request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not rate limited (outside the prefix, or a CORS preflight): allowed, no headers.
    NotLimited,
    /// Admitted and counted.
    Allowed(Quota),
    /// Over the limit: 429.
    Denied(Quota),
    /// Over the limit in shadow mode: counted and allowed with the headers, reported as a
    /// would-be denial.
    ShadowDenied(Quota),
    /// No API key under the prefix: 401.
    Unauthenticated,
    /// More than one API key under the prefix: 400, since no bucket is the right one.
    AmbiguousKey,
    /// The check request cannot be evaluated: 400.
    BadRequest(RequestError),
    /// The store failed and `failure_mode` is `allow`: allowed, no headers.
    FailedOpen,
    /// The store failed and `failure_mode` is `deny`: 503.
    FailedClosed,
    /// A request of the quota endpoint, admitted by its own limit: answered by tollgate with
    /// 200 and the key's quotas (boxed: far larger than the other answers, and rare).
    Reported(Box<QuotaReport>),
}

impl Verdict {
    /// How it is counted: the `result` label of `tollgate_checks_total`.
    pub fn result(&self) -> CheckResult {
        match self {
            Verdict::NotLimited => CheckResult::NotLimited,
            Verdict::Allowed(_) => CheckResult::Allowed,
            Verdict::Denied(_) => CheckResult::Denied,
            Verdict::ShadowDenied(_) => CheckResult::ShadowDenied,
            Verdict::Unauthenticated => CheckResult::Unauthenticated,
            Verdict::AmbiguousKey | Verdict::BadRequest(_) => CheckResult::BadRequest,
            Verdict::FailedOpen => CheckResult::FailedOpen,
            Verdict::FailedClosed => CheckResult::FailedClosed,
            Verdict::Reported(_) => CheckResult::Reported,
        }
    }

    /// The quota the answer reports: after a counted request or a denial (the quota endpoint's
    /// own, for its answer).
    pub fn quota(&self) -> Option<&Quota> {
        match self {
            Verdict::Allowed(quota) | Verdict::Denied(quota) | Verdict::ShadowDenied(quota) => {
                Some(quota)
            }
            Verdict::Reported(report) => Some(&report.own),
            _ => None,
        }
    }
}

/// What a verdict was about, as far as the check got before deciding: the bucket, its mode, the
/// plan whose table applied and the key's digest. Envoy's access log shows them beside the
/// decision (`check/metadata.rs`). Borrowed from the policy the check ran under, so recording
/// them allocates nothing; a field stays `None` when the check ended before it was known (a
/// message that could not be read has none, a request without a key has no `key`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject<'p> {
    /// The bucket's name (`GET /campaigns/:id`, `default`...).
    pub bucket: Option<Cow<'p, str>>,
    /// Whether the bucket's denials are enforced.
    pub mode: Option<Mode>,
    /// The plan whose table applied; `None` for the top-level table.
    pub plan: Option<&'p str>,
    /// The digest of the one API key the request carried.
    pub key: Option<KeyDigest>,
    /// The slots the request takes in its bucket.
    pub cost: Option<u32>,
    /// The check's store call, if it made one (for its trace).
    pub store: Option<StoreCall>,
    /// The request's `traceparent`, when traces are on and it carried one.
    pub traceparent: Option<&'p [u8]>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::limit::Mode;
    use crate::store::WindowOutcome;
    use std::num::NonZeroU32;
    use std::time::Duration;

    fn limit(requests: u32, secs: u64) -> Limit {
        Limit {
            requests: NonZeroU32::new(requests).unwrap(),
            window: Duration::from_secs(secs),
        }
    }

    fn outcome(now_micros: u64, windows: &[(u32, u64)]) -> Outcome {
        Outcome {
            allowed: false,
            now_micros,
            windows: windows
                .iter()
                .map(|&(remaining, reset_micros)| WindowOutcome {
                    remaining,
                    reset_micros,
                })
                .collect(),
        }
    }

    #[test]
    fn reset_rounds_up_to_the_millisecond_and_retry_after_to_the_second() {
        let rule = Rule::single(limit(5, 60));
        let q = Quota::new(&rule, &outcome(1_000_000, &[(0, 10_000_001)]), false);
        assert_eq!(q.reset_millis(), 10_001);
        assert_eq!(q.retry_after_secs(), 10);
        let retry =
            |reset, now| Quota::new(&rule, &outcome(now, &[(0, reset)]), false).retry_after_secs();
        assert_eq!(retry(10_000_000, 1_000_000), 9);
        assert_eq!(retry(2_000_000, 1_999_999), 1);
        assert_eq!(retry(1_000_000, 1_000_000), 1, "never 0");
    }

    #[test]
    fn the_headers_describe_the_window_closest_to_running_out_or_the_last_to_admit() {
        let rule = Rule::new(vec![limit(10, 1), limit(100, 3600)], 1, Mode::Enforce).unwrap();
        let now = 1_000_000_000;
        // Allowed: 3 left of the hour beats 9 left of the second.
        let allowed = Quota::new(
            &rule,
            &outcome(now, &[(9, now + 1_000_000), (3, now + 5_000_000)]),
            true,
        );
        assert_eq!((allowed.limit, allowed.remaining), (limit(100, 3600), 3));
        assert_eq!(allowed.reset_millis(), (now + 5_000_000) / 1000);
        // Tie on remaining: the window that frees a slot last.
        let tie = Quota::new(
            &rule,
            &outcome(now, &[(0, now + 900_000), (0, now + 7_000_000)]),
            true,
        );
        assert_eq!(tie.limit, limit(100, 3600));
        // Denied by both: the request is admitted when the later one has room.
        let denied = Quota::new(
            &rule,
            &outcome(now, &[(0, now + 400_000), (0, now + 7_500_000)]),
            false,
        );
        assert_eq!(
            (denied.limit, denied.retry_after_secs()),
            (limit(100, 3600), 8)
        );
        // Denied by the second only; the hour has room (its reset is now).
        let second = Quota::new(
            &rule,
            &outcome(now, &[(0, now + 400_000), (50, now)]),
            false,
        );
        assert_eq!(
            (second.limit, second.retry_after_secs(), second.remaining),
            (limit(10, 1), 1, 0)
        );
        assert_eq!(second.windows.len(), 2);
        assert_eq!(second.windows[1].remaining, 50);
    }
}
