//! Unit tests of `config/table.rs`: route tables, plans and policies as configured.

use super::super::{Config, Overrides};
use crate::policy::headers::HeaderStyle;
use crate::policy::limit::Mode;

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
    let rule = |table: &crate::policy::routes::RouteTable, name: &str| {
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
