//! The quota endpoint's side of the limiter: its own request counted, and every bucket of the
//! caller's key read, in one store call.

use super::{Policy, RateLimiter, Table};
use crate::api_key::KeyDigest;
use crate::check::deny_cache::Lookup;
use crate::check::report::{BucketReport, QuotaReport};
use crate::check::verdict::{Quota, Verdict};
use crate::config::QUOTA_BUCKET;
use crate::policy::limit::Rule;
use crate::policy::routes::{DefaultBucket, RouteTable};
use crate::store::{BucketRef, QuotaRead, QuotaStore, StoreError};
use crate::telemetry::traces::StoreCall;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Quota reads one replica makes at once. Each reads every bucket of a key (a table's worth of
/// keys, where a check reads one), and any key string is answered (Envoy does not forward the
/// request, so no upstream checks the key): past this many in flight, a read is answered 503 at
/// once, so a flood of invented keys costs Redis no more than the same flood of checks would.
pub const MAX_QUOTA_READS: usize = 16;

/// The quota reads in flight on one replica.
#[derive(Default)]
pub struct QuotaReads(AtomicUsize);

/// One read's share of [`QuotaReads`], given back when dropped (a cancelled check included).
struct Share<'a>(&'a AtomicUsize);

impl QuotaReads {
    fn take(&self) -> Option<Share<'_>> {
        let taken = self.0.fetch_add(1, Ordering::AcqRel);
        let share = Share(&self.0);
        (taken < MAX_QUOTA_READS).then_some(share)
    }
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S: QuotaStore> RateLimiter<S> {
    /// The answer to a request of the quota endpoint by `key`, whose plan's table is `table`:
    /// 200 with every bucket, or 429 past the endpoint's own limit `rule`, or 503 when the store
    /// cannot answer, whatever `failure_mode` says (the endpoint has no upstream to fail open to),
    /// or when [`MAX_QUOTA_READS`] are in flight.
    pub(super) async fn report(
        &self,
        policy: &Policy,
        table: &Table,
        plan: Option<&str>,
        key: &KeyDigest,
        rule: &Rule,
    ) -> (Verdict, Option<StoreCall>) {
        let own = BucketRef {
            key,
            name: QUOTA_BUCKET,
        };
        let asked_at = Instant::now();
        let cached = self.deny_cache.lookup(own, rule, asked_at);
        if let Lookup::Deny(quota) = cached {
            policy.base.metrics.deny_cache_hit();
            return (Verdict::Denied(quota), None);
        }
        let Some(_share) = self.quota_reads.take() else {
            return (Verdict::FailedClosed, None);
        };
        let asked = self.deny_cache.asking(asked_at);
        let buckets = listed(&table.routes);
        let (result, call) = self.timed_read(policy, own, rule, &buckets, asked_at).await;
        let read = match result {
            Ok(read) => read,
            Err(e) => {
                // Logged as checks see it: their answers depend on failure_mode; this one does not.
                if !e.fails_closed() {
                    self.failures.record(&e, policy.failure_mode);
                }
                return (Verdict::FailedClosed, call);
            }
        };
        self.failures.recovered();
        let admitted = read.admitted.allowed;
        let own_quota = Quota::new(rule, &read.admitted, admitted);
        if !admitted {
            self.deny_cache.insert(own, rule, &own_quota, asked);
            return (Verdict::Denied(own_quota), call);
        }
        if cached == Lookup::Recheck {
            self.deny_cache.forget(own);
        }
        let buckets = buckets
            .iter()
            .zip(read.buckets)
            .map(|(&(name, rule), usage)| BucketReport::new(name, rule, usage))
            .collect();
        let report = QuotaReport {
            own: own_quota,
            plan: plan.map(str::to_owned),
            path_prefix: table.routes.prefix().to_owned(),
            buckets,
        };
        (Verdict::Reported(Box::new(report)), call)
    }
}

impl<S: QuotaStore> RateLimiter<S> {
    /// The store's read for the endpoint, timed from `asked_at` and counted like a check's call.
    async fn timed_read(
        &self,
        policy: &Policy,
        own: BucketRef<'_>,
        rule: &Rule,
        buckets: &[(&str, &Rule)],
        asked_at: Instant,
    ) -> (Result<QuotaRead, StoreError>, Option<StoreCall>) {
        let result = self.store.read_quotas(own, rule, buckets).await;
        let took = asked_at.elapsed();
        policy.base.metrics.store_call(took, result.as_ref().err());
        let call = StoreCall {
            started: asked_at,
            took,
        };
        (result, Some(call))
    }
}

/// The buckets a key has in `routes` that can be listed: every declared route, then the shared
/// bucket of undeclared requests. With `default_bucket: per_path` there is one bucket per path
/// the key has used, which no table lists: those are left out.
fn listed(routes: &RouteTable) -> Vec<(&str, &Rule)> {
    let declared = routes
        .routes()
        .iter()
        .map(|route| (&*route.id, &route.rule));
    let shared = (routes.default_bucket() == DefaultBucket::Shared)
        .then_some(("default", routes.default_rule()));
    declared.chain(shared).collect()
}
