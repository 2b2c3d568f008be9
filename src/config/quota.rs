//! The `quota_endpoint` section: a path that tollgate answers itself, with the caller's quotas.

use super::Config;
use super::limit::limit;
use super::raw::{Problems, RawQuotaEndpoint, Setting};
use crate::policy::limit::{Limit, Rule};
use crate::policy::path::normalize;
use crate::policy::routes::RouteRef;
use std::num::NonZeroU32;
use std::time::Duration;

/// `GET <path>` answered by tollgate with every bucket of the caller's key, counted only in a
/// bucket of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaEndpoint {
    /// The normalised path (`/v1/rate_limit`), matched exactly, query aside.
    pub path: String,
    /// The endpoint's own limit per key. Each answer reads every bucket of the key's table in
    /// one store call; the limit keeps a client from turning that read into load on Redis.
    pub rule: Rule,
}

/// The bucket the quota endpoint counts its own requests in. Route ids are `METHOD /path` and
/// undeclared buckets `default…`, so no route's bucket has this name.
pub const QUOTA_BUCKET: &str = "quota";

/// The endpoint's own limit unless `quota_endpoint.limit` says otherwise: one read a second on
/// average, enough for a client that polls, too few to load Redis.
pub const DEFAULT_QUOTA_LIMIT: Limit = Limit {
    requests: NonZeroU32::new(60).expect("60 is not zero"),
    window: Duration::from_secs(60),
};

/// Validates the section: `None` inside when absent (the endpoint is off).
pub(super) fn parse_quota_endpoint(
    section: Setting<RawQuotaEndpoint>,
    problems: &mut Problems,
) -> Option<Option<QuotaEndpoint>> {
    let Some(section) = section else {
        return Some(None);
    };
    let raw = section.take("quota_endpoint", problems)?;
    let path = match raw.path.map(|p| p.take("quota_endpoint.path", problems)) {
        None => {
            problems.add("quota_endpoint", "path is missing");
            None
        }
        Some(text) => text.and_then(|text| match normalize(&text) {
            Ok(normal) if normal == text && normal != "/" => Some(normal),
            _ => {
                problems.add(
                    "quota_endpoint.path",
                    format!("{text:?} must be a plain absolute path such as /v1/rate_limit (lower case, no trailing '/', '.', '//', '%' or query)"),
                );
                None
            }
        }),
    };
    let own = match raw.limit {
        None => Some(DEFAULT_QUOTA_LIMIT),
        Some(checked) => checked
            .take("quota_endpoint.limit", problems)
            .and_then(|raw| limit(raw, "quota_endpoint.limit", problems)),
    };
    Some(Some(QuotaEndpoint {
        path: path?,
        rule: Rule::single(own?),
    }))
}

/// Refuses an endpoint whose path a declared `GET` route also matches: that route's requests
/// would never reach it. Every plan declares the top-level routes, so those cover all tables.
pub(super) fn refuse_shadowed_route(config: &Config, problems: &mut Problems) {
    let Some(endpoint) = &config.quota_endpoint else {
        return;
    };
    if let Some(bucket) = config.routes.bucket("GET", &endpoint.path)
        && let RouteRef::Declared(_) = bucket.route
    {
        problems.add(
            "quota_endpoint.path",
            format!(
                "{} is also matched by route {:?}: give the endpoint a path no route declares",
                endpoint.path, bucket.name
            ),
        );
    }
}
