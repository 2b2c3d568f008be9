//! The ext_authz service: request → bucket → quota check → verdict → `CheckResponse`.

use crate::api_key::KeyDigest;
use crate::check::deny_cache::{DenyCache, Lookup};
use crate::check::path::normalize;
use crate::check::request::{ApiKey, HttpCheck, RequestError};
use crate::check::response::{HeaderStyle, render};
use crate::check::routes::{Bucket, RouteRef, RouteTable, canonical_method};
use crate::check::verdict::{Quota, Verdict};
use crate::config::{Config, FailureMode};
use crate::limit::{Mode, Rule};
use crate::store::{BucketRef, QuotaStore, StoreError};
use crate::telemetry::metrics::{CheckMetrics, CheckResult, Metrics, Sample};
use arc_swap::ArcSwap;
use envoy_types::ext_authz::v3::pb::CheckResponse;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// At most one store-failure warning per this interval; the others are counted.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The settings a check is decided by, which a configuration reload may replace, with the
/// metric handles of its route table.
pub struct Policy {
    routes: RouteTable,
    api_key_header: String,
    header_style: HeaderStyle,
    failure_mode: FailureMode,
    metrics: CheckMetrics,
}

impl Policy {
    /// The live part of `config`, counting into `metrics`.
    pub fn of(config: &Config, metrics: &Metrics) -> Self {
        Self {
            routes: config.routes.clone(),
            api_key_header: config.api_key_header.clone(),
            header_style: config.rate_limit_headers,
            failure_mode: config.failure_mode,
            metrics: metrics.for_routes(&config.routes),
        }
    }
}

/// Decides every check request against the route table and the store.
pub struct RateLimiter<S> {
    /// Swapped whole by a reload; each check holds the policy it started with to its end.
    policy: ArcSwap<Policy>,
    store: S,
    deny_cache: Arc<DenyCache>,
    failures: FailureLog,
    metrics: Arc<Metrics>,
}

impl<S: QuotaStore> RateLimiter<S> {
    /// A limiter for `config` over `store`, counting into `metrics`.
    pub fn new(config: &Config, store: S, metrics: Arc<Metrics>) -> Self {
        Self {
            policy: ArcSwap::from_pointee(Policy::of(config, &metrics)),
            store,
            deny_cache: Arc::new(DenyCache::new(config.deny_cache_entries)),
            failures: FailureLog::new(),
            metrics,
        }
    }

    /// Replaces the policy with `config`'s: checks that start from now on use it, checks in flight
    /// finish with the one they started with. Over-limit cache entries of buckets whose limit
    /// changed (or that no longer exist) are dropped.
    pub fn apply(&self, config: &Config) {
        let policy = Arc::new(Policy::of(config, &self.metrics));
        self.policy.store(policy.clone());
        self.deny_cache
            .retain(|name, rule| policy.routes.rule_of(name) == Some(rule));
    }

    /// The metrics this limiter counts into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The over-limit cache (the admin API drops a reset bucket's entry).
    pub fn deny_cache(&self) -> Arc<DenyCache> {
        self.deny_cache.clone()
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
        let policy = self.policy.load_full();
        let verdict = match message {
            Ok(message) => self.decide_with(&policy, message).await,
            // Not the client's fault: answered as the store being unavailable, whatever the
            // failure mode (failing open would let a flood of large messages skip limits).
            Err(RequestError::Overloaded) => {
                policy.metrics.count(None, CheckResult::FailedClosed);
                Verdict::FailedClosed
            }
            Err(&e) => {
                policy.metrics.count(None, CheckResult::BadRequest);
                Verdict::BadRequest(e)
            }
        };
        if let Verdict::BadRequest(e) = verdict {
            tracing::debug!(error = %e, "unusable check request");
        }
        let response = render(&verdict, &policy.api_key_header, policy.header_style);
        policy.metrics.check_took(started.elapsed());
        response
    }

    /// Decides one encoded `CheckRequest` and counts it in the metrics. Never fails: every
    /// problem becomes a verdict.
    pub async fn decide(&self, message: &[u8]) -> Verdict {
        self.decide_with(&self.policy.load_full(), message).await
    }

    async fn decide_with(&self, policy: &Policy, message: &[u8]) -> Verdict {
        let (verdict, route) = self.judge(policy, message).await;
        policy.metrics.count(route, CheckResult::of(&verdict));
        verdict
    }

    /// The verdict, and the route that applied (`None` before one is found, or outside them).
    async fn judge(&self, policy: &Policy, message: &[u8]) -> (Verdict, Option<RouteRef>) {
        let check = match HttpCheck::parse(message, &policy.api_key_header) {
            Ok(check) => check,
            Err(e) => return (Verdict::BadRequest(e), None),
        };
        let bucket = policy.bucket(check.method, check.path, check.preflight);
        let Some(Bucket { name, rule, route }) = (match bucket {
            Ok(bucket) => bucket,
            Err(e) => return (Verdict::BadRequest(e), None),
        }) else {
            return (Verdict::Unlimited, None);
        };
        let api_key = match check.api_key {
            ApiKey::One(key) => key,
            ApiKey::Missing => return (Verdict::MissingKey, Some(route)),
            ApiKey::Several => return (Verdict::AmbiguousKey, Some(route)),
            ApiKey::Invalid => {
                return (
                    Verdict::BadRequest(RequestError::InvalidApiKey),
                    Some(route),
                );
            }
        };
        (
            self.count(policy, &KeyDigest::of(api_key), &name, rule)
                .await,
            Some(route),
        )
    }

    /// Asks the over-limit cache, then the store, whether `name` of `key` admits one more
    /// request.
    async fn count(&self, policy: &Policy, key: &KeyDigest, name: &str, rule: &Rule) -> Verdict {
        let bucket = BucketRef { key, name };
        let asked_at = Instant::now();
        // In shadow mode every request is counted, so none may be answered without the store.
        let enforce = rule.mode() == Mode::Enforce;
        let cached = if enforce {
            self.deny_cache.lookup(bucket, rule, asked_at)
        } else {
            Lookup::Miss
        };
        if let Lookup::Deny(quota) = cached {
            policy.metrics.deny_cache_hit();
            return Verdict::RateLimited(quota);
        }
        let result = self.store.check(bucket, rule).await;
        // Timed from before the cache lookup (well under a microsecond): one clock read less.
        policy
            .metrics
            .store_call(asked_at.elapsed(), result.as_ref().err());
        match result {
            Ok(outcome) => {
                self.failures.recovered();
                let quota = Quota::new(rule, &outcome, outcome.allowed || !enforce);
                if outcome.allowed {
                    if cached == Lookup::Recheck {
                        // Reset since: the entry must not answer for the bucket in an outage.
                        self.deny_cache.forget(bucket);
                    }
                    Verdict::Allowed(quota)
                } else if !enforce {
                    tracing::debug!(key = %key, bucket = name, limit = %quota.limit, "would be rate limited (shadow mode): allowed and counted");
                    Verdict::ShadowDenied(quota)
                } else {
                    self.deny_cache.insert(bucket, rule, &quota, asked_at);
                    tracing::debug!(key = %key, bucket = name, retry_after = quota.retry_after_secs, "rate limited");
                    Verdict::RateLimited(quota)
                }
            }
            // A full memory store is a flood of invented keys, not an outage: failing open would
            // give the flood, and any key whose bucket expired, unlimited requests.
            Err(StoreError::Full(_)) => Verdict::FailedClosed,
            Err(e) => {
                if cached == Lookup::Recheck
                    && let Some(quota) = self.deny_cache.stale_denial(bucket, rule, Instant::now())
                {
                    return Verdict::RateLimited(quota);
                }
                self.failures.record(&e, policy.failure_mode);
                match policy.failure_mode {
                    FailureMode::Allow => Verdict::FailedOpen,
                    FailureMode::Deny => Verdict::FailedClosed,
                }
            }
        }
    }
}

impl<S> RateLimiter<S> {
    /// The policy checks start with now; hold it for as long as its buckets are used.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// The quota store.
    pub fn store(&self) -> &S {
        &self.store
    }
}

impl Policy {
    /// The bucket a request with this method and path (as the client sent them) is counted in,
    /// or `None` when it is not rate limited (a CORS preflight, a path outside the prefix).
    /// `preflight`: the request carries `access-control-request-method`. Checks and the admin API
    /// both resolve requests here, so they always agree.
    pub fn bucket(
        &self,
        method: &str,
        path: &str,
        preflight: bool,
    ) -> Result<Option<Bucket<'_>>, RequestError> {
        let method = match canonical_method(method) {
            // A CORS preflight carries no key and must not cost quota. Any other OPTIONS is
            // counted as an undeclared method: some upstreams serve it with the real handler.
            "OPTIONS" if preflight => return Ok(None),
            "HEAD" => "GET",
            method => method,
        };
        let path = normalize(path).map_err(|_| RequestError::PathNotAbsolute)?;
        Ok(self.routes.bucket(method, &path))
    }

    /// The route table requests are matched against.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }
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
