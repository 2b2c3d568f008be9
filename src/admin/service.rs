//! The `tollgate.admin.v1.Admin` service: quotas read and reset through the store that checks use,
//! the route table as `check-config` prints it.

use super::pb::{
    self, DefaultRoute, GetQuotaRequest, ListRoutesRequest, ListRoutesResponse, Quota,
    ResetQuotaRequest, ResetQuotaResponse,
};
use crate::api_key::KeyDigest;
use crate::check::authz::{Policy, RateLimiter};
use crate::check::routes::{Bucket, DefaultBucket};
use crate::limit::{Limit, Mode, Rule};
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

    /// The digest of `api_key` and the bucket of `method` and `path`, or `None` when such a
    /// request is not rate limited.
    fn resolve<'a>(
        policy: &'a Policy,
        api_key: &str,
        method: &str,
        path: &str,
    ) -> Result<(KeyDigest, Option<Bucket<'a>>), Status> {
        if api_key.trim().is_empty() {
            return Err(Status::invalid_argument("api_key is empty"));
        }
        if method.is_empty() {
            return Err(Status::invalid_argument("method is empty"));
        }
        let bucket = policy.bucket(method, path, false).map_err(|e| {
            Status::invalid_argument(format!("path {path:?} cannot be checked: {e}"))
        })?;
        Ok((KeyDigest::of(api_key), bucket))
    }
}

#[tonic::async_trait]
impl<S: QuotaStore> pb::admin_server::Admin for AdminService<S> {
    async fn get_quota(
        &self,
        request: Request<GetQuotaRequest>,
    ) -> Result<Response<Quota>, Status> {
        let request = request.into_inner();
        let policy = self.limiter.policy();
        let (key, bucket) =
            Self::resolve(&policy, &request.api_key, &request.method, &request.path)?;
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
        }))
    }

    async fn reset_quota(
        &self,
        request: Request<ResetQuotaRequest>,
    ) -> Result<Response<ResetQuotaResponse>, Status> {
        let request = request.into_inner();
        let policy = self.limiter.policy();
        let (key, bucket) =
            Self::resolve(&policy, &request.api_key, &request.method, &request.path)?;
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
        _: Request<ListRoutesRequest>,
    ) -> Result<Response<ListRoutesResponse>, Status> {
        let policy = self.limiter.policy();
        let table = policy.routes();
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
