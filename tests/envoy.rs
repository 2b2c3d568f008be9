//! End to end: HTTP client → Envoy 1.40 (the shipped envoy/envoy.yaml) → tollgate → Redis, with an
//! upstream of the test's own.

mod common;

use common::envoy::{Envoy, Ports};
use common::http::{HttpResponse, Upstream, request};
use common::{Backend, Tollgate, unique_key, unix_millis};
use serde_json::json;
use std::time::{Duration, Instant};
use tollgate::api_key::KeyDigest;
use tollgate::config::DEFAULT_YAML;

/// Redis, tollgate (built-in contract table), an upstream and Envoy, all on free ports.
struct Stack {
    backend: Backend,
    tollgate: Option<Tollgate>,
    upstream: Upstream,
    envoy: Envoy,
}

impl Stack {
    async fn start() -> Self {
        Self::start_with("").await
    }

    /// With `settings` added to the built-in configuration.
    async fn start_with(settings: &str) -> Self {
        let backend = Backend::redis();
        let yaml = DEFAULT_YAML.replace("drain_period: 5s", "drain_period: 0s") + settings;
        let tollgate = Tollgate::start(backend.config(&yaml)).await;
        let upstream = Upstream::start().await;
        let ports = Ports {
            tollgate: tollgate.addr.port(),
            upstream: upstream.port,
        };
        let envoy = tokio::task::spawn_blocking(move || Envoy::start(ports))
            .await
            .unwrap();
        Self {
            backend,
            tollgate: Some(tollgate),
            upstream,
            envoy,
        }
    }

    async fn get(&self, path: &str, key: Option<&str>) -> HttpResponse {
        self.send("GET", path, key).await
    }

    async fn send(&self, method: &str, path: &str, key: Option<&str>) -> HttpResponse {
        let headers: Vec<(&str, &str)> = key.map(|k| ("x-api-key", k)).into_iter().collect();
        request(self.envoy.port, method, path, &headers).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_responses_carry_the_headers_and_the_upstream_answer() {
    let stack = Stack::start().await;
    let key = unique_key("e2e-allowed");
    let before = unix_millis();
    let response = stack.get("/v1/campaigns/42?expand=1", Some(&key)).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, "upstream saw /v1/campaigns/42?expand=1");
    assert_eq!(response.number("x-ratelimit-limit"), 120);
    assert_eq!(response.number("x-ratelimit-remaining"), 119);
    let reset = response.number("x-ratelimit-reset");
    assert!(
        reset >= before + 60_000 && reset <= unix_millis() + 60_001,
        "{reset}"
    );
    assert_eq!(response.header("retry-after"), None);

    let created = stack
        .send("POST", "/v1/leads/add_to_campaign", Some(&key))
        .await;
    assert_eq!(created.status, 201, "the upstream's status passes through");
    assert_eq!(created.number("x-ratelimit-remaining"), 19);

    // The upstream's own x-ratelimit-limit is replaced, not duplicated.
    let own = stack
        .get("/v1/users/own-ratelimit-header", Some(&key))
        .await;
    assert_eq!(own.status, 200);
    assert_eq!(own.all("x-ratelimit-limit"), vec!["60"], "{own:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_envoy_answers_429_and_the_upstream_never_sees_it() {
    let stack = Stack::start().await;
    let key = unique_key("e2e-429");
    for i in 0..20 {
        let response = stack
            .send("POST", "/v1/leads/add_to_campaign", Some(&key))
            .await;
        assert_eq!(response.status, 201, "request {i}");
    }
    let reached_before = stack.upstream.received_paths().len();
    let denied = stack
        .send("POST", "/v1/leads/add_to_campaign", Some(&key))
        .await;
    assert_eq!(denied.status, 429, "{denied:?}");
    let retry_after = denied.number("retry-after");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(denied.number("x-ratelimit-limit"), 20);
    assert_eq!(denied.number("x-ratelimit-remaining"), 0);
    assert!(denied.number("x-ratelimit-reset") > unix_millis());
    assert_eq!(denied.header("content-type"), Some("application/json"));
    assert!(
        denied.body.starts_with('{') && denied.body.contains("rate_limited"),
        "{}",
        denied.body
    );
    assert_eq!(
        stack.upstream.received_paths().len(),
        reached_before,
        "the 429 was not forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_endpoint_is_answered_by_tollgate_through_envoy() {
    let stack = Stack::start_with("\nquota_endpoint: { path: /v1/rate_limit }\n").await;
    let key = unique_key("e2e-quota");
    for _ in 0..3 {
        let counted = stack.get("/v1/campaigns/7", Some(&key)).await;
        assert_eq!(counted.status, 200);
    }
    let reached_before = stack.upstream.received_paths().len();
    let response = stack.get("/v1/rate_limit", Some(&key)).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_eq!(response.number("x-ratelimit-limit"), 60);
    assert_eq!(response.number("x-ratelimit-remaining"), 59);
    assert!(response.number("x-ratelimit-reset") > unix_millis());
    let body: serde_json::Value = serde_json::from_str(&response.body).expect("JSON");
    let campaign = body["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["bucket"] == "GET /campaigns/:id")
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(campaign["windows"][0]["used"], 3);
    assert_eq!(campaign["windows"][0]["remaining"], 117);
    // The contract's table, and the shared bucket.
    assert_eq!(body["buckets"].as_array().unwrap().len(), 11, "{body}");
    assert_eq!(
        stack.upstream.received_paths().len(),
        reached_before,
        "the quota endpoint's request never reaches the upstream"
    );
    let after = stack.get("/v1/campaigns/7", Some(&key)).await;
    assert_eq!(
        after.number("x-ratelimit-remaining"),
        116,
        "reading counted nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_isolated_and_ids_share_a_bucket_through_envoy() {
    let stack = Stack::start().await;
    let (a, b) = (unique_key("e2e-a"), unique_key("e2e-b"));
    for i in 0..30 {
        let response = stack
            .get(&format!("/v1/campaigns/{i}/statistics"), Some(&a))
            .await;
        assert_eq!(response.status, 200);
        assert_eq!(response.number("x-ratelimit-remaining"), 29 - i);
    }
    assert_eq!(
        stack
            .get("/v1/campaigns/999/statistics", Some(&a))
            .await
            .status,
        429
    );
    let other = stack.get("/v1/campaigns/999/statistics", Some(&b)).await;
    assert_eq!(
        (other.status, other.number("x-ratelimit-remaining")),
        (200, 29)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_spellings_cannot_reach_a_fresh_bucket_through_envoy() {
    let stack = Stack::start().await;
    let key = unique_key("e2e-paths");
    let spellings = common::ANALYTICS_DAILY_SPELLINGS;
    for (i, path) in spellings.iter().cycle().take(30).enumerate() {
        let response = stack.get(path, Some(&key)).await;
        assert_eq!(response.status, 200, "{path}: {response:?}");
        assert_eq!(response.number("x-ratelimit-limit"), 30, "{path}");
        assert_eq!(
            response.number("x-ratelimit-remaining"),
            29 - i as u64,
            "{path}"
        );
    }
    for path in spellings {
        assert_eq!(
            stack.get(path, Some(&key)).await.status,
            429,
            "{path} reached a fresh bucket"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_key_is_401_from_envoy_and_not_forwarded() {
    let stack = Stack::start().await;
    let response = stack.get("/v1/users", None).await;
    assert_eq!(response.status, 401, "{response:?}");
    assert!(
        response.body.contains("missing_api_key"),
        "{}",
        response.body
    );
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert!(stack.upstream.received_paths().is_empty());
    // Outside the prefix nothing is required and nothing is added.
    let open = stack.get("/healthz", None).await;
    assert_eq!(open.status, 200);
    assert!(!open.has_rate_limit_headers());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_or_tollgate_down_requests_pass_and_limits_come_back() {
    let mut stack = Stack::start().await;
    let key = unique_key("e2e-outage");
    assert!(
        stack
            .get("/v1/users", Some(&key))
            .await
            .has_rate_limit_headers()
    );

    // Redis down: tollgate fails open without headers.
    stack.backend.redis_server().unwrap().stop();
    for _ in 0..5 {
        let response = stack.get("/v1/users", Some(&key)).await;
        assert_eq!(response.status, 200, "{response:?}");
        assert!(!response.has_rate_limit_headers(), "{response:?}");
    }
    stack.backend.redis_server().unwrap().restart();
    let recovered = poll(
        || stack.get("/v1/users", Some(&key)),
        |r| r.has_rate_limit_headers(),
    )
    .await;
    assert_eq!(recovered.status, 200);

    // tollgate down: Envoy's failure_mode_allow lets requests through.
    let addr = stack.tollgate.as_ref().unwrap().addr;
    let server = stack.tollgate.as_mut().unwrap().begin_shutdown();
    server.await.unwrap();
    stack.tollgate = None;
    for _ in 0..5 {
        let response = stack.get("/v1/users", Some(&key)).await;
        assert_eq!(response.status, 200, "{response:?}");
        assert!(!response.has_rate_limit_headers());
    }
    let marked = stack
        .upstream
        .received
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(
        marked
            .headers
            .get("x-envoy-auth-failure-mode-allowed")
            .map(String::as_str),
        Some("true"),
        "failure_mode_allow_header_add marks the request: {marked:?}"
    );

    // tollgate back on the same port: limits apply again.
    stack.tollgate = Some(Tollgate::start_on(stack.backend.config(DEFAULT_YAML), addr).await);
    let back = poll(
        || stack.get("/v1/users", Some(&key)),
        |r| r.has_rate_limit_headers(),
    )
    .await;
    assert_eq!(back.number("x-ratelimit-limit"), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoys_access_log_shows_what_tollgate_decided() {
    let mut stack = Stack::start().await;
    let key = unique_key("e2e-log");
    let fingerprint = KeyDigest::of(&key).fingerprint().to_owned();
    // A query unique to each request tells its access log line apart.
    let tag = unique_key("line");
    let path = |what: &str, route: &str| format!("{route}?line={tag}-{what}");

    let before = unix_millis();
    let allowed = path("allowed", "/v1/campaigns/42");
    assert_eq!(stack.get(&allowed, Some(&key)).await.status, 200);
    let line = stack.envoy.access_log_line(&allowed).await;
    assert_eq!(
        (&line["method"], &line["status"]),
        (&json!("GET"), &json!(200))
    );
    let decision = &line["tollgate"];
    let reset = decision["reset"].as_u64().expect("reset, Unix ms");
    assert!(
        reset >= before + 60_000 && reset <= unix_millis() + 60_001,
        "{line}"
    );
    assert_eq!(
        decision,
        &json!({
            "decision": "allowed", "bucket": "GET /campaigns/:id", "mode": "enforce",
            "plan": null, "key_fingerprint": fingerprint, "limit": 120, "remaining": 119,
            "reset": reset,
        }),
        "{line}"
    );
    assert!(!line.to_string().contains(&key), "never the key: {line}");

    for _ in 0..20 {
        let response = stack
            .send("POST", "/v1/leads/add_to_campaign", Some(&key))
            .await;
        assert_eq!(response.status, 201);
    }
    let denied = path("denied", "/v1/leads/add_to_campaign");
    assert_eq!(stack.send("POST", &denied, Some(&key)).await.status, 429);
    let line = stack.envoy.access_log_line(&denied).await;
    assert_eq!(
        (&line["method"], &line["status"]),
        (&json!("POST"), &json!(429))
    );
    let decision = &line["tollgate"];
    assert_eq!(
        (
            &decision["decision"],
            &decision["bucket"],
            &decision["limit"],
            &decision["remaining"]
        ),
        (
            &json!("denied"),
            &json!("POST /leads/add_to_campaign"),
            &json!(20),
            &json!(0)
        ),
        "{line}"
    );
    assert_eq!(decision["key_fingerprint"], json!(fingerprint));
    assert!(
        decision["reset"].as_u64().unwrap() > unix_millis(),
        "{line}"
    );

    let anonymous = path("unauthenticated", "/v1/users");
    assert_eq!(stack.get(&anonymous, None).await.status, 401);
    let line = stack.envoy.access_log_line(&anonymous).await;
    assert_eq!(line["status"], json!(401));
    assert_eq!(
        line["tollgate"],
        json!({
            "decision": "unauthenticated", "bucket": "GET /users", "mode": "enforce",
            "plan": null, "key_fingerprint": null, "limit": null, "remaining": null,
            "reset": null,
        }),
        "{line}"
    );

    // Redis down, failure_mode allow: tollgate's own failed_open, with the bucket and key.
    stack.backend.redis_server().unwrap().stop();
    let redis_down = path("redis-down", "/v1/users");
    assert_eq!(stack.get(&redis_down, Some(&key)).await.status, 200);
    let line = stack.envoy.access_log_line(&redis_down).await;
    assert_eq!(
        line["tollgate"],
        json!({
            "decision": "failed_open", "bucket": "GET /users", "mode": "enforce",
            "plan": null, "key_fingerprint": fingerprint, "limit": null, "remaining": null,
            "reset": null,
        }),
        "{line}"
    );

    // tollgate down: Envoy's failure_mode_allow lets the request through, with no decision.
    let server = stack.tollgate.as_mut().unwrap().begin_shutdown();
    server.await.unwrap();
    stack.tollgate = None;
    let tollgate_down = path("tollgate-down", "/v1/users");
    assert_eq!(stack.get(&tollgate_down, Some(&key)).await.status, 200);
    let line = stack.envoy.access_log_line(&tollgate_down).await;
    assert_eq!(line["status"], json!(200));
    let fields = line["tollgate"].as_object().expect("the tollgate object");
    assert_eq!(fields.len(), 8, "{line}");
    assert!(fields.values().all(|v| v.is_null()), "no metadata: {line}");
}

/// Repeats `request` until `done` holds, for at most 10 s.
async fn poll<F, Fut>(request: F, done: impl Fn(&HttpResponse) -> bool) -> HttpResponse
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = HttpResponse>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = request().await;
        if done(&response) || Instant::now() > deadline {
            assert!(done(&response), "not recovered within 10 s: {response:?}");
            return response;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
