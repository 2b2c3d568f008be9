//! The quota endpoint (`quota_endpoint`) over a real socket, with the same body for the in-memory
//! store, every supported Redis and a real Redis Cluster: every bucket of the caller's key listed
//! with its plan applied, nothing counted but the endpoint's own limit, one store call per answer.
//! Through a real Envoy in `tests/envoy.rs`.

mod common;

use common::{Backend, Tollgate, admin, check, unique_key, unix_millis};
use tollgate::admin::pb::SetPlanRequest;

for_each_store!(the_endpoint_lists_every_bucket_and_counts_only_its_own);

const CONFIG: &str = r#"
quota_endpoint: { path: /v1/rate_limit, limit: { requests: 3, window: 60s } }
default_limit: { requests: 60, window: 60s }
routes:
  - { method: GET, path: /analytics, limit: { requests: 30, window: 60s } }
  - { method: POST, path: /leads/bulk, cost: 5, limit: { requests: 100, window: 60s } }
  - method: GET
    path: /search
    mode: shadow
    limits: [{ requests: 10, window: 1s }, { requests: 1000, window: 1h }]
plans:
  pro:
    routes:
      - { method: GET, path: /analytics, limit: { requests: 300, window: 60s } }
"#;

/// The body's bucket named `name`.
fn bucket<'a>(body: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    body["buckets"]
        .as_array()
        .expect("a list of buckets")
        .iter()
        .find(|b| b["bucket"] == name)
        .unwrap_or_else(|| panic!("no bucket {name} in {body}"))
}

async fn the_endpoint_lists_every_bucket_and_counts_only_its_own(mut backend: Backend) {
    let tollgate = Tollgate::start(backend.config(CONFIG)).await;
    let mut client = tollgate.client().await;
    let key = unique_key("quota-endpoint");
    for _ in 0..2 {
        assert_eq!(
            check(&mut client, "GET", "/v1/analytics", Some(&key))
                .await
                .status,
            200
        );
    }
    assert_eq!(
        check(&mut client, "POST", "/v1/leads/bulk", Some(&key))
            .await
            .status,
        200
    );
    assert_eq!(
        check(&mut client, "GET", "/v1/other", Some(&key))
            .await
            .status,
        200
    );
    let before = unix_millis();

    let scripts_before = backend
        .redis_server()
        .map(|server| common::redis_server::script_calls(&mut server.connection()));
    let answer = check(&mut client, "GET", "/v1/rate_limit?pretty=1", Some(&key)).await;
    // One script call for the whole answer, however many buckets (the first loads the script:
    // EVALSHA, then EVAL).
    if let Some(server) = backend.redis_server() {
        let calls = common::redis_server::script_calls(&mut server.connection());
        assert!(
            (1..=2).contains(&(calls - scripts_before.unwrap())),
            "{calls}"
        );
    }
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    assert_eq!(answer.number("x-ratelimit-limit"), 3);
    assert_eq!(answer.number("x-ratelimit-remaining"), 2);
    let body: serde_json::Value = serde_json::from_str(&answer.body).expect("JSON");
    assert_eq!(body["plan"], serde_json::Value::Null);
    assert_eq!(body["path_prefix"], "/v1");
    assert_eq!(body["buckets"].as_array().unwrap().len(), 4, "{body}");
    let analytics = &bucket(&body, "GET /analytics")["windows"][0];
    assert_eq!(
        (
            &analytics["limit"],
            &analytics["used"],
            &analytics["remaining"]
        ),
        (&30.into(), &2.into(), &28.into())
    );
    assert_eq!(analytics["window_ms"], 60_000);
    let reset = analytics["reset_ms"].as_u64().unwrap();
    // Rounded up to the next millisecond, so up to 60 001 ms after the millisecond read last.
    assert!(reset > before && reset <= unix_millis() + 60_001, "{reset}");
    let bulk = bucket(&body, "POST /leads/bulk");
    assert_eq!(
        (&bulk["cost"], &bulk["windows"][0]["used"]),
        (&5.into(), &5.into())
    );
    let search = bucket(&body, "GET /search");
    assert_eq!(search["mode"], "shadow");
    assert_eq!(search["windows"].as_array().unwrap().len(), 2);
    assert_eq!(search["windows"][1]["remaining"], 1000);
    assert_eq!(bucket(&body, "default")["windows"][0]["used"], 1);

    // Reading counts in no bucket, only in the endpoint's own.
    let again = check(&mut client, "GET", "/v1/rate_limit", Some(&key)).await;
    assert_eq!(again.number("x-ratelimit-remaining"), 1);
    let body: serde_json::Value = serde_json::from_str(&again.body).unwrap();
    assert_eq!(bucket(&body, "GET /analytics")["windows"][0]["used"], 2);
    assert_eq!(bucket(&body, "default")["windows"][0]["used"], 1);
    let counted = check(&mut client, "GET", "/v1/analytics", Some(&key)).await;
    assert_eq!(counted.number("x-ratelimit-remaining"), 27);
    assert_eq!(
        check(&mut client, "HEAD", "/v1/rate_limit", Some(&key))
            .await
            .status,
        200
    );
    let over = check(&mut client, "GET", "/v1/rate_limit", Some(&key)).await;
    assert_eq!(over.status, 429, "past its own limit: {over:?}");
    assert_eq!(over.number("x-ratelimit-limit"), 3);
    assert!(over.number("retry-after") >= 59, "{over:?}");

    // The plan applied: its table, its name.
    let pro = unique_key("quota-endpoint-pro");
    let mut admin = admin(&tollgate).await;
    admin
        .set_plan(SetPlanRequest {
            api_key: pro.clone(),
            plan: "pro".into(),
        })
        .await
        .expect("SetPlan answers");
    let answer = check(&mut client, "GET", "/v1/rate_limit", Some(&pro)).await;
    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["plan"], "pro");
    assert_eq!(bucket(&body, "GET /analytics")["windows"][0]["limit"], 300);
    assert_eq!(bucket(&body, "GET /analytics")["windows"][0]["used"], 0);
}

#[tokio::test]
async fn the_endpoint_asks_for_a_key_and_other_methods_are_ordinary_requests() {
    let tollgate = Tollgate::start(common::config(CONFIG)).await;
    let mut client = tollgate.client().await;
    let missing = check(&mut client, "GET", "/v1/rate_limit", None).await;
    assert_eq!(missing.status, 401, "{missing:?}");
    let key = unique_key("quota-endpoint-post");
    // A POST of the path is counted in the default bucket, like any undeclared request.
    let post = check(&mut client, "POST", "/v1/rate_limit", Some(&key)).await;
    assert_eq!((post.status, post.number("x-ratelimit-limit")), (200, 60));
    // Spelled differently, the same path: normalised before it is compared.
    let odd = check(&mut client, "GET", "/v1//rate_limit/", Some(&key)).await;
    assert_eq!((odd.status, odd.number("x-ratelimit-limit")), (200, 3));
}

#[tokio::test]
async fn an_unreachable_store_answers_503_even_when_checks_fail_open() {
    let port = common::ports::free_port();
    let yaml =
        format!("{CONFIG}\nfailure_mode: allow\nredis: {{ url: redis://127.0.0.1:{port} }}\n");
    let tollgate = Tollgate::start(common::config(&yaml)).await;
    let mut client = tollgate.client().await;
    let key = unique_key("quota-endpoint-down");
    let check_answer = check(&mut client, "GET", "/v1/analytics", Some(&key)).await;
    assert_eq!(check_answer.status, 200, "checks fail open");
    let answer = check(&mut client, "GET", "/v1/rate_limit", Some(&key)).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(!answer.has_rate_limit_headers());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_reads_a_bounded_number_of_quotas_at_once() {
    let redis = common::redis_server::RedisServer::start();
    let proxy = common::fault_proxy::FaultProxy::start(redis.port).await;
    let yaml = format!(
        "{CONFIG}\nredis: {{ url: \"{}\", timeout: 2s, connections: 1 }}\n",
        proxy.url()
    );
    let tollgate = Tollgate::start(common::config(&yaml)).await;
    let client = tollgate.client().await;
    // Connected and answering first.
    let mut first = client.clone();
    let warm = check(&mut first, "GET", "/v1/rate_limit", Some("warm")).await;
    assert_eq!(warm.status, 200, "{warm:?}");
    proxy.set(common::fault_proxy::Fault::Delay(
        std::time::Duration::from_millis(500),
    ));
    let reads = (0..40).map(|i| {
        let mut client = client.clone();
        tokio::spawn(async move {
            let key = unique_key(&format!("flood-{i}"));
            check(&mut client, "GET", "/v1/rate_limit", Some(&key))
                .await
                .status
        })
    });
    let mut statuses = Vec::new();
    for read in reads.collect::<Vec<_>>() {
        statuses.push(read.await.unwrap());
    }
    let answered = statuses.iter().filter(|&&s| s == 200).count();
    let refused = statuses.iter().filter(|&&s| s == 503).count();
    assert_eq!(answered + refused, 40, "{statuses:?}");
    assert!(
        answered <= tollgate::check::authz::MAX_QUOTA_READS
            && refused >= 40 - tollgate::check::authz::MAX_QUOTA_READS,
        "at most {} reads at once: {statuses:?}",
        tollgate::check::authz::MAX_QUOTA_READS
    );
}
