//! The live policy: the settings a check is decided by, which a configuration reload replaces
//! whole, and how a request finds its bucket under them.

use crate::check::request::RequestError;
use crate::config::{Config, FailureMode, QUOTA_BUCKET, QuotaEndpoint};
use crate::policy::headers::HeaderStyle;
use crate::policy::path::normalize;
use crate::policy::routes::{Bucket, RouteRef, RouteTable, canonical_method};
use crate::telemetry::metrics::{CheckMetrics, Metrics};
use std::collections::HashMap;

/// The settings a check is decided by, which a configuration reload may replace, with the
/// metric handles of its route tables.
pub struct Policy {
    /// The table of keys on no plan, or on a plan the configuration does not know.
    pub(super) base: Table,
    pub(super) plans: HashMap<Box<str>, Table>,
    pub(super) plan_header: Option<String>,
    pub(super) api_key_header: String,
    pub(super) header_style: HeaderStyle,
    pub(super) decision_metadata: bool,
    pub(super) failure_mode: FailureMode,
    pub(super) quota_endpoint: Option<QuotaEndpoint>,
}

/// A route table and the metric handles of its routes.
pub(super) struct Table {
    pub(super) routes: RouteTable,
    pub(super) metrics: CheckMetrics,
}

impl Table {
    fn of(routes: &RouteTable, metrics: &Metrics) -> Self {
        Self {
            routes: routes.clone(),
            metrics: metrics.for_routes(routes),
        }
    }
}

impl Policy {
    /// The live part of `config`, counting into `metrics`.
    pub fn of(config: &Config, metrics: &Metrics) -> Self {
        Self {
            base: Table::of(&config.routes, metrics),
            plans: config
                .plans
                .iter()
                .map(|(name, routes)| (name.as_str().into(), Table::of(routes, metrics)))
                .collect(),
            plan_header: config.plan_header.clone(),
            api_key_header: config.api_key_header.clone(),
            header_style: config.rate_limit_headers,
            decision_metadata: config.decision_metadata,
            failure_mode: config.failure_mode,
            quota_endpoint: config.quota_endpoint.clone(),
        }
    }

    /// The table of `plan`, and the plan's name when the configuration knows it.
    pub(super) fn table(&self, plan: Option<&str>) -> (&Table, Option<&str>) {
        match plan.and_then(|plan| self.plans.get_key_value(plan)) {
            Some((name, table)) => (table, Some(name)),
            None => (&self.base, None),
        }
    }

    /// Whether the configuration names `plan`.
    pub fn knows_plan(&self, plan: &str) -> bool {
        self.plans.contains_key(plan)
    }

    /// Whether plans come from a trusted request header rather than the admin API.
    pub fn plans_from_header(&self) -> bool {
        self.plan_header.is_some()
    }

    /// Whether checks read the plan assignments of the admin API: plans are declared and no
    /// header names them.
    pub fn uses_assignments(&self) -> bool {
        self.plan_header.is_none() && !self.plans.is_empty()
    }
}

impl Policy {
    /// The bucket a request with this method and path (as the client sent them) is counted in
    /// for a key on `plan`, or `None` when it is not rate limited (a CORS preflight, a path
    /// outside the prefix). `preflight`: the request carries `access-control-request-method`.
    /// Checks and the admin API both resolve requests here, so they always agree.
    pub fn bucket(
        &self,
        plan: Option<&str>,
        method: &str,
        path: &str,
        preflight: bool,
    ) -> Result<Option<Bucket<'_>>, RequestError> {
        self.bucket_in(self.table(plan).0, method, path, preflight)
    }

    /// The name of the plan whose table applies to a key on `plan`: `None` for the top-level
    /// table (no plan, or one the configuration does not know).
    pub fn applied_plan<'a>(&'a self, plan: Option<&str>) -> Option<&'a str> {
        self.table(plan).1
    }

    pub(super) fn bucket_in<'t>(
        &'t self,
        table: &'t Table,
        method: &str,
        path: &str,
        preflight: bool,
    ) -> Result<Option<Bucket<'t>>, RequestError> {
        let method = match canonical_method(method) {
            // A CORS preflight carries no key and must not cost quota. Any other OPTIONS is
            // counted as an undeclared method: some upstreams serve it with the real handler.
            "OPTIONS" if preflight => return Ok(None),
            "HEAD" => "GET",
            method => method,
        };
        let path = normalize(path).map_err(|_| RequestError::PathNotAbsolute)?;
        if let Some(endpoint) = &self.quota_endpoint
            && method == "GET"
            && endpoint.path == path
        {
            return Ok(Some(Bucket {
                name: QUOTA_BUCKET.into(),
                rule: &endpoint.rule,
                route: RouteRef::Quota,
            }));
        }
        Ok(table.routes.bucket(method, &path))
    }

    /// The route table of keys on `plan` (the top-level one for no plan or an unknown one).
    pub fn routes(&self, plan: Option<&str>) -> &RouteTable {
        &self.table(plan).0.routes
    }
}
