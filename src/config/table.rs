//! Route tables as configured: the top level's, and each plan's over it, resolved into the
//! [`RouteTable`]s that checks match requests against.

use super::parse::choice;
use super::raw::{Checked, Problems, RawLimit, RawRoute, RawTable, Setting};
use crate::check::routes::{DECLARABLE_METHODS, DefaultBucket, Route, RouteTable, Template};
use crate::limit::{Limit, Mode, Rule, RuleError, parse_window};
use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::time::Duration;

/// The largest limit accepted: a bucket keeps one time per slot of its largest window.
const MAX_REQUESTS: u64 = 100_000;

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
        let default_limits = match (raw.default_limit, raw.default_limits) {
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
        };
        let mut routes: Vec<RouteSpec> = Vec::new();
        let mut at_of: Vec<String> = Vec::new();
        let items = match raw.routes {
            None => Vec::new(),
            Some(items) => items
                .take(&prefixed("routes"), problems)
                .unwrap_or_default(),
        };
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
        let default_limits = default_limits.unwrap_or_else(|| vec![DEFAULT_LIMIT]);
        let default_rule = Rule::new(default_limits, 1, mode)
            .map_err(|e| problems.add(&prefixed("default_limits"), e))
            .unwrap_or_else(|_| Rule::single(DEFAULT_LIMIT));
        if let Some(base) = base {
            // The base's routes this plan does not declare, in the plan's mode unless their own.
            for inherited in &base.routes {
                let declared = routes.iter().any(|r| {
                    r.route.method == inherited.route.method
                        && r.route.template == inherited.route.template
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
    let method = match method {
        None => {
            if !method_given {
                problems.add(&at, "method is missing");
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
            problems.add(&at, format!("method {m:?} cannot be declared: {hint}"));
            None
        }
    };
    let template = match path {
        None => {
            if !path_given {
                problems.add(&at, "path is missing");
            }
            None
        }
        Some(p) => Template::parse(&p).map_err(|e| problems.add(&at, e)).ok(),
    };
    let base_route = match (base, &method, &template) {
        (Some(base), Some(method), Some(template)) => {
            let method = method.to_ascii_uppercase();
            let found = base
                .routes
                .iter()
                .find(|r| r.route.method == method && r.route.template == *template);
            if found.is_none() {
                problems.add(
                    &at,
                    format!(
                        "the top-level routes do not declare {method} {template}; a plan may only change the limits of top-level routes, so that a request is counted in one bucket whatever its plan: declare {method} {template} under the top-level routes too, with the limits of keys on no plan"
                    ),
                );
            }
            found
        }
        _ => None,
    };
    let limits = match (raw.limit, raw.limits) {
        (None, None) => {
            problems.add(&at, "limit (or limits) is missing");
            None
        }
        (Some(_), Some(_)) => {
            problems.add(&at, "give limit or limits, not both");
            None
        }
        (Some(one), None) => {
            let at = format!("{at}.limit");
            one.take(&at, problems)
                .and_then(|l| limit(l, &at, problems))
                .map(|l| vec![l])
        }
        (None, Some(list)) => limits(list, &format!("{at}.limits"), problems),
    };
    let inherited_cost = base_route
        .filter(|_| raw.cost.is_none())
        .map(|r| r.route.rule.cost());
    let cost = match raw.cost {
        None => Some(inherited_cost.unwrap_or(1)),
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
    };
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

fn limits(
    list: Checked<Vec<Checked<RawLimit>>>,
    at: &str,
    problems: &mut Problems,
) -> Option<Vec<Limit>> {
    let items = list.take(at, problems)?;
    if items.is_empty() {
        problems.add(at, "must list at least one { requests, window }");
        return None;
    }
    let mut limits = Vec::new();
    let mut complete = true;
    for (index, item) in items.into_iter().enumerate() {
        let at = format!("{at}[{index}]");
        match item
            .take(&at, problems)
            .and_then(|l| limit(l, &at, problems))
        {
            Some(limit) => limits.push(limit),
            None => complete = false,
        }
    }
    complete.then_some(limits)
}

fn limit(raw: RawLimit, at: &str, problems: &mut Problems) -> Option<Limit> {
    let requests_given = raw.requests.is_some();
    let requests = match raw
        .requests
        .and_then(|r| r.take(&format!("{at}.requests"), problems))
    {
        None => {
            if !requests_given {
                problems.add(at, "requests is missing");
            }
            None
        }
        Some(0) => {
            problems.add(at, "requests is 0; a limit must admit at least one request");
            None
        }
        Some(n) if n <= MAX_REQUESTS => NonZeroU32::new(n as u32),
        Some(n) => {
            problems.add(
                at,
                format!("requests must be a whole number from 1 to {MAX_REQUESTS}, not {n}"),
            );
            None
        }
    };
    let window = match raw.window {
        None => {
            problems.add(at, "window is missing");
            None
        }
        Some(text) => text
            .take(&format!("{at}.window"), problems)
            .and_then(|text| parse_window(&text).map_err(|e| problems.add(at, e)).ok()),
    };
    Some(Limit {
        requests: requests?,
        window: window?,
    })
}

#[cfg(test)]
mod policy_tests {
    use super::super::{Config, Overrides};
    use crate::check::response::HeaderStyle;
    use crate::limit::Mode;

    fn parse(yaml: &str) -> Result<Config, Vec<String>> {
        Config::from_yaml(yaml, "test", &Overrides::default()).map_err(|e| e.problems)
    }

    const POLICY: &str = r#"
mode: shadow
default_limits: [{ requests: 100, window: 1h }, { requests: 10, window: 1s }]
rate_limit_headers: both
plan_header: x-plan
routes:
  - { method: GET, path: /a, limit: { requests: 5, window: 1s } }
  - { method: POST, path: /bulk, cost: 5, mode: enforce, limits: [{ requests: 10, window: 1s }, { requests: 50, window: 1m }] }
plans:
  pro:
    mode: enforce
    default_limit: { requests: 1000, window: 1h }
    routes:
      - { method: GET, path: /a, limit: { requests: 50, window: 1s } }
      - { method: POST, path: /bulk, limits: [{ requests: 100, window: 1s }, { requests: 500, window: 1m }] }
  trial: {}
  batch:
    routes:
      - { method: POST, path: /bulk, cost: 1, limit: { requests: 10, window: 1s } }
"#;

    #[test]
    fn windows_costs_modes_and_plans_resolve_with_inheritance() {
        let config = parse(POLICY).unwrap();
        assert_eq!(config.rate_limit_headers, HeaderStyle::Both);
        assert_eq!(config.plan_header.as_deref(), Some("x-plan"));
        let rule = |table: &crate::check::routes::RouteTable, name: &str| {
            table.rule_of(name).map(ToString::to_string)
        };
        let top = &config.routes;
        assert_eq!(
            top.default_rule().to_string(),
            "10 requests / 1s + 100 requests / 3600s, shadow"
        );
        assert_eq!(rule(top, "GET /a").unwrap(), "5 requests / 1s, shadow");
        assert_eq!(
            rule(top, "POST /bulk").unwrap(),
            "10 requests / 1s + 50 requests / 60s, cost 5"
        );

        let pro = &config.plans["pro"];
        assert_eq!(rule(pro, "GET /a").unwrap(), "50 requests / 1s");
        // Named without a cost: the plan's limits at the top-level route's cost.
        assert_eq!(
            rule(pro, "POST /bulk").unwrap(),
            "100 requests / 1s + 500 requests / 60s, cost 5"
        );
        // A cost of its own wins.
        let batch = &config.plans["batch"];
        assert_eq!(
            rule(batch, "POST /bulk").unwrap(),
            "10 requests / 1s, shadow"
        );
        // Not named by the plan: the top-level limit, in the plan's mode.
        assert_eq!(rule(batch, "GET /a").unwrap(), "5 requests / 1s, shadow");
        assert_eq!(pro.default_rule().to_string(), "1000 requests / 3600s");
        // An empty plan is the top-level table.
        let trial = &config.plans["trial"];
        assert_eq!(trial.default_rule(), top.default_rule());
        assert_eq!(rule(trial, "GET /a"), rule(top, "GET /a"));
        assert_eq!(trial.default_rule().mode(), Mode::Shadow);

        let printed = config.to_string();
        for expected in [
            "plan pro:",
            "plan trial:",
            "/v1/bulk",
            "cost 5",
            "shadow",
            "plan header:     x-plan",
        ] {
            assert!(printed.contains(expected), "{expected:?} in\n{printed}");
        }
    }

    #[test]
    fn every_policy_problem_is_named_with_its_place() {
        let problems = parse(
            r#"
mode: sometimes
default_limit: { requests: 1, window: 1s }
default_limits: [{ requests: 2, window: 1s }]
rate_limit_headers: draft
plan_header: x-api-key
routes:
  - { method: GET, path: /a, limit: { requests: 5, window: 1s }, limits: [{ requests: 5, window: 1s }] }
  - { method: GET, path: /b, cost: 0, limit: { requests: 5, window: 1s } }
  - { method: GET, path: /c, cost: 6, limits: [{ requests: 5, window: 1s }, { requests: 50, window: 1m }] }
  - { method: GET, path: /d, limits: [{ requests: 5, window: 60s }, { requests: 9, window: 1m }] }
  - { method: GET, path: /e, limits: [] }
  - { method: GET, path: /f, mode: dry, limit: { requests: 5, window: 1s } }
plans:
  "bad name!": {}
  pro: { routes: [{ method: GET, path: /g }], colour: blue }
"#,
        )
        .unwrap_err();
        for expected in [
            "mode: unknown variant `sometimes`",
            "default_limits: give default_limit or default_limits, not both",
            "rate_limit_headers: unknown variant `draft`",
            "plan_header: must differ from api_key_header",
            "routes[0] (GET /a): give limit or limits, not both",
            "routes[1] (GET /b): cost must be at least 1",
            "routes[2] (GET /c): cost 6 is larger than the 5 requests / 1s limit",
            "routes[3] (GET /d): two limits have the same window 60s",
            "routes[4] (GET /e).limits: must list at least one",
            "routes[5] (GET /f).mode: unknown variant `dry`",
            "plans.bad name!: a plan name is",
            "plans.pro: unknown key colour",
            "plans.pro.routes[0] (GET /g): limit (or limits) is missing",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "{expected:?} not in {problems:#?}"
            );
        }
    }

    #[test]
    fn a_plan_route_the_top_level_does_not_declare_is_refused() {
        // The issue's example: with the plan header, /campaigns/archived would have been counted
        // in a bucket of its own, without it in GET /campaigns/:id.
        let problems = parse(
            r#"
routes:
  - { method: GET, path: /campaigns/:id, limit: { requests: 120, window: 60s } }
plans:
  pro:
    routes:
      - { method: GET, path: /campaigns/:cid, limit: { requests: 240, window: 60s } }
      - { method: GET, path: /campaigns/archived, limit: { requests: 100, window: 60s } }
      - { method: post, path: /campaigns/:id, limit: { requests: 10, window: 60s } }
  basic:
    routes:
      - { method: GET, path: /reports, limit: { requests: 5, window: 0s } }
"#,
        )
        .unwrap_err();
        let expected = [
            "plans.basic.routes[0] (GET /reports): the top-level routes do not declare GET /reports; a plan may only change the limits of top-level routes",
            "plans.basic.routes[0] (GET /reports).limit: window \"0s\" is zero",
            "plans.pro.routes[1] (GET /campaigns/archived): the top-level routes do not declare GET /campaigns/archived; a plan may only change the limits of top-level routes, so that a request is counted in one bucket whatever its plan: declare GET /campaigns/archived under the top-level routes too, with the limits of keys on no plan",
            "plans.pro.routes[2] (post /campaigns/:id): the top-level routes do not declare POST /campaigns/:id",
        ];
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
        for expected in expected {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "{expected:?} not in {problems:#?}"
            );
        }
    }

    #[test]
    fn an_inherited_cost_a_plan_limit_cannot_admit_is_named() {
        let problems = parse(
            r#"
routes:
  - { method: POST, path: /bulk, cost: 5, limit: { requests: 50, window: 60s } }
plans:
  small:
    routes:
      - { method: POST, path: /bulk, limit: { requests: 3, window: 1s } }
  restated:
    routes:
      - { method: POST, path: /bulk, cost: 1, limit: { requests: 3, window: 1s } }
"#,
        )
        .unwrap_err();
        assert_eq!(
            problems,
            [
                "plans.small.routes[0] (POST /bulk): cost 5 is larger than the 3 requests / 1s limit, which could never admit a request; the cost is the top-level route's: give this route a cost of its own"
            ]
        );
    }
}
