//! The `tollgate.admin.v1.Admin` service: quotas read and reset through the store that checks use,
//! the route table as `check-config` prints it.

use super::pb::{
    self, DefaultRoute, GetQuotaRequest, ListRoutesRequest, ListRoutesResponse, Quota,
    ResetQuotaRequest, ResetQuotaResponse,
};
use crate::api_key::KeyDigest;
use crate::check::authz::{Policy, RateLimiter};
use crate::check::routes::{Bucket, DefaultBucket};
use crate::limit::Limit;
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
        let Some(Bucket { name, limit, .. }) = bucket else {
            return Ok(Response::new(Quota::default()));
        };
        let bucket = BucketRef {
            key: &key,
            name: &name,
        };
        let usage = self
            .limiter
            .store()
            .peek(bucket, limit)
            .await
            .map_err(unavailable)?;
        Ok(Response::new(Quota {
            limited: true,
            bucket: name.to_string(),
            limit: limit.requests.get(),
            window_ms: window_ms(limit),
            used: usage.used,
            remaining: usage.remaining,
            reset_unix_ms: usage.reset_micros.div_ceil(1000),
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
        let Some(Bucket { name, limit, .. }) = bucket else {
            return Ok(Response::new(ResetQuotaResponse::default()));
        };
        let bucket = BucketRef {
            key: &key,
            name: &name,
        };
        let cleared = self
            .limiter
            .store()
            .reset(bucket, limit)
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
                limit: route.limit.requests.get(),
                window_ms: window_ms(route.limit),
            })
            .collect();
        let bucketing = match table.default_bucket() {
            DefaultBucket::Shared => pb::DefaultBucket::Shared,
            DefaultBucket::PerPath => pb::DefaultBucket::PerPath,
        };
        Ok(Response::new(ListRoutesResponse {
            routes,
            default_route: Some(DefaultRoute {
                path: format!("{prefix}/**"),
                limit: table.default_limit().requests.get(),
                window_ms: window_ms(table.default_limit()),
                bucketing: bucketing.into(),
            }),
        }))
    }
}

fn window_ms(limit: Limit) -> u64 {
    limit.window.as_millis() as u64
}

/// A store that cannot answer is a condition the operator may retry.
fn unavailable(error: StoreError) -> Status {
    Status::unavailable(format!("the rate-limit store cannot answer: {error}"))
}
