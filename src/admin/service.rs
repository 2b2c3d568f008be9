//! The `tollgate.admin.v1.Admin` service: quotas read and reset through the store that checks use,
//! the route table as `check-config` prints it.

use super::pb::{
    self, DefaultRoute, GetPlanRequest, GetQuotaRequest, ListRoutesRequest, ListRoutesResponse,
    PlanAssignment, Quota, ResetQuotaRequest, ResetQuotaResponse, SetPlanRequest,
};
use crate::api_key::{ApiKey, KeyDigest};
use crate::check::authz::{Policy, RateLimiter};
use crate::policy::limit::{Limit, Mode, Rule};
use crate::policy::routes::{Bucket, DefaultBucket};
use crate::store::{BucketRef, QuotaStore, StoreError};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Answers admin calls over the limiter that also answers checks.
pub struct AdminService<S> {
    limiter: Arc<RateLimiter<S>>,
}

impl<S> AdminService<S> {
    /// Serves `limiter`'s routes and store.
    pub fn new(limiter: Arc<RateLimiter<S>>) -> Self {
        Self { limiter }
    }

    /// The digest of `api_key`, its plan on this replica, and the bucket of `method` and `path`
    /// in that plan's table, or `None` when such a request is not rate limited.
    fn resolve<'a>(
        &self,
        policy: &'a Policy,
        api_key: &str,
        (method, path, plan): (&str, &str, &str),
    ) -> Result<(KeyDigest, Option<&'a str>, Option<Bucket<'a>>), Status> {
        let key = digest(api_key)?;
        if method.is_empty() {
            return Err(Status::invalid_argument("method is empty"));
        }
        let plan = match plan {
            "" if policy.plans_from_header() => None,
            "" => self.limiter.plan_of(&key),
            named => Some(named.into()),
        };
        let bucket = policy
            .bucket(plan.as_deref(), method, path, false)
            .map_err(|e| {
                Status::invalid_argument(format!("path {path:?} cannot be checked: {e}"))
            })?;
        Ok((key, policy.applied_plan(plan.as_deref()), bucket))
    }
}

/// The digest of a key given in a call, read as a check reads its header: surrounding
/// whitespace (a newline pasted with the key) is trimmed, so the call reaches the bucket checks
/// use, and a key no check would count (a check answers 401 or 400) is refused rather than
/// reported as reset or re-planned.
fn digest(api_key: &str) -> Result<KeyDigest, Status> {
    match ApiKey::read(api_key.as_bytes()) {
        ApiKey::One(key) => Ok(KeyDigest::of(key)),
        ApiKey::Missing => Err(Status::invalid_argument("api_key is empty or blank")),
        ApiKey::Several => Err(Status::invalid_argument(
            "api_key holds a comma: a check reads that as several keys and counts it nowhere",
        )),
        ApiKey::Invalid => Err(Status::invalid_argument(
            "api_key must be printable ASCII without spaces inside, as checks require",
        )),
    }
}

#[tonic::async_trait]
impl<S: QuotaStore> pb::admin_server::Admin for AdminService<S> {
    async fn set_plan(
        &self,
        request: Request<SetPlanRequest>,
    ) -> Result<Response<PlanAssignment>, Status> {
        let request = request.into_inner();
        let key = digest(&request.api_key)?;
        if self.limiter.policy().plans_from_header() {
            return Err(Status::failed_precondition(
                "plan_header is configured: plans come from that header alone",
            ));
        }
        let plan = Some(request.plan.trim()).filter(|plan| !plan.is_empty());
        if let Some(plan) = plan
            && (plan.len() > 64
                || !plan
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
        {
            return Err(Status::invalid_argument(
                "a plan name is 1 to 64 letters, digits, '-', '_' or '.'",
            ));
        }
        // A store that lost every assignment gets this replica's copy back first: the change
        // would otherwise give the hash a mark, and no replica would restore it.
        if let Err(e) = self.limiter.refresh_plans().await {
            tracing::debug!(error = %e, "plan assignments not read before the change");
        }
        self.limiter
            .store()
            .set_plan(&key, plan)
            .await
            .map_err(unavailable)?;
        // This replica at once; the others within PLAN_REFRESH.
        if let Err(e) = self.limiter.refresh_plans().await {
            tracing::warn!(error = %e, "plan set, but this replica could not read it back yet");
        }
        let policy = self.limiter.policy();
        let assigned = assignment(&policy, plan.map(str::to_owned));
        tracing::info!(key = %key, plan = plan.unwrap_or("none"), known = assigned.known, "plan set through the admin API");
        Ok(Response::new(assigned))
    }

    async fn get_plan(
        &self,
        request: Request<GetPlanRequest>,
    ) -> Result<Response<PlanAssignment>, Status> {
        let key = digest(&request.into_inner().api_key)?;
        let plan = self
            .limiter
            .store()
            .get_plan(&key)
            .await
            .map_err(unavailable)?;
        Ok(Response::new(assignment(&self.limiter.policy(), plan)))
    }

    async fn get_quota(
        &self,
        request: Request<GetQuotaRequest>,
    ) -> Result<Response<Quota>, Status> {
        let request = request.into_inner();
        let policy = self.limiter.policy();
        let (key, plan, bucket) = self.resolve(
            &policy,
            &request.api_key,
            (&request.method, &request.path, &request.plan),
        )?;
        let Some(Bucket { name, rule, .. }) = bucket else {
            return Ok(Response::new(Quota::default()));
        };
        let bucket = BucketRef {
            key: &key,
            name: &name,
        };
        let usage = self
            .limiter
            .store()
            .peek(bucket, rule)
            .await
            .map_err(unavailable)?;
        let windows: Vec<pb::Window> = rule
            .limits()
            .iter()
            .zip(&usage.windows)
            .map(|(limit, w)| pb::Window {
                limit: limit.requests.get(),
                window_ms: window_ms(*limit),
                used: w.used,
                remaining: w.remaining,
                reset_unix_ms: w.reset_micros.div_ceil(1000),
            })
            .collect();
        // The window an admitted request's headers would describe.
        let headline = windows
            .iter()
            .min_by_key(|w| (w.remaining, std::cmp::Reverse(w.reset_unix_ms)))
            .cloned()
            .unwrap_or_default();
        Ok(Response::new(Quota {
            limited: true,
            bucket: name.to_string(),
            limit: headline.limit,
            window_ms: headline.window_ms,
            used: headline.used,
            remaining: headline.remaining,
            reset_unix_ms: headline.reset_unix_ms,
            windows,
            cost: rule.cost(),
            mode: mode(rule).into(),
            plan: plan.unwrap_or_default().to_owned(),
        }))
    }

    async fn reset_quota(
        &self,
        request: Request<ResetQuotaRequest>,
    ) -> Result<Response<ResetQuotaResponse>, Status> {
        let request = request.into_inner();
        let policy = self.limiter.policy();
        let (key, _, bucket) = self.resolve(
            &policy,
            &request.api_key,
            (&request.method, &request.path, &request.plan),
        )?;
        let Some(Bucket { name, rule, .. }) = bucket else {
            return Ok(Response::new(ResetQuotaResponse::default()));
        };
        let bucket = BucketRef {
            key: &key,
            name: &name,
        };
        let cleared = self
            .limiter
            .store()
            .reset(bucket, rule)
            .await
            .map_err(unavailable)?;
        // This replica at once; the others stop trusting their entries within deny_cache::TRUST.
        self.limiter.deny_cache().forget(bucket);
        tracing::info!(key = %key, bucket = &*name, cleared, "quota reset through the admin API");
        Ok(Response::new(ResetQuotaResponse {
            limited: true,
            bucket: name.to_string(),
            cleared,
        }))
    }

    async fn list_routes(
        &self,
        request: Request<ListRoutesRequest>,
    ) -> Result<Response<ListRoutesResponse>, Status> {
        let policy = self.limiter.policy();
        let plan = request.into_inner().plan;
        let table = policy.routes(Some(plan.as_str()).filter(|p| !p.is_empty()));
        let prefix = table.prefix();
        let routes = table
            .routes()
            .iter()
            .map(|route| pb::Route {
                method: route.method.clone(),
                path: format!("{prefix}{}", route.template),
                bucket: route.id.to_string(),
                limit: route.rule.limits()[0].requests.get(),
                window_ms: window_ms(route.rule.limits()[0]),
                limits: limits(&route.rule),
                cost: route.rule.cost(),
                mode: mode(&route.rule).into(),
            })
            .collect();
        let bucketing = match table.default_bucket() {
            DefaultBucket::Shared => pb::DefaultBucket::Shared,
            DefaultBucket::PerPath => pb::DefaultBucket::PerPath,
        };
        let default = table.default_rule();
        Ok(Response::new(ListRoutesResponse {
            routes,
            default_route: Some(DefaultRoute {
                path: format!("{prefix}/**"),
                limit: default.limits()[0].requests.get(),
                window_ms: window_ms(default.limits()[0]),
                bucketing: bucketing.into(),
                limits: limits(default),
                cost: default.cost(),
                mode: mode(default).into(),
            }),
        }))
    }
}

/// The plan assignment of `key` as `plan` names it.
fn assignment(policy: &Policy, plan: Option<String>) -> PlanAssignment {
    let known = plan.as_deref().is_some_and(|plan| policy.knows_plan(plan));
    PlanAssignment {
        plan: plan.unwrap_or_default(),
        known,
    }
}

fn window_ms(limit: Limit) -> u64 {
    limit.window.as_millis() as u64
}

fn limits(rule: &Rule) -> Vec<pb::Limit> {
    rule.limits()
        .iter()
        .map(|&limit| pb::Limit {
            requests: limit.requests.get(),
            window_ms: window_ms(limit),
        })
        .collect()
}

fn mode(rule: &Rule) -> pb::Mode {
    match rule.mode() {
        Mode::Enforce => pb::Mode::Enforce,
        Mode::Shadow => pb::Mode::Shadow,
    }
}

/// A store that cannot answer is a condition the operator may retry.
fn unavailable(error: StoreError) -> Status {
    Status::unavailable(format!("the rate-limit store cannot answer: {error}"))
}
