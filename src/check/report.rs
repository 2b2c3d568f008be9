//! The quota endpoint's answer: every bucket of the caller's key as it stands, rendered as the
//! JSON body Envoy returns with status 200.

use crate::check::verdict::Quota;
use crate::policy::limit::{Limit, Mode, Rule};
use crate::store::Usage;
use serde::Serialize;

/// What the quota endpoint reports for one API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaReport {
    /// The endpoint's own quota after this request: the rate-limit headers of the answer.
    pub own: Quota,
    /// The plan whose table applied; `None` for the top-level table.
    pub plan: Option<String>,
    /// The prefix the buckets' templates are under (`/v1`, empty for `/`).
    pub path_prefix: String,
    /// Every bucket of the table that can be listed, in the table's order.
    pub buckets: Vec<BucketReport>,
}

/// One bucket as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketReport {
    /// The bucket's name: a route's `METHOD /template`, or `default`.
    pub name: String,
    /// The slots one request takes.
    pub cost: u32,
    /// Whether denials are enforced.
    pub mode: Mode,
    /// Each window's limit and state, in the rule's order.
    pub windows: Vec<(Limit, crate::store::WindowUsage)>,
}

impl BucketReport {
    /// `name` under `rule`, as `usage` read it.
    pub fn new(name: &str, rule: &Rule, usage: Usage) -> Self {
        Self {
            name: name.to_owned(),
            cost: rule.cost(),
            mode: rule.mode(),
            windows: rule.limits().iter().copied().zip(usage.windows).collect(),
        }
    }
}

/// The body's shape. Times are Unix milliseconds like `X-RateLimit-Reset`, rounded up.
#[derive(Serialize)]
struct Body<'a> {
    plan: Option<&'a str>,
    path_prefix: &'a str,
    buckets: Vec<BucketBody<'a>>,
}

#[derive(Serialize)]
struct BucketBody<'a> {
    bucket: &'a str,
    cost: u32,
    mode: &'static str,
    windows: Vec<WindowBody>,
}

#[derive(Serialize)]
struct WindowBody {
    limit: u32,
    window_ms: u128,
    used: u32,
    remaining: u32,
    reset_ms: u64,
}

impl QuotaReport {
    /// The JSON body: `{"plan", "path_prefix", "buckets": [{"bucket", "cost", "mode",
    /// "windows": [{"limit", "window_ms", "used", "remaining", "reset_ms"}]}]}`.
    pub fn body(&self) -> String {
        let body = Body {
            plan: self.plan.as_deref(),
            path_prefix: &self.path_prefix,
            buckets: self
                .buckets
                .iter()
                .map(|bucket| BucketBody {
                    bucket: &bucket.name,
                    cost: bucket.cost,
                    mode: bucket.mode.label(),
                    windows: bucket
                        .windows
                        .iter()
                        .map(|(limit, usage)| WindowBody {
                            limit: limit.requests.get(),
                            window_ms: limit.window.as_millis(),
                            used: usage.used,
                            remaining: usage.remaining,
                            reset_ms: usage.reset_micros.div_ceil(1000),
                        })
                        .collect(),
                })
                .collect(),
        };
        serde_json::to_string(&body).expect("plain structs of strings and numbers serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Outcome, WindowOutcome, WindowUsage};
    use std::num::NonZeroU32;
    use std::time::Duration;

    fn limit(requests: u32, secs: u64) -> Limit {
        Limit {
            requests: NonZeroU32::new(requests).unwrap(),
            window: Duration::from_secs(secs),
        }
    }

    #[test]
    fn the_body_lists_every_window_of_every_bucket_in_milliseconds() {
        let own_rule = Rule::single(limit(60, 60));
        let own = Quota::new(
            &own_rule,
            &Outcome {
                allowed: true,
                now_micros: 1_000_000,
                windows: vec![WindowOutcome {
                    remaining: 59,
                    reset_micros: 61_000_000,
                }],
            },
            true,
        );
        let search = Rule::new(vec![limit(10, 1), limit(1000, 3600)], 2, Mode::Shadow).unwrap();
        let usage = |used, remaining, reset_micros| WindowUsage {
            used,
            remaining,
            reset_micros,
        };
        let report = QuotaReport {
            own,
            plan: Some("pro \"x\"".into()),
            path_prefix: "/v1".into(),
            buckets: vec![BucketReport::new(
                "GET /search",
                &search,
                Usage {
                    now_micros: 1_000_000,
                    windows: vec![usage(4, 6, 1_500_001), usage(4, 996, 3_601_000_000)],
                },
            )],
        };
        let body: serde_json::Value = serde_json::from_str(&report.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "plan": "pro \"x\"",
                "path_prefix": "/v1",
                "buckets": [{
                    "bucket": "GET /search", "cost": 2, "mode": "shadow",
                    "windows": [
                        {"limit": 10, "window_ms": 1000, "used": 4, "remaining": 6, "reset_ms": 1501},
                        {"limit": 1000, "window_ms": 3600000, "used": 4, "remaining": 996, "reset_ms": 3601000},
                    ],
                }],
            })
        );
    }
}
