//! tollgate's Prometheus metrics: what the check path counts, and the text a scrape returns.
//!
//! Every label set is resolved once, when the route table is built ([`Metrics::for_routes`]), into
//! handles kept in arrays indexed by route and result: on the check path a count is one atomic
//! increment and a latency one lock-free histogram observation, with no map lookup and no
//! allocation. Label values come from the configuration, never from a request (no API key, no
//! raw path), so the number of series is fixed by the route table.

use crate::policy::routes::{RouteRef, RouteTable};
use crate::store::StoreError;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::time::Duration;

/// Latency buckets, in seconds, for checks and store calls: a check answered from memory takes
/// tens of microseconds, one that asks Redis about a millisecond, and the Redis timeout
/// (50 ms by default) bounds a failing one.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.0001, 0.000_25, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// How a check was answered: the `result` label of `tollgate_checks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckResult {
    /// Admitted and counted.
    Allowed,
    /// 429, whether the store or the over-limit cache said so.
    Denied,
    /// Over the limit in shadow mode: allowed and counted, not denied.
    ShadowDenied,
    /// 401: no API key under the prefix.
    Unauthenticated,
    /// 400: an unusable check request, or two API keys.
    BadRequest,
    /// Outside the prefix, or a CORS preflight: allowed without counting.
    NotLimited,
    /// The store failed and the check was allowed (`failure_mode: allow`).
    FailedOpen,
    /// The store failed and the check was answered 503 (`failure_mode: deny`).
    FailedClosed,
    /// Answered by the quota endpoint with the key's quotas (200), counted in its own bucket.
    Reported,
}

impl CheckResult {
    /// Every result, in the order of [`CheckResult::index`].
    pub const ALL: [Self; 9] = [
        Self::Allowed,
        Self::Denied,
        Self::ShadowDenied,
        Self::Unauthenticated,
        Self::BadRequest,
        Self::NotLimited,
        Self::FailedOpen,
        Self::FailedClosed,
        Self::Reported,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::ShadowDenied => "shadow_denied",
            Self::Unauthenticated => "unauthenticated",
            Self::BadRequest => "bad_request",
            Self::NotLimited => "not_limited",
            Self::FailedOpen => "failed_open",
            Self::FailedClosed => "failed_closed",
            Self::Reported => "reported",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why the ext_authz listener refused work at once: the `reason` label of
/// `tollgate_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A connection past the connections budget, closed as soon as it was accepted.
    Connections,
    /// A call past the calls budget, answered `UNAVAILABLE` without being decided.
    Calls,
    /// A call that had to wait for its message while the waiting pools were full, answered
    /// `UNAVAILABLE`.
    Waiting,
    /// A message that did not fit the bytes budget, answered 503.
    Bytes,
    /// A call that did not deliver its whole message within its read timeout.
    ReadTimeout,
}

impl Refusal {
    /// Every reason, in the order of [`Refusal::index`].
    pub const ALL: [Self; 5] = [
        Self::Connections,
        Self::Calls,
        Self::Waiting,
        Self::Bytes,
        Self::ReadTimeout,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Connections => "connections",
            Self::Calls => "calls",
            Self::Waiting => "waiting",
            Self::Bytes => "bytes",
            Self::ReadTimeout => "read_timeout",
        }
    }

    /// What is refused, for a log line.
    pub fn what(self) -> &'static str {
        match self {
            Self::Connections => "new connections (closed at once)",
            Self::Calls => "new calls (gRPC UNAVAILABLE)",
            Self::Waiting => "calls that would wait for their message (gRPC UNAVAILABLE)",
            Self::Bytes => "messages that do not fit the read buffer budget (503)",
            Self::ReadTimeout => {
                "calls whose message did not arrive in time (gRPC DEADLINE_EXCEEDED)"
            }
        }
    }
}

/// Values read when Prometheus scrapes, instead of being kept up to date on the check path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// Buckets the over-limit cache holds.
    pub deny_cache_entries: usize,
    /// Redis circuit breakers that are open: 0 or 1 for a standalone Redis, one per failing
    /// primary of a cluster.
    pub breakers_open: usize,
}

/// The registry and every metric family of one tollgate process.
pub struct Metrics {
    registry: Registry,
    checks: IntCounterVec,
    check_duration: Histogram,
    store_duration: Histogram,
    store_errors: [IntCounter; StoreError::KINDS.len()],
    deny_cache_hits: IntCounter,
    deny_cache_entries: IntGauge,
    breakers_open: IntGauge,
    /// `applied`, then `refused`.
    config_reloads: [IntCounter; 2],
    /// By [`Refusal::index`].
    refusals: [IntCounter; Refusal::ALL.len()],
    plans_restored: IntCounter,
    /// Spans exported, then spans dropped because the queue was full, then spans whose export
    /// failed.
    spans: [IntCounter; 3],
}

/// What became of a finished span: the `result` label of `tollgate_trace_spans_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanFate {
    /// Sent to the collector, which accepted it.
    Exported,
    /// Dropped at once: the export queue was full (a slow or unreachable collector).
    QueueFull,
    /// Sent, and the export failed or timed out.
    ExportFailed,
}

impl Metrics {
    /// Registers every family; `tollgate_build_info` is set at once, and every labelled counter
    /// that does not depend on the routes exists from the start at 0.
    pub fn new() -> Self {
        let registry = Registry::new();
        let family = Family(&registry);
        let checks = family.counters(
            "tollgate_checks_total",
            "Checks answered, by result and route template (route=\"none\" when no route applies).",
            &["result", "route"],
        );
        let store_errors = family.counters(
            "tollgate_store_errors_total",
            "Quota store calls that failed, by kind.",
            &["kind"],
        );
        let refusals = family.counters(
            "tollgate_refused_total",
            "Work the ext_authz listener refused at once, over its process-wide budgets, by reason.",
            &["reason"],
        );
        family.build_info();
        Self {
            spans: family.each(
                "tollgate_trace_spans_total",
                "Spans of sampled checks, by what became of them: exported, queue_full (dropped without waiting), export_failed.",
                ["exported", "queue_full", "export_failed"],
            ),
            checks,
            check_duration: family.latency(
                "tollgate_check_duration_seconds",
                "Time to decide and render one check, from its message to its answer.",
            ),
            store_duration: family.latency(
                "tollgate_store_duration_seconds",
                "Time of each quota store call, failed ones included.",
            ),
            store_errors: StoreError::KINDS.map(|kind| store_errors.with_label_values(&[kind])),
            deny_cache_hits: family.counter(
                "tollgate_deny_cache_hits_total",
                "Checks answered 429 from the over-limit cache without asking the store.",
            ),
            deny_cache_entries: family.gauge(
                "tollgate_deny_cache_entries",
                "Buckets the over-limit cache holds.",
            ),
            breakers_open: family.gauge(
                "tollgate_store_breakers_open",
                "Redis circuit breakers open (checks of their keys fail at once).",
            ),
            config_reloads: family.each(
                "tollgate_config_reloads_total",
                "Configuration reloads, by result.",
                ["applied", "refused"],
            ),
            refusals: Refusal::ALL.map(|r| refusals.with_label_values(&[r.label()])),
            plans_restored: family.counter(
                "tollgate_plans_restored_total",
                "Times this replica wrote its copy of the plan assignments back after the store lost them.",
            ),
            registry,
        }
    }

    /// The handles the check path records into, for one route table: a counter for every
    /// (route, result) pair, created at 0 so that `rate()` sees each series from the start.
    /// Build it again with a new route table; series of routes that are gone stay exported
    /// with their last value until the process ends.
    pub fn for_routes(&self, routes: &RouteTable) -> CheckMetrics {
        let row = |route: &str| {
            CheckResult::ALL.map(|result| self.checks.with_label_values(&[result.label(), route]))
        };
        let declared = routes.routes().iter().map(|r| row(&r.id)).collect();
        CheckMetrics {
            declared,
            default: row("default"),
            per_path: row("per_path"),
            quota: row("quota"),
            none: row("none"),
            check_duration: self.check_duration.clone(),
            store_duration: self.store_duration.clone(),
            store_errors: self.store_errors.clone(),
            deny_cache_hits: self.deny_cache_hits.clone(),
        }
    }

    /// Counts one configuration reload: `applied` when the new configuration took effect,
    /// `refused` when it was invalid and the running one was kept. For the hot reload, which
    /// calls it once per attempt.
    pub fn config_reloaded(&self, applied: bool) {
        self.config_reloads[usize::from(!applied)].inc();
    }

    /// Counts one restore of the plan assignments from this replica's copy.
    pub fn plans_restored(&self) {
        self.plans_restored.inc();
    }

    /// Counts `count` spans that met `fate`.
    pub fn spans(&self, fate: SpanFate, count: u64) {
        self.spans[fate as usize].inc_by(count);
    }

    /// Counts work the ext_authz listener refused.
    pub fn refused(&self, why: Refusal) {
        self.refusals[why.index()].inc();
    }

    /// The Prometheus text exposition of every metric, with the sampled gauges set from
    /// `sample` first.
    pub fn encode(&self, sample: Sample) -> String {
        self.deny_cache_entries
            .set(i64::try_from(sample.deny_cache_entries).unwrap_or(i64::MAX));
        self.breakers_open
            .set(i64::try_from(sample.breakers_open).unwrap_or(i64::MAX));
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .expect("the text format writes to memory without failing");
        String::from_utf8(text).expect("the text format is UTF-8")
    }
}

/// Creates metric families and registers each in one registry. The names and help texts are
/// constants, so a failure here is a bug in this file, not a runtime condition.
struct Family<'a>(&'a Registry);

impl Family<'_> {
    fn register<C: prometheus::core::Collector + Clone + 'static>(&self, collector: C) -> C {
        self.0
            .register(Box::new(collector.clone()))
            .expect("each family is registered once");
        collector
    }

    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    /// A family labelled `result`, one counter per value, in their order.
    fn each<const N: usize>(&self, name: &str, help: &str, results: [&str; N]) -> [IntCounter; N] {
        let family = self.counters(name, help, &["result"]);
        results.map(|result| family.with_label_values(&[result]))
    }

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help).expect("valid metric"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("valid metric"))
    }

    /// `tollgate_build_info`, set at once.
    fn build_info(&self) {
        self.gauges(
            "tollgate_build_info",
            "Always 1; the version of the running build as a label.",
            &["version"],
        )
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    }

    fn latency(&self, name: &str, help: &str) -> Histogram {
        let options = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
        self.register(Histogram::with_opts(options).expect("valid metric"))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The check path's handles, resolved for one route table (see [`Metrics::for_routes`]).
#[derive(Clone)]
pub struct CheckMetrics {
    /// One row per declared route, in the order of [`RouteTable::routes`].
    declared: Vec<[IntCounter; CheckResult::ALL.len()]>,
    default: [IntCounter; CheckResult::ALL.len()],
    per_path: [IntCounter; CheckResult::ALL.len()],
    /// Requests of the quota endpoint (`quota_endpoint`).
    quota: [IntCounter; CheckResult::ALL.len()],
    /// Checks that reached no route: outside the prefix, preflights, unreadable requests.
    none: [IntCounter; CheckResult::ALL.len()],
    check_duration: Histogram,
    store_duration: Histogram,
    store_errors: [IntCounter; StoreError::KINDS.len()],
    deny_cache_hits: IntCounter,
}

impl CheckMetrics {
    /// Counts one answered check; `route` is `None` when no route applied.
    pub fn count(&self, route: Option<RouteRef>, result: CheckResult) {
        let row = match route {
            Some(RouteRef::Declared(index)) => &self.declared[index],
            Some(RouteRef::Default) => &self.default,
            Some(RouteRef::PerPath) => &self.per_path,
            Some(RouteRef::Quota) => &self.quota,
            None => &self.none,
        };
        row[result.index()].inc();
    }

    /// Records how long one check took.
    pub fn check_took(&self, elapsed: Duration) {
        self.check_duration.observe(elapsed.as_secs_f64());
    }

    /// Records one store call: its time, and its failure if it failed.
    pub fn store_call(&self, elapsed: Duration, error: Option<&StoreError>) {
        self.store_duration.observe(elapsed.as_secs_f64());
        if let Some(error) = error {
            self.store_errors[error.kind_index()].inc();
        }
    }

    /// Counts one 429 answered by the over-limit cache.
    pub fn deny_cache_hit(&self) {
        self.deny_cache_hits.inc();
    }
}

#[cfg(test)]
mod tests;
