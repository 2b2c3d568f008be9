//! The ext_authz service: request → bucket → quota check → verdict → `CheckResponse`.

use crate::api_key::{ApiKey, KeyDigest};
use crate::check::deny_cache::{Asked, DenyCache, Lookup};
use crate::check::request::{HttpCheck, RequestError};
use crate::check::response::{Rendered, render};
use crate::check::verdict::{Quota, Subject, Verdict};
use crate::config::{Config, FailureMode, QUOTA_BUCKET};
use crate::policy::limit::{Mode, Rule};
use crate::policy::routes::{Bucket, RouteRef};
use crate::store::{BucketRef, Outcome, PlanAssignments, QuotaStore, StoreError};
use crate::telemetry::metrics::{CheckMetrics, CheckResult, Metrics, Sample};
use crate::telemetry::traces::{CheckSpan, Context as TraceContext, StoreCall, Traces};
use arc_swap::ArcSwap;
use failures::FailureLog;
use policy::Table;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often every replica asks the store whether plan assignments changed: the bound on how
/// long a replica other than the one that served `SetPlan` keeps a key's old plan (plus one store
/// round trip). One small script call per interval per replica; none per check.
pub const PLAN_REFRESH: Duration = Duration::from_secs(1);

/// Which plan each API key is on, as last read from the store.
#[derive(Default)]
pub struct PlanBook {
    assignments: ArcSwap<PlanAssignments>,
    /// One refresh at a time (the interval's and the admin API's), so an older read never
    /// replaces a newer one.
    refreshing: tokio::sync::Mutex<()>,
}

impl PlanBook {
    /// The plan of `key`, if it has one.
    fn plan_of(&self, key: &KeyDigest) -> Option<Arc<str>> {
        self.assignments.load().plans.get(key).cloned()
    }
}

/// Decides every check request against the route table and the store.
pub struct RateLimiter<S> {
    /// Swapped whole by a reload; each check holds the policy it started with to its end.
    policy: ArcSwap<Policy>,
    plans: PlanBook,
    store: S,
    deny_cache: Arc<DenyCache>,
    failures: FailureLog,
    metrics: Arc<Metrics>,
    /// Where sampled checks' spans go; `None` when traces are off.
    traces: Option<Traces>,
    /// The quota endpoint's reads in flight.
    quota_reads: QuotaReads,
}

impl<S: QuotaStore> RateLimiter<S> {
    /// A limiter for `config` over `store`, counting into `metrics`.
    pub fn new(config: &Config, store: S, metrics: Arc<Metrics>) -> Self {
        Self {
            policy: ArcSwap::from_pointee(Policy::of(config, &metrics)),
            plans: PlanBook::default(),
            store,
            deny_cache: Arc::new(DenyCache::new(config.deny_cache_entries)),
            failures: FailureLog::new(),
            metrics,
            traces: None,
            quota_reads: QuotaReads::default(),
        }
    }

    /// The limiter, recording sampled checks in `traces`.
    pub fn with_traces(mut self, traces: Option<Traces>) -> Self {
        self.traces = traces;
        self
    }

    /// Replaces the policy with `config`'s: checks that start from now on use it, checks in flight
    /// finish with the one they started with. Over-limit cache entries of buckets whose limit
    /// changed (or that no longer exist) are dropped.
    pub fn apply(&self, config: &Config) {
        let policy = Arc::new(Policy::of(config, &self.metrics));
        self.policy.store(policy.clone());
        // A bucket name may be in several tables; an entry whose rule is in none is useless.
        self.deny_cache.retain(|name, rule| {
            let quota = policy.quota_endpoint.as_ref();
            std::iter::once(&policy.base)
                .chain(policy.plans.values())
                .any(|table| table.routes.rule_of(name) == Some(rule))
                || (name == QUOTA_BUCKET && quota.is_some_and(|q| q.rule == *rule))
        });
    }

    /// Reads the plan assignments from the store when they changed since the last read. Run
    /// every [`PLAN_REFRESH`] by the server, at once by the admin API around a change.
    ///
    /// When the store has lost them all (their version mark is gone: a Redis restarted without
    /// persistence, the hash deleted or evicted) while this replica holds some, it writes its copy
    /// back instead of applying the loss, and keeps using it meanwhile: a restart must not lift
    /// every assignment, a `restricted` plan on an abuser included. The next refresh reads
    /// whatever the store then holds (this copy, or another replica's that was written first).
    pub async fn refresh_plans(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.plans.refreshing.lock().await;
        let held = self.plans.assignments.load_full();
        let Some(assignments) = self.store.plans_since(held.version.as_deref()).await? else {
            return Ok(());
        };
        if assignments.version.is_none() && !held.plans.is_empty() {
            if self.store.restore_plans(&held.plans).await? {
                self.metrics.plans_restored();
                tracing::warn!(
                    restored = held.plans.len(),
                    "the store lost every plan assignment (a Redis restarted without persistence, or the hash deleted): restored this replica's copy"
                );
            }
            return Ok(());
        }
        tracing::debug!(
            version = assignments.version.as_deref().unwrap_or("none"),
            keys = assignments.plans.len(),
            "plan assignments changed"
        );
        self.plans.assignments.store(Arc::new(assignments));
        Ok(())
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

    /// The answer to one check message, or to a call whose message could not be read (400, or 503 when
    /// [`RequestError::fails_closed`]).
    pub async fn answer(&self, message: Result<&[u8], &RequestError>) -> Rendered {
        self.answer_traced(message, None).await
    }

    /// Whether checks are traced: then the call's `traceparent` is worth reading.
    pub fn traced(&self) -> bool {
        self.traces.is_some()
    }

    /// [`RateLimiter::answer`], with the `traceparent` of the gRPC call itself when it has one.
    /// Envoy puts its ext_authz client span's context there when it traces: the check's span is
    /// then that span's child. Without one, the request's own `traceparent` (a header of the
    /// `CheckRequest`, as the client sent it) is the parent.
    pub async fn answer_traced(
        &self,
        message: Result<&[u8], &RequestError>,
        call_context: Option<&[u8]>,
    ) -> Rendered {
        let started = Instant::now();
        // Read only when traces are on: the wall clock is a system call on some hosts.
        let started_at = self.traces.as_ref().map(|_| SystemTime::now());
        let policy = self.policy.load_full();
        let (verdict, subject) = match message {
            Ok(message) => self.decide_under(&policy, message).await,
            Err(e) if e.fails_closed() => {
                policy.base.metrics.count(None, CheckResult::FailedClosed);
                (Verdict::FailedClosed, Subject::default())
            }
            Err(&e) => {
                policy.base.metrics.count(None, CheckResult::BadRequest);
                (Verdict::BadRequest(e), Subject::default())
            }
        };
        if let Verdict::BadRequest(e) = verdict {
            tracing::debug!(error = %e, "unusable check request");
        }
        let response = render(
            &verdict,
            policy.decision_metadata.then_some(&subject),
            &policy.api_key_header,
            policy.header_style,
        );
        let took = started.elapsed();
        policy.base.metrics.check_took(took);
        if let (Some(traces), Some(at)) = (&self.traces, started_at) {
            let mut span = check_span(&verdict, &subject, (at, started), took);
            if let Some(call) = call_context {
                span.context = TraceContext::Call(call);
            }
            traces.record(&span);
        }
        response
    }

    /// The verdict on one encoded `CheckRequest`, counted in the metrics. Never fails: every
    /// problem becomes a verdict.
    pub async fn decide(&self, message: &[u8]) -> Verdict {
        self.decide_under(&self.policy.load_full(), message).await.0
    }

    async fn decide_under<'p>(
        &self,
        policy: &'p Policy,
        message: &'p [u8],
    ) -> (Verdict, Subject<'p>) {
        let (verdict, subject, route, metrics) = self.verdict_of(policy, message).await;
        metrics.count(route, verdict.result());
        (verdict, subject)
    }

    /// The verdict, not counted yet, with what it was about, the route that applied (`None`
    /// before one is found, or outside them) and the metrics of its table.
    async fn verdict_of<'p>(
        &self,
        policy: &'p Policy,
        message: &'p [u8],
    ) -> (Verdict, Subject<'p>, Option<RouteRef>, &'p CheckMetrics) {
        let base = &policy.base.metrics;
        let check = match HttpCheck::parse_traced(
            message,
            &policy.api_key_header,
            policy.plan_header.as_deref(),
            self.traces.is_some(),
        ) {
            Ok(check) => check,
            Err(e) => return (Verdict::BadRequest(e), Subject::default(), None, base),
        };
        let digest = || match check.api_key {
            ApiKey::One(key) => Some(KeyDigest::of(key)),
            _ => None,
        };
        // With a plan header, the header alone names the plan (set by Envoy from a verified
        // token): were the stored assignment a fallback, a client could pick the better of the
        // two by sending its token or not. Without one, the assignment from the store, which
        // needs the key's digest before the bucket: only then is it taken this early (a path
        // outside the prefix costs no hashing, a configuration without plans no lookup).
        let by_assignment = policy.uses_assignments();
        let early_key = if by_assignment { digest() } else { None };
        let assigned = early_key.as_ref().and_then(|key| self.plans.plan_of(key));
        let (table, plan) = policy.table(check.plan.or(assigned.as_deref()));
        let bucket = policy.bucket_in(table, check.method, check.path, check.preflight);
        let no_bucket = Subject {
            plan,
            traceparent: check.traceparent,
            ..Subject::default()
        };
        let Some(Bucket { name, rule, route }) = (match bucket {
            Ok(bucket) => bucket,
            Err(e) => return (Verdict::BadRequest(e), no_bucket, None, &table.metrics),
        }) else {
            return (Verdict::NotLimited, no_bucket, None, &table.metrics);
        };
        let key = if by_assignment { early_key } else { digest() };
        let (verdict, store) = match (check.api_key, key) {
            (_, Some(key)) if route == RouteRef::Quota => {
                self.report(policy, table, plan, &key, rule).await
            }
            (_, Some(key)) => self.admit(policy, &key, &name, rule).await,
            (ApiKey::Several, None) => (Verdict::AmbiguousKey, None),
            (ApiKey::Invalid, None) => (Verdict::BadRequest(RequestError::InvalidApiKey), None),
            (ApiKey::Missing | ApiKey::One(_), None) => (Verdict::Unauthenticated, None),
        };
        let subject = Subject {
            bucket: Some(name),
            mode: Some(rule.mode()),
            key,
            cost: Some(rule.cost()),
            store,
            ..no_bucket
        };
        (verdict, subject, Some(route), &table.metrics)
    }

    /// Whether bucket `name` of `key` admits one more request: the over-limit cache asked first,
    /// then the store, which counts it. With the store call, when one was made.
    async fn admit(
        &self,
        policy: &Policy,
        key: &KeyDigest,
        name: &str,
        rule: &Rule,
    ) -> (Verdict, Option<StoreCall>) {
        let bucket = BucketRef { key, name };
        let asked_at = Instant::now();
        // In shadow mode every request is counted, so none may be answered without the store.
        let cached = if rule.mode() == Mode::Enforce {
            self.deny_cache.lookup(bucket, rule, asked_at)
        } else {
            Lookup::Miss
        };
        if let Lookup::Deny(quota) = cached {
            policy.base.metrics.deny_cache_hit();
            return (Verdict::Denied(quota), None);
        }
        // Taken before the store is asked, so a reset served meanwhile keeps its answer out of
        // the cache.
        let asked = self.deny_cache.asking(asked_at);
        let result = self.store.check(bucket, rule).await;
        // Timed from before the cache lookup (well under a microsecond): one clock read less.
        let took = asked_at.elapsed();
        policy.base.metrics.store_call(took, result.as_ref().err());
        let call = StoreCall {
            started: asked_at,
            took,
        };
        let verdict = match result {
            Ok(outcome) => self.counted(bucket, rule, &outcome, cached, asked),
            Err(e) if e.fails_closed() => Verdict::FailedClosed,
            Err(e) => {
                if cached == Lookup::Recheck
                    && let Some(quota) = self.deny_cache.stale_denial(bucket, rule, Instant::now())
                {
                    return (Verdict::Denied(quota), Some(call));
                }
                self.failures.record(&e, policy.failure_mode);
                match policy.failure_mode {
                    FailureMode::Allow => Verdict::FailedOpen,
                    FailureMode::Deny => Verdict::FailedClosed,
                }
            }
        };
        (verdict, Some(call))
    }

    /// The verdict on the store's `outcome` for `bucket`, kept in the over-limit cache when it is
    /// a denial; `cached` and `asked` are what the cache said before the store was asked.
    fn counted(
        &self,
        bucket: BucketRef<'_>,
        rule: &Rule,
        outcome: &Outcome,
        cached: Lookup,
        asked: Asked,
    ) -> Verdict {
        self.failures.recovered();
        let enforce = rule.mode() == Mode::Enforce;
        let quota = Quota::new(rule, outcome, outcome.allowed || !enforce);
        let (key, name) = (bucket.key, bucket.name);
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
            self.deny_cache.insert(bucket, rule, &quota, asked);
            tracing::debug!(key = %key, bucket = name, retry_after = quota.retry_after_secs(), "rate limited");
            Verdict::Denied(quota)
        }
    }
}

impl<S> RateLimiter<S> {
    /// The plan the checks of `key` use now (the trusted header, when configured, wins).
    pub fn plan_of(&self, key: &KeyDigest) -> Option<Arc<str>> {
        self.plans.plan_of(key)
    }

    /// The policy checks start with now; hold it for as long as its buckets are used.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// The quota store.
    pub fn store(&self) -> &S {
        &self.store
    }
}

mod failures;
mod policy;
mod quota;

pub use policy::Policy;
pub use quota::MAX_QUOTA_READS;
use quota::QuotaReads;

/// What `verdict` and `subject` tell a check's span; `started` on the wall and monotonic clocks.
fn check_span<'a>(
    verdict: &Verdict,
    subject: &'a Subject<'a>,
    started: (SystemTime, Instant),
    took: Duration,
) -> CheckSpan<'a> {
    CheckSpan {
        context: subject
            .traceparent
            .map_or(TraceContext::None, TraceContext::Request),
        started,
        took,
        store: subject.store,
        bucket: subject.bucket.as_deref(),
        decision: verdict.result().label(),
        plan: subject.plan,
        cost: subject.cost,
        window: verdict.quota().map(|quota| quota.limit),
    }
}
