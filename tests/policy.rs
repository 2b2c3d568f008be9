//! Policies over a real socket, with the same bodies for the in-memory store, a real Redis and a
//! real Redis Cluster: several windows per route, cost per route, shadow mode, plans (from the
//! admin API and from a trusted header, in the buckets and at the costs of the top-level routes)
//! and the IETF `RateLimit` fields. The store's exactness
//! over random schedules is `tests/store_model.rs`; the same features through a real Envoy are in
//! `tests/envoy.rs`.

mod common;

use common::{
    Backend, Tollgate, WireRequest, admin, check, check_raw, quota, unique_key, unix_millis,
};
use std::time::{Duration, Instant};
use tollgate::admin::pb::admin_client::AdminClient;
use tollgate::admin::pb::{GetPlanRequest, GetQuotaRequest, Mode, SetPlanRequest};
use tollgate::check::authz::PLAN_REFRESH;
use tonic::transport::Channel;

for_each_store!(
    every_window_must_admit_and_the_headers_name_the_binding_one,
    a_cost_takes_its_slots_in_every_window,
    shadow_mode_counts_everything_and_denies_nothing,
    a_plan_set_through_the_admin_api_applies_and_keeps_the_history,
    a_trusted_plan_header_picks_the_plan,
    a_plan_counts_in_the_bucket_and_at_the_cost_of_its_top_level_route,
    the_ietf_fields_describe_every_window,
);

async fn set_plan(client: &mut AdminClient<Channel>, key: &str, plan: &str) -> bool {
    client
        .set_plan(SetPlanRequest {
            api_key: key.into(),
            plan: plan.into(),
        })
        .await
        .expect("SetPlan answers")
        .into_inner()
        .known
}

const WINDOWS: &str = r#"
routes:
  - { method: GET, path: /burst, limits: [{ requests: 3, window: 1s }, { requests: 5, window: 60s }] }
"#;

async fn every_window_must_admit_and_the_headers_name_the_binding_one(backend: Backend) {
    let tollgate = Tollgate::start(backend.config(WINDOWS)).await;
    let mut client = tollgate.client().await;
    let key = unique_key("windows");
    let started = unix_millis();
    // The second allows 3: its window is the closer to running out.
    for remaining in [2, 1, 0] {
        let answer = check(&mut client, "GET", "/v1/burst", Some(&key)).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.number("x-ratelimit-limit"), 3);
        assert_eq!(answer.number("x-ratelimit-remaining"), remaining);
    }
    let burst = check(&mut client, "GET", "/v1/burst", Some(&key)).await;
    assert_eq!(burst.status, 429, "the 1 s window is full: {burst:?}");
    assert_eq!(burst.number("x-ratelimit-limit"), 3);
    assert_eq!(burst.number("retry-after"), 1);
    let reset = burst.number("x-ratelimit-reset");
    // The reset is rounded up to the next millisecond: when the four checks take less than one
    // (the memory store), it is 1 001 ms after the millisecond they started in.
    assert!(
        reset >= started + 1000 && reset <= unix_millis() + 1001,
        "{reset}"
    );

    common::sleep_until_unix_millis(reset + 20).await;
    // Two more fit the minute's 5; after them the minute is the binding window.
    let fourth_sent = Instant::now();
    let fourth = check(&mut client, "GET", "/v1/burst", Some(&key)).await;
    assert_eq!(fourth.status, 200);
    // 2 of 3 left in the second, 1 of 5 in the minute: the minute is closer to running out.
    assert_eq!(fourth.number("x-ratelimit-limit"), 5);
    assert_eq!(fourth.number("x-ratelimit-remaining"), 1);
    let fifth = check(&mut client, "GET", "/v1/burst", Some(&key)).await;
    assert_eq!(fifth.status, 200);
    assert_eq!(fifth.number("x-ratelimit-limit"), 5);
    assert_eq!(fifth.number("x-ratelimit-remaining"), 0);
    let denied = check(&mut client, "GET", "/v1/burst", Some(&key)).await;
    assert_eq!(
        denied.status, 429,
        "the second has room, the minute does not"
    );
    assert_eq!(denied.number("x-ratelimit-limit"), 5);
    // Admitted when the first request leaves the minute: that is the real moment.
    let reset = denied.number("x-ratelimit-reset");
    assert!(
        reset >= started + 60_000 && reset <= started + 61_500,
        "{reset} vs start {started}"
    );
    let retry_after = denied.number("retry-after");
    assert!((57..=60).contains(&retry_after), "{retry_after}");

    // Read without counting: both windows, each as the checks left them (the second's two
    // while they are less than a second old).
    let quota = quota(&mut admin(&tollgate).await, &key, "GET", "/v1/burst").await;
    let windows: Vec<(u32, u64)> = quota
        .windows
        .iter()
        .map(|w| (w.limit, w.window_ms))
        .collect();
    assert_eq!(windows, [(3, 1000), (5, 60_000)]);
    assert_eq!(quota.windows[1].used, 5);
    if fourth_sent.elapsed() < Duration::from_millis(900) {
        assert_eq!(quota.windows[0].used, 2);
    }
}

const COSTS: &str = r#"
routes:
  - { method: POST, path: /bulk, cost: 4, limit: { requests: 10, window: 60s } }
  - { method: GET, path: /one, limit: { requests: 10, window: 60s } }
"#;

async fn a_cost_takes_its_slots_in_every_window(backend: Backend) {
    let tollgate = Tollgate::start(backend.config(COSTS)).await;
    let mut client = tollgate.client().await;
    let key = unique_key("cost");
    for remaining in [6, 2] {
        let answer = check(&mut client, "POST", "/v1/bulk", Some(&key)).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.number("x-ratelimit-remaining"), remaining);
    }
    let denied = check(&mut client, "POST", "/v1/bulk", Some(&key)).await;
    assert_eq!(denied.status, 429, "2 slots left, 4 needed");
    assert_eq!(
        denied.number("x-ratelimit-remaining"),
        2,
        "slots, not requests"
    );
    // Another route is another bucket, at cost 1.
    let one = check(&mut client, "GET", "/v1/one", Some(&key)).await;
    assert_eq!((one.status, one.number("x-ratelimit-remaining")), (200, 9));
    let mut admin = admin(&tollgate).await;
    let bulk = admin
        .get_quota(GetQuotaRequest {
            api_key: key.clone(),
            method: "POST".into(),
            path: "/v1/bulk".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((bulk.used, bulk.remaining, bulk.cost), (8, 2, 4));
}

const SHADOW: &str = r#"
routes:
  - { method: GET, path: /new, mode: shadow, limit: { requests: 2, window: 60s } }
  - { method: GET, path: /old, limit: { requests: 2, window: 60s } }
"#;

async fn shadow_mode_counts_everything_and_denies_nothing(backend: Backend) {
    let tollgate = Tollgate::start(backend.config(SHADOW)).await;
    let mut client = tollgate.client().await;
    let key = unique_key("shadow");
    for remaining in [1, 0, 0, 0, 0] {
        let answer = check(&mut client, "GET", "/v1/new", Some(&key)).await;
        assert_eq!(answer.status, 200, "never denied: {answer:?}");
        assert_eq!(answer.number("x-ratelimit-remaining"), remaining);
        assert_eq!(answer.header("retry-after"), None);
    }
    // The enforced route beside it still denies.
    for status in [200, 200, 429] {
        assert_eq!(
            check(&mut client, "GET", "/v1/old", Some(&key))
                .await
                .status,
            status
        );
    }
    let mut admin = admin(&tollgate).await;
    let shadowed = quota(&mut admin, &key, "GET", "/v1/new").await;
    assert_eq!(shadowed.mode(), Mode::Shadow);
    assert_eq!(
        shadowed.used, 2,
        "a log of 2 slots holds the 2 newest of the 5 counted"
    );

    let port = tollgate.metrics_addr.expect("metrics are on").port();
    let text = tokio::task::spawn_blocking(move || {
        common::http::request_blocking(port, "GET", "/metrics", &[]).expect("scrape")
    })
    .await
    .unwrap()
    .body;
    let value = |series: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{series} in\n{text}"))
    };
    assert_eq!(
        value(r#"tollgate_checks_total{result="shadow_denied",route="GET /new"}"#),
        3.0
    );
    assert_eq!(
        value(r#"tollgate_checks_total{result="allowed",route="GET /new"}"#),
        2.0
    );
    assert_eq!(
        value(r#"tollgate_checks_total{result="denied",route="GET /new"}"#),
        0.0
    );

    // Switched to enforce, on a replica sharing the store: the shadowed history counts at once.
    if backend.is_shared() {
        let enforced = Tollgate::start(backend.config(&SHADOW.replace("mode: shadow, ", ""))).await;
        let mut client = enforced.client().await;
        let answer = check(&mut client, "GET", "/v1/new", Some(&key)).await;
        assert_eq!(answer.status, 429, "{answer:?}");
    }
}

const PLANS: &str = r#"
routes:
  - { method: GET, path: /items, limit: { requests: 2, window: 60s } }
plans:
  pro:
    routes:
      - { method: GET, path: /items, limit: { requests: 5, window: 60s } }
"#;

async fn a_plan_set_through_the_admin_api_applies_and_keeps_the_history(backend: Backend) {
    let tollgate = Tollgate::start(backend.config(PLANS)).await;
    let mut client = tollgate.client().await;
    let mut operator = admin(&tollgate).await;
    let key = unique_key("plan");
    for status in [200, 200, 429] {
        assert_eq!(
            check(&mut client, "GET", "/v1/items", Some(&key))
                .await
                .status,
            status
        );
    }
    assert!(
        set_plan(&mut operator, &key, "pro").await,
        "pro is a known plan"
    );
    // The two counted requests stay: 3 more of pro's 5.
    for remaining in [2, 1, 0] {
        let answer = check(&mut client, "GET", "/v1/items", Some(&key)).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.number("x-ratelimit-limit"), 5);
        assert_eq!(answer.number("x-ratelimit-remaining"), remaining);
    }
    assert_eq!(
        check(&mut client, "GET", "/v1/items", Some(&key))
            .await
            .status,
        429
    );
    let shown = quota(&mut operator, &key, "GET", "/v1/items").await;
    assert_eq!(
        (shown.plan.as_str(), shown.limit, shown.used),
        ("pro", 5, 5)
    );
    let stored = operator
        .get_plan(GetPlanRequest {
            api_key: key.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stored.plan.as_str(), stored.known), ("pro", true));
    // Another key is not on it.
    let other = unique_key("no-plan");
    assert_eq!(
        quota(&mut operator, &other, "GET", "/v1/items").await.plan,
        ""
    );

    // A replica sharing the store sees the plan within the refresh interval.
    if backend.is_shared() {
        let replica = Tollgate::start(backend.config(PLANS)).await;
        let mut replica_admin = admin(&replica).await;
        let mut replica_client = replica.client().await;
        assert_eq!(
            quota(&mut replica_admin, &key, "GET", "/v1/items")
                .await
                .plan,
            "pro",
            "read at start"
        );
        assert!(
            !set_plan(&mut operator, &key, "gold").await,
            "an undeclared plan is stored, flagged"
        );
        let changed = Instant::now();
        while quota(&mut replica_admin, &key, "GET", "/v1/items")
            .await
            .plan
            == "pro"
        {
            assert!(
                changed.elapsed() < Duration::from_secs(3),
                "the replica kept the old plan"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "plan change seen by the other replica after {:?}",
            changed.elapsed()
        );
        // gold is unknown: the top-level table, where 5 counted exceed 2.
        let answer = check(&mut replica_client, "GET", "/v1/items", Some(&key)).await;
        assert_eq!(
            (answer.status, answer.number("x-ratelimit-limit")),
            (429, 2)
        );
    }
    // Off the plan: the top-level limits again, history included.
    assert!(!set_plan(&mut operator, &key, "").await);
    let answer = check(&mut client, "GET", "/v1/items", Some(&key)).await;
    assert_eq!(
        (answer.status, answer.number("x-ratelimit-limit")),
        (429, 2)
    );
}

async fn a_trusted_plan_header_picks_the_plan(backend: Backend) {
    let yaml = format!("plan_header: x-plan\n{PLANS}");
    let tollgate = Tollgate::start(backend.config(&yaml)).await;
    let limit_for = |plan: Option<&'static str>, key: String| {
        let tollgate = &tollgate;
        async move {
            let mut request =
                WireRequest::new("GET", "/v1/items").header("x-api-key", key.as_bytes());
            if let Some(plan) = plan {
                request = request.header("x-plan", plan.as_bytes());
            }
            let response = check_raw(tollgate, request.encode()).await.unwrap();
            common::Answer::from_response(response).number("x-ratelimit-limit")
        }
    };
    assert_eq!(limit_for(Some("pro"), unique_key("header")).await, 5);
    assert_eq!(limit_for(None, unique_key("header")).await, 2);
    assert_eq!(
        limit_for(Some("platinum"), unique_key("header")).await,
        2,
        "unknown plan"
    );
    assert_eq!(
        limit_for(Some(""), unique_key("header")).await,
        2,
        "empty header"
    );
    // The header alone names plans: no assignment a client could fall back on by leaving its
    // token out, and the admin API says so.
    let refused = admin(&tollgate)
        .await
        .set_plan(SetPlanRequest {
            api_key: unique_key("header"),
            plan: "pro".into(),
        })
        .await
        .expect_err("SetPlan with plan_header");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    // GetQuota resolves under the plan it is given, as the header would name it.
    let mut operator = admin(&tollgate).await;
    let key = unique_key("header");
    let shown = operator
        .get_quota(GetQuotaRequest {
            api_key: key.clone(),
            method: "GET".into(),
            path: "/v1/items".into(),
            plan: "pro".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((shown.plan.as_str(), shown.limit), ("pro", 5));
    assert_eq!(
        quota(&mut operator, &key, "GET", "/v1/items").await.limit,
        2
    );
}

/// A plan that changes the limits of two top-level routes, one with a cost, named by a trusted
/// header.
const PLAN_OVER_ROUTES: &str = r#"
plan_header: x-plan
routes:
  - { method: GET, path: /campaigns/:id, limit: { requests: 6, window: 60s } }
  - { method: POST, path: /bulk, cost: 4, limit: { requests: 20, window: 60s } }
plans:
  pro:
    routes:
      - { method: GET, path: /campaigns/:id, limit: { requests: 10, window: 60s } }
      - { method: POST, path: /bulk, limit: { requests: 40, window: 60s } }
"#;

/// A check of `key`'s request, with `x-plan: plan` when given.
async fn check_on_plan(
    tollgate: &Tollgate,
    method: &str,
    path: &str,
    key: &str,
    plan: Option<&str>,
) -> common::Answer {
    let mut request = WireRequest::new(method, path).header("x-api-key", key.as_bytes());
    if let Some(plan) = plan {
        request = request.header("x-plan", plan.as_bytes());
    }
    common::Answer::from_response(check_raw(tollgate, request.encode()).await.unwrap())
}

async fn a_plan_counts_in_the_bucket_and_at_the_cost_of_its_top_level_route(backend: Backend) {
    let tollgate = Tollgate::start(backend.config(PLAN_OVER_ROUTES)).await;
    // Alternating with and without the plan: one bucket, so at most the larger limit is
    // admitted (10), never the sum of both (16).
    let key = unique_key("one-bucket");
    let mut admitted = [0, 0];
    for i in 0..30 {
        let plan = (i % 2 == 0).then_some("pro");
        let answer = check_on_plan(&tollgate, "GET", "/v1/campaigns/archived", &key, plan).await;
        let expected_limit = if plan.is_some() { 10 } else { 6 };
        assert_eq!(
            answer.number("x-ratelimit-limit"),
            expected_limit,
            "{answer:?}"
        );
        if answer.status == 200 {
            admitted[i % 2] += 1;
        }
    }
    assert_eq!(
        admitted,
        [7, 3],
        "pro's 10 in one bucket, the first 6 shared"
    );
    let mut operator = admin(&tollgate).await;
    for plan in ["", "pro"] {
        let shown = operator
            .get_quota(GetQuotaRequest {
                api_key: key.clone(),
                method: "GET".into(),
                path: "/v1/campaigns/archived".into(),
                plan: plan.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(shown.used, 10, "the same bucket under {plan:?}: {shown:?}");
    }

    // The plan changes /bulk's limit and states no cost: it keeps the top-level cost of 4.
    let key = unique_key("inherited-cost");
    let on_plan = check_on_plan(&tollgate, "POST", "/v1/bulk", &key, Some("pro")).await;
    assert_eq!(
        (on_plan.status, on_plan.number("x-ratelimit-limit")),
        (200, 40)
    );
    assert_eq!(on_plan.number("x-ratelimit-remaining"), 36, "cost 4, not 1");
    let off_plan = check_on_plan(&tollgate, "POST", "/v1/bulk", &key, None).await;
    assert_eq!(
        (off_plan.status, off_plan.number("x-ratelimit-remaining")),
        (200, 12),
        "20 less the 8 slots of both requests"
    );
}

async fn the_ietf_fields_describe_every_window(backend: Backend) {
    let yaml = format!("rate_limit_headers: ietf\n{WINDOWS}");
    let tollgate = Tollgate::start(backend.config(&yaml)).await;
    let mut client = tollgate.client().await;
    let key = unique_key("ietf");
    let answer = check(&mut client, "GET", "/v1/burst", Some(&key)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-ratelimit-limit"), None, "ietf alone");
    assert_eq!(
        answer.header("ratelimit-policy"),
        Some(r#""1s";q=3;w=1, "1m";q=5;w=60"#)
    );
    let state = answer.header("ratelimit").expect("RateLimit");
    assert!(state.starts_with(r#""1s";r=2;t=1, "1m";r=4;t="#), "{state}");
    for _ in 0..2 {
        check(&mut client, "GET", "/v1/burst", Some(&key)).await;
    }
    let denied = check(&mut client, "GET", "/v1/burst", Some(&key)).await;
    assert_eq!(denied.status, 429);
    assert_eq!(denied.number("retry-after"), 1);
    assert!(
        denied
            .header("ratelimit")
            .unwrap()
            .starts_with(r#""1s";r=0;t=1, "1m";r=2;t="#),
        "{denied:?}"
    );
}

/// `cmdstat_<command>:calls` of `redis`.
fn calls(redis: &common::RedisServer, command: &str) -> u64 {
    common::redis_server::command_calls(&mut redis.connection(), command)
}

/// Steady state with plans: one script call per check and nothing else; the refresh is one
/// `HGET` per second per replica, and the assignments are read whole only after a change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_costs_no_redis_command_per_check() {
    let mut backend = Backend::redis();
    let yaml = PLANS.replace("requests: 5,", "requests: 100000,");
    let tollgate = Tollgate::start(backend.config(&yaml)).await;
    let mut client = tollgate.client().await;
    let key = unique_key("steady");
    assert!(set_plan(&mut admin(&tollgate).await, &key, "pro").await);
    let redis = backend.redis_server().expect("a Redis of the test's own");
    // Redis 7: the check is a function.
    let commands = ["fcall", "hget", "hscan"];
    let before = commands.map(|command| calls(redis, command));
    let started = Instant::now();
    let mut checks = 0;
    // Long enough for a few refreshes.
    while started.elapsed() < Duration::from_millis(2500) {
        let answer = check(&mut client, "GET", "/v1/items", Some(&key)).await;
        assert_eq!(
            answer.number("x-ratelimit-limit"),
            100_000,
            "the plan's limit"
        );
        checks += 1;
    }
    let seconds = started.elapsed().as_secs();
    let moved = commands.map(|command| calls(redis, command));
    let [fcall, hget, hscan] = [0, 1, 2].map(|i| moved[i] - before[i]);
    println!("{checks} checks on a plan in 2.5 s: fcall {fcall}, hget {hget}, hscan {hscan}");
    assert_eq!(
        fcall, checks,
        "one script call per check, none for the plan"
    );
    assert!(
        (1..=seconds + 2).contains(&hget),
        "{hget} refreshes in {seconds} s"
    );
    assert_eq!(hscan, 0, "nothing changed, nothing read whole");
}

/// Without plans, nothing reads the assignments: no refresh call, and still one script call per
/// check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_plans_nothing_is_refreshed() {
    let mut backend = Backend::redis();
    let tollgate = Tollgate::start(backend.config(COSTS)).await;
    let mut client = tollgate.client().await;
    let redis = backend.redis_server().expect("a Redis of the test's own");
    let before = calls(redis, "hget");
    let fcall_before = calls(redis, "fcall");
    let key = unique_key("no-plans");
    for _ in 0..5 {
        check(&mut client, "GET", "/v1/one", Some(&key)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(calls(redis, "hget") - before, 0, "no refresh without plans");
    assert_eq!(calls(redis, "fcall") - fcall_before, 5);
}

/// `tollgate_plans_restored_total` of `tollgate`.
async fn plans_restored(tollgate: &Tollgate) -> u64 {
    let port = tollgate.metrics_addr.expect("metrics are on").port();
    let response = common::http::request(port, "GET", "/metrics", &[]).await;
    response
        .body
        .lines()
        .find_map(|line| line.strip_prefix("tollgate_plans_restored_total "))
        .expect("the metric is exported")
        .parse()
        .unwrap()
}

/// A Redis restarted without persistence loses the plans hash with everything else. The replicas
/// hold a copy: the first to notice writes it back (once between them), and every key keeps its
/// plan instead of silently getting the top-level limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_survive_a_redis_restart_without_persistence() {
    let mut backend = Backend::redis();
    let (a, b) = (
        Tollgate::start(backend.config(PLANS)).await,
        Tollgate::start(backend.config(PLANS)).await,
    );
    let (mut admin_a, mut admin_b) = (admin(&a).await, admin(&b).await);
    let key = unique_key("restart");
    assert!(set_plan(&mut admin_a, &key, "pro").await);
    let deadline = Instant::now() + Duration::from_secs(3);
    while quota(&mut admin_b, &key, "GET", "/v1/items").await.plan != "pro" {
        assert!(Instant::now() < deadline, "B reads the plan");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    backend
        .redis_server()
        .expect("a Redis of the test's own")
        .restart();
    let restarted = Instant::now();
    let stored = |admin: &mut AdminClient<Channel>| {
        let request = GetPlanRequest {
            api_key: key.clone(),
        };
        let mut admin = admin.clone();
        async move { admin.get_plan(request).await.map(|r| r.into_inner().plan) }
    };
    loop {
        match stored(&mut admin_a).await {
            Ok(plan) if plan == "pro" => break,
            // Not restored yet, or Redis not reached yet.
            Ok(_) | Err(_) => {}
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(5),
            "the plan is back in Redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "plan assignment back in Redis {:?} after the restart",
        restarted.elapsed()
    );
    // Both replicas keep the plan throughout, and read back what was restored.
    tokio::time::sleep(PLAN_REFRESH * 2).await;
    for tollgate in [&a, &b] {
        let mut client = tollgate.client().await;
        // Each connection made before the restart fails once when first used (fail open).
        let answer = loop {
            let answer = check(&mut client, "GET", "/v1/items", Some(&key)).await;
            if answer.has_rate_limit_headers() {
                break answer;
            }
            assert!(
                restarted.elapsed() < Duration::from_secs(10),
                "limits apply again"
            );
        };
        assert_eq!(answer.number("x-ratelimit-limit"), 5, "pro's limit");
    }
    assert_eq!(
        plans_restored(&a).await + plans_restored(&b).await,
        1,
        "restored once, by the first replica that noticed"
    );
}
