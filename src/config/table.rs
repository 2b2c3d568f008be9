//! Route tables as configured: the top level's, and each plan's over it, resolved into the
//! [`RouteTable`]s that checks match requests against.

use super::limit::{limit, limits};
use super::parse::choice;
use super::raw::{Checked, Problems, RawLimit, RawRoute, RawTable, Setting};
use crate::policy::limit::{Limit, Mode, Rule, RuleError};
use crate::policy::routes::{DECLARABLE_METHODS, DefaultBucket, Route, RouteTable, Template};
use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::time::Duration;

/// The name under which the bounds of every table's default rule are gathered: undeclared
/// requests of a key share buckets (`default`, or one per path) whatever its plan.
const DEFAULT_BUCKETS: &str = "*";

/// The contract's default: 60 requests per 60 s.
const DEFAULT_LIMIT: Limit = Limit {
    requests: NonZeroU32::new(60).unwrap(),
    window: Duration::from_secs(60),
};

/// The top-level table and each plan's, as read.
pub(super) struct Tables {
    top: TableSpec,
    plans: BTreeMap<String, TableSpec>,
}

impl Tables {
    /// Reads the top-level table, then each plan over it.
    pub(super) fn read(
        top: RawTable,
        plans: Setting<BTreeMap<String, Checked<RawTable>>>,
        problems: &mut Problems,
    ) -> Self {
        let top = TableSpec::read("", top, None, problems);
        let mut tables = BTreeMap::new();
        for (name, plan) in plans
            .and_then(|p| p.take("plans", problems))
            .unwrap_or_default()
        {
            let at = format!("plans.{name}");
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                problems.add(
                    &at,
                    "a plan name is 1 to 64 letters, digits, '-', '_' or '.'",
                );
            }
            if let Some(plan) = plan.take(&at, problems) {
                tables.insert(name, TableSpec::read(&at, plan, Some(&top), problems));
            }
        }
        Self { top, plans: tables }
    }

    /// The top-level route table and each plan's, under `path_prefix`.
    pub(super) fn resolve(
        &self,
        path_prefix: &str,
        default_bucket: DefaultBucket,
    ) -> (RouteTable, BTreeMap<String, RouteTable>) {
        // One bucket per route serves every table's rule for it (a key keeps its counts when it
        // changes plan), so each rule keeps as many times, as long, as the largest of them needs.
        let mut bounds: HashMap<&str, (u32, Duration)> = HashMap::new();
        for spec in std::iter::once(&self.top).chain(self.plans.values()) {
            let rules = spec
                .routes
                .iter()
                .map(|r| (&*r.route.id, &r.route.rule))
                .chain([(DEFAULT_BUCKETS, &spec.default_rule)]);
            for (name, rule) in rules {
                let bound = bounds.entry(name).or_default();
                bound.0 = bound.0.max(rule.capacity());
                bound.1 = bound.1.max(rule.longest_window());
            }
        }
        let shared = |name: &str, rule: &Rule| {
            let (capacity, retain) = bounds[name];
            rule.sharing(capacity, retain)
        };
        let table = |spec: &TableSpec| {
            let routes = spec
                .routes
                .iter()
                .map(|r| Route {
                    rule: shared(&r.route.id, &r.route.rule),
                    ..r.route.clone()
                })
                .collect();
            RouteTable::new(
                path_prefix.to_owned(),
                routes,
                shared(DEFAULT_BUCKETS, &spec.default_rule),
                default_bucket,
            )
        };
        let plans = self
            .plans
            .iter()
            .map(|(name, spec)| (name.clone(), table(spec)))
            .collect();
        (table(&self.top), plans)
    }
}

/// A route table as configured: the top level's, or a plan's merged over it.
struct TableSpec {
    routes: Vec<RouteSpec>,
    default_rule: Rule,
    mode: Mode,
}

/// A route and whether its mode was written on it (otherwise it follows its table's).
struct RouteSpec {
    route: Route,
    own_mode: bool,
}

impl TableSpec {
    /// Reads the table at `at` (`""` for the top level). A plan (`base` given) inherits what it
    /// does not set: the base's windows for undeclared routes, every base route it does not
    /// declare, in the plan's mode unless the route sets its own, and the cost of a base route it
    /// declares without one. It may declare no route the base does not: see [`route`]. After a
    /// problem the table is
    /// still read as far as it goes, with defaults in place of what is wrong, so that the
    /// problems of its routes and of the plans over it are reported too.
    fn read(at: &str, raw: RawTable, base: Option<&TableSpec>, problems: &mut Problems) -> Self {
        let prefixed = |key: &str| {
            if at.is_empty() {
                key.to_owned()
            } else {
                format!("{at}.{key}")
            }
        };
        let inherited = base.map_or(Mode::Enforce, |b| b.mode);
        let mode = choice(raw.mode, &prefixed("mode"), inherited, problems).unwrap_or(inherited);
        let default_limits = read_default_limits(
            raw.default_limit,
            raw.default_limits,
            base,
            &prefixed,
            problems,
        );
        let items = match raw.routes {
            None => Vec::new(),
            Some(items) => items
                .take(&prefixed("routes"), problems)
                .unwrap_or_default(),
        };
        let mut routes = read_routes(items, &prefixed, mode, base, problems);
        let default_limits = default_limits.unwrap_or_else(|| vec![DEFAULT_LIMIT]);
        let default_rule = Rule::new(default_limits, 1, mode)
            .map_err(|e| problems.add(&prefixed("default_limits"), e))
            .unwrap_or_else(|_| Rule::single(DEFAULT_LIMIT));
        if let Some(base) = base {
            inherit_routes(&mut routes, base, mode);
        }
        Self {
            routes,
            default_rule,
            mode,
        }
    }
}

/// A route read at `at`, with its location named by method and path for later problems.
struct LocatedRoute {
    spec: RouteSpec,
    at: String,
}

/// `default_limit` or `default_limits` (not both); without either, the base table's (or the
/// built-in default).
fn read_default_limits(
    one: Setting<RawLimit>,
    list: Setting<Vec<Checked<RawLimit>>>,
    base: Option<&TableSpec>,
    prefixed: &impl Fn(&str) -> String,
    problems: &mut Problems,
) -> Option<Vec<Limit>> {
    match (one, list) {
        (Some(_), Some(_)) => {
            problems.add(
                &prefixed("default_limits"),
                "give default_limit or default_limits, not both",
            );
            None
        }
        (Some(one), None) => {
            let at = prefixed("default_limit");
            one.take(&at, problems)
                .and_then(|l| limit(l, &at, problems))
                .map(|l| vec![l])
        }
        (None, Some(list)) => limits(list, &prefixed("default_limits"), problems),
        (None, None) => {
            Some(base.map_or_else(|| vec![DEFAULT_LIMIT], |b| b.default_rule.limits().to_vec()))
        }
    }
}

/// The routes of a table, each problem named at its place; a route declared twice is refused.
fn read_routes(
    items: Vec<Checked<RawRoute>>,
    prefixed: &impl Fn(&str) -> String,
    mode: Mode,
    base: Option<&TableSpec>,
    problems: &mut Problems,
) -> Vec<RouteSpec> {
    let mut routes: Vec<RouteSpec> = Vec::new();
    let mut at_of: Vec<String> = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let at = prefixed(&format!("routes[{index}]"));
        let Some(raw_route) = item.take(&at, problems) else {
            continue;
        };
        let Some(located) = route(raw_route, &at, mode, base, problems) else {
            continue;
        };
        let new = &located.spec.route;
        if let Some(first) = routes
            .iter()
            .position(|r| r.route.method == new.method && r.route.template == new.template)
        {
            problems.add(
                &located.at,
                format!("duplicates {}: both match the same requests", at_of[first]),
            );
            continue;
        }
        at_of.push(located.at);
        routes.push(located.spec);
    }
    routes
}

/// Adds the base's routes that a plan does not declare, in the plan's mode unless their own.
fn inherit_routes(routes: &mut Vec<RouteSpec>, base: &TableSpec, mode: Mode) {
    for inherited in &base.routes {
        let declared = routes.iter().any(|r| {
            r.route.method == inherited.route.method && r.route.template == inherited.route.template
        });
        if !declared {
            let rule = if inherited.own_mode {
                inherited.route.rule.clone()
            } else {
                inherited.route.rule.with_mode(mode)
            };
            routes.push(RouteSpec {
                route: Route::new(
                    &inherited.route.method,
                    inherited.route.template.clone(),
                    rule,
                ),
                own_mode: inherited.own_mode,
            });
        }
    }
}

/// Reads a route of a table in mode `table_mode`. A plan's route (`base` given) must be one the
/// top-level table declares (same method and template): a template of the plan's own would count
/// the same request in another bucket for keys on the plan than for the others, and a client that
/// alternates would get both quotas. Without a `cost` it keeps the top-level route's, which
/// describes what a request of the route costs whatever the plan.
fn route(
    raw: RawRoute,
    at: &str,
    table_mode: Mode,
    base: Option<&TableSpec>,
    problems: &mut Problems,
) -> Option<LocatedRoute> {
    let (method_given, path_given) = (raw.method.is_some(), raw.path.is_some());
    let method = raw
        .method
        .and_then(|m| m.take(&format!("{at}.method"), problems));
    let path = raw
        .path
        .and_then(|p| p.take(&format!("{at}.path"), problems));
    let at = format!(
        "{at} ({} {})",
        method.as_deref().unwrap_or("?"),
        path.as_deref().unwrap_or("?")
    );
    let method = route_method(method, method_given, &at, problems);
    let template = route_template(path, path_given, &at, problems);
    let base_route = match (base, &method, &template) {
        (Some(base), Some(method), Some(template)) => {
            base_route(base, method, template, &at, problems)
        }
        _ => None,
    };
    let limits = route_limits(raw.limit, raw.limits, &at, problems);
    let inherited_cost = base_route
        .filter(|_| raw.cost.is_none())
        .map(|r| r.route.rule.cost());
    let cost = route_cost(raw.cost, inherited_cost, &at, problems);
    let own_mode = raw.mode.is_some();
    let mode = choice(raw.mode, &format!("{at}.mode"), table_mode, problems);
    let rule = Rule::new(limits?, cost?, mode?)
        .map_err(|e| match (e, inherited_cost) {
            (e @ RuleError::CostTooHigh { .. }, Some(_)) => problems.add(
                &at,
                format!(
                    "{e}; the cost is the top-level route's: give this route a cost of its own"
                ),
            ),
            (e, _) => problems.add(&at, e),
        })
        .ok()?;
    Some(LocatedRoute {
        spec: RouteSpec {
            route: Route::new(&method?, template?, rule),
            own_mode,
        },
        at,
    })
}

/// A route's `cost`: its own, else the top-level route's (for a plan's route), else 1.
fn route_cost(
    setting: Setting<u64>,
    inherited: Option<u32>,
    at: &str,
    problems: &mut Problems,
) -> Option<u32> {
    match setting {
        None => Some(inherited.unwrap_or(1)),
        Some(cost) => cost.take(&format!("{at}.cost"), problems).and_then(|c| {
            u32::try_from(c)
                .map_err(|_| {
                    problems.add(
                        &format!("{at}.cost"),
                        format!("{c} is larger than any window"),
                    )
                })
                .ok()
        }),
    }
}

/// A route's path, parsed into a template.
fn route_template(
    path: Option<String>,
    given: bool,
    at: &str,
    problems: &mut Problems,
) -> Option<Template> {
    match path {
        None => {
            if !given {
                problems.add(at, "path is missing");
            }
            None
        }
        Some(p) => Template::parse(&p).map_err(|e| problems.add(at, e)).ok(),
    }
}

/// A route's method, if it is one a route may declare.
fn route_method(
    method: Option<String>,
    given: bool,
    at: &str,
    problems: &mut Problems,
) -> Option<String> {
    match method {
        None => {
            if !given {
                problems.add(at, "method is missing");
            }
            None
        }
        Some(m) if DECLARABLE_METHODS.contains(&m.to_ascii_uppercase().as_str()) => Some(m),
        Some(m) => {
            let hint = match m.to_ascii_uppercase().as_str() {
                "HEAD" => "HEAD is checked as GET; declare GET",
                "OPTIONS" => "OPTIONS (CORS preflight) is never counted",
                _ => "expected one of GET, POST, PUT, PATCH, DELETE",
            };
            problems.add(at, format!("method {m:?} cannot be declared: {hint}"));
            None
        }
    }
}

/// The top-level route a plan's route changes; a plan may not declare a route of its own, so that
/// a request is counted in one bucket whatever its plan.
fn base_route<'a>(
    base: &'a TableSpec,
    method: &str,
    template: &Template,
    at: &str,
    problems: &mut Problems,
) -> Option<&'a RouteSpec> {
    let method = method.to_ascii_uppercase();
    let found = base
        .routes
        .iter()
        .find(|r| r.route.method == method && r.route.template == *template);
    if found.is_none() {
        problems.add(
            at,
            format!(
                "the top-level routes do not declare {method} {template}; a plan may only change the limits of top-level routes, so that a request is counted in one bucket whatever its plan: declare {method} {template} under the top-level routes too, with the limits of keys on no plan"
            ),
        );
    }
    found
}

/// A route's `limit` or `limits` (one of them, not both).
fn route_limits(
    one: Setting<RawLimit>,
    list: Setting<Vec<Checked<RawLimit>>>,
    at: &str,
    problems: &mut Problems,
) -> Option<Vec<Limit>> {
    match (one, list) {
        (None, None) => {
            problems.add(at, "limit (or limits) is missing");
            None
        }
        (Some(_), Some(_)) => {
            problems.add(at, "give limit or limits, not both");
            None
        }
        (Some(one), None) => {
            let at = format!("{at}.limit");
            one.take(&at, problems)
                .and_then(|l| limit(l, &at, problems))
                .map(|l| vec![l])
        }
        (None, Some(list)) => limits(list, &format!("{at}.limits"), problems),
    }
}

#[cfg(test)]
mod tests;
