//! The ext_authz service: request → bucket → quota check → verdict → `CheckResponse`.

use crate::api_key::KeyDigest;
use crate::check::deny_cache::DenyCache;
use crate::check::path::normalize;
use crate::check::request::{ApiKey, HttpCheck, RequestError};
use crate::check::response::render;
use crate::check::routes::{Bucket, RouteRef, RouteTable};
use crate::check::verdict::{Quota, Verdict};
use crate::config::{Config, FailureMode};
use crate::limit::Limit;
use crate::store::{BucketRef, QuotaStore, StoreError};
use crate::telemetry::metrics::{CheckMetrics, CheckResult, Metrics, Sample};
use envoy_types::ext_authz::v3::pb::CheckResponse;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// At most one store-failure warning per this interval; the others are counted.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Decides every check request against the route table and the store.
pub struct RateLimiter<S> {
    routes: RouteTable,
    api_key_header: String,
    failure_mode: FailureMode,
    store: S,
    deny_cache: DenyCache,
    failures: FailureLog,
    metrics: CheckMetrics,
}

impl<S: QuotaStore> RateLimiter<S> {
    /// A limiter for `config` over `store`, counting into `metrics`.
    pub fn new(config: &Config, store: S, metrics: &Metrics) -> Self {
        Self {
            routes: config.routes.clone(),
            api_key_header: config.api_key_header.clone(),
            failure_mode: config.failure_mode,
            store,
            deny_cache: DenyCache::new(config.deny_cache_entries),
            failures: FailureLog::new(),
            metrics: metrics.for_routes(&config.routes),
        }
    }

    /// The gauges a metrics scrape reads: the over-limit cache's size and the open breakers.
    pub fn sample(&self) -> Sample {
        Sample {
            deny_cache_entries: self.deny_cache.len(),
            breakers_open: self.store.breakers_open(),
        }
    }

    /// Answers one check message, or a call whose message could not be read (400).
    pub async fn respond(&self, message: Result<&[u8], &RequestError>) -> CheckResponse {
        let started = Instant::now();
        let verdict = match message {
            Ok(message) => self.decide(message).await,
            Err(&e) => {
                self.metrics.count(None, CheckResult::BadRequest);
                Verdict::BadRequest(e)
            }
        };
        if let Verdict::BadRequest(e) = verdict {
            tracing::debug!(error = %e, "unusable check request");
        }
        let response = render(&verdict, &self.api_key_header);
        self.metrics.check_took(started.elapsed());
        response
    }

    /// Decides one encoded `CheckRequest` and counts it in the metrics. Never fails: every
    /// problem becomes a verdict.
    pub async fn decide(&self, message: &[u8]) -> Verdict {
        let (verdict, route) = self.judge(message).await;
        self.metrics.count(route, CheckResult::of(&verdict));
        verdict
    }

    /// The verdict, and the route that applied (`None` before one is found, or outside them).
    async fn judge(&self, message: &[u8]) -> (Verdict, Option<RouteRef>) {
        let check = match HttpCheck::parse(message, &self.api_key_header) {
            Ok(check) => check,
            Err(e) => return (Verdict::BadRequest(e), None),
        };
        let method = match canonical_method(check.method) {
            // A CORS preflight carries no key and must not cost quota.
            "OPTIONS" => return (Verdict::Unlimited, None),
            "HEAD" => "GET",
            method => method,
        };
        let Ok(path) = normalize(check.path) else {
            return (Verdict::BadRequest(RequestError::PathNotAbsolute), None);
        };
        let Some(Bucket { name, limit, route }) = self.routes.bucket(method, &path) else {
            return (Verdict::Unlimited, None);
        };
        let api_key = match check.api_key {
            ApiKey::One(key) => key,
            ApiKey::Missing => return (Verdict::MissingKey, Some(route)),
            ApiKey::Several => return (Verdict::AmbiguousKey, Some(route)),
        };
        (
            self.count(&KeyDigest::of(api_key), &name, limit).await,
            Some(route),
        )
    }

    /// Asks the over-limit cache, then the store, whether `name` of `key` admits one more
    /// request.
    async fn count(&self, key: &KeyDigest, name: &str, limit: Limit) -> Verdict {
        let bucket = BucketRef { key, name };
        let asked_at = Instant::now();
        if let Some(quota) = self.deny_cache.lookup(bucket, limit, asked_at) {
            self.metrics.deny_cache_hit();
            return Verdict::RateLimited(quota);
        }
        let result = self.store.check(bucket, limit).await;
        // Timed from before the cache lookup (well under a microsecond): one clock read less.
        self.metrics
            .store_call(asked_at.elapsed(), result.as_ref().err());
        match result {
            Ok(outcome) => {
                self.failures.recovered();
                let quota = Quota::new(limit, &outcome);
                if outcome.allowed {
                    Verdict::Allowed(quota)
                } else {
                    self.deny_cache.insert(bucket, limit, &outcome, asked_at);
                    tracing::debug!(key = %key, bucket = name, retry_after = quota.retry_after_secs, "rate limited");
                    Verdict::RateLimited(quota)
                }
            }
            Err(e) => {
                self.failures.record(&e, self.failure_mode);
                match self.failure_mode {
                    FailureMode::Allow => Verdict::FailedOpen,
                    FailureMode::Deny => Verdict::FailedClosed,
                }
            }
        }
    }
}

/// The upper-case spelling of a standard method, so `get` cannot reach a looser bucket than `GET`.
fn canonical_method(method: &str) -> &str {
    const METHODS: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
    ];
    METHODS
        .into_iter()
        .find(|m| m.eq_ignore_ascii_case(method))
        .unwrap_or(method)
}

/// Logs store failures without flooding: the first at once, then one line per interval with the
/// count of those not logged, and one line when the store answers again.
struct FailureLog {
    started: Instant,
    /// Milliseconds since `started` of the last warning, plus one (0: never logged).
    last_logged: AtomicU64,
    unlogged: AtomicU64,
    failing: AtomicBool,
}

impl FailureLog {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last_logged: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        }
    }

    fn record(&self, error: &StoreError, mode: FailureMode) {
        self.failing.store(true, Ordering::Relaxed);
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.last_logged.load(Ordering::Relaxed);
        let due = last == 0 || now >= last + FAILURE_LOG_INTERVAL.as_millis() as u64;
        if due
            && self
                .last_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let unlogged = self.unlogged.swap(0, Ordering::Relaxed);
            let action = match mode {
                FailureMode::Allow => "allowing requests without rate-limit headers",
                FailureMode::Deny => "denying requests with 503",
            };
            tracing::warn!(error = %error, failures_not_logged = unlogged, "rate-limit store unavailable; {action}");
        } else {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn recovered(&self) {
        if self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::Relaxed) {
            let unlogged = self.unlogged.swap(0, Ordering::Relaxed);
            tracing::info!(
                failures_not_logged = unlogged,
                "rate-limit store answers again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::canonical_method;

    #[test]
    fn methods_are_matched_case_insensitively() {
        assert_eq!(canonical_method("get"), "GET");
        assert_eq!(canonical_method("Options"), "OPTIONS");
        assert_eq!(canonical_method("PROPFIND"), "PROPFIND");
    }
}
