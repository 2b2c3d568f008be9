//! The admin API (`tollgate.admin.v1.Admin`) over a real socket: the same test bodies for the
//! in-memory store, a real Redis and a real Redis Cluster, then what does not depend on the store
//! (token, listeners, reflection) and the `tollgate admin` command against the running binary.

mod common;

use common::process::TollgateProcess;
use common::{Backend, Tollgate, admin, check, quota, unique_key, unix_millis};
use std::process::Command;
use std::time::{Duration, Instant};
use tollgate::admin::pb::admin_client::AdminClient;
use tollgate::admin::pb::{
    DefaultBucket, GetPlanRequest, GetQuotaRequest, ListRoutesRequest, Quota, ResetQuotaRequest,
    SetPlanRequest,
};
use tollgate::config::DEFAULT_YAML;
use tonic::transport::Channel;

for_each_store!(
    get_quota_does_not_consume,
    get_quota_shows_what_checks_counted,
    reset_gives_a_full_window,
    reset_reaches_the_other_replicas_deny_cache,
    a_lowered_limit_is_read_as_a_check_sees_it,
    list_routes_is_the_check_config_table,
);

/// Three requests a minute on `/v1/items/:id`: small enough to fill quickly.
const ITEMS: &str =
    "routes:\n  - { method: GET, path: /items/:id, limit: { requests: 3, window: 60s } }\n";

async fn reset(client: &mut AdminClient<Channel>, key: &str, method: &str, path: &str) -> u32 {
    let response = client
        .reset_quota(ResetQuotaRequest {
            api_key: key.into(),
            method: method.into(),
            path: path.into(),
            ..Default::default()
        })
        .await
        .expect("ResetQuota answers")
        .into_inner();
    assert!(response.limited);
    assert_eq!(response.bucket, "GET /items/:id");
    response.cleared
}

async fn get_quota_does_not_consume(backend: Backend) {
    let tollgate = Tollgate::start(backend.config(ITEMS)).await;
    let mut admin = admin(&tollgate).await;
    let mut client = tollgate.client().await;
    let key = unique_key("peek");
    for _ in 0..10 {
        let before = unix_millis();
        let quota = quota(&mut admin, &key, "GET", "/v1/items/7").await;
        assert!(quota.limited);
        assert_eq!(quota.bucket, "GET /items/:id");
        assert_eq!((quota.limit, quota.window_ms), (3, 60_000));
        assert_eq!((quota.used, quota.remaining), (0, 3));
        assert!(
            quota.reset_unix_ms >= before && quota.reset_unix_ms <= unix_millis() + 1,
            "an empty bucket resets now: {quota:?}"
        );
    }
    for remaining in [2, 1, 0] {
        let answer = check(&mut client, "GET", "/v1/items/7", Some(&key)).await;
        assert_eq!(answer.status, 200, "ten reads consumed nothing");
        assert_eq!(answer.number("x-ratelimit-remaining"), remaining);
    }
    for _ in 0..3 {
        assert_eq!(quota(&mut admin, &key, "GET", "/v1/items/7").await.used, 3);
    }
    let denied = check(&mut client, "GET", "/v1/items/7", Some(&key)).await;
    assert_eq!(denied.status, 429);
}

async fn get_quota_shows_what_checks_counted(backend: Backend) {
    let tollgate = Tollgate::start(backend.config(ITEMS)).await;
    let mut admin = admin(&tollgate).await;
    let mut client = tollgate.client().await;
    let key = unique_key("counts");
    let first = check(&mut client, "GET", "/v1/items/1", Some(&key)).await;
    check(&mut client, "HEAD", "/v1/items/2", Some(&key)).await;
    // Any spelling a check would put in the same bucket: case, query, HEAD, another id.
    for (method, path) in [
        ("GET", "/v1/items/9"),
        ("get", "/V1/items/9?verbose=1"),
        ("HEAD", "//v1/items/./9/"),
    ] {
        let quota = quota(&mut admin, &key, method, path).await;
        assert_eq!(quota.bucket, "GET /items/:id", "{method} {path}");
        assert_eq!((quota.used, quota.remaining), (2, 1), "{method} {path}");
        assert_eq!(
            quota.reset_unix_ms,
            first.number("x-ratelimit-reset"),
            "the oldest counted request's departure, as the headers said"
        );
    }
    check(&mut client, "GET", "/v1/items/3", Some(&key)).await;
    let denied = check(&mut client, "GET", "/v1/items/4", Some(&key)).await;
    let full = quota(&mut admin, &key, "GET", "/v1/items/4").await;
    assert_eq!((full.used, full.remaining), (3, 0));
    assert_eq!(full.reset_unix_ms, denied.number("x-ratelimit-reset"));

    let other = quota(&mut admin, &unique_key("other"), "GET", "/v1/items/4").await;
    assert_eq!(other.used, 0, "another key's bucket");
    let undeclared = quota(&mut admin, &key, "POST", "/v1/items/4").await;
    assert_eq!(
        (undeclared.bucket.as_str(), undeclared.used),
        ("default", 0)
    );
    // An OPTIONS asked about is a plain one (a preflight carries a header the API has no room
    // for): counted in the default bucket, as a check would be.
    let options = quota(&mut admin, &key, "OPTIONS", "/v1/items/4").await;
    assert_eq!(options.bucket, "default");
    let outside = quota(&mut admin, &key, "GET", "/health").await;
    assert_eq!(outside, Quota::default(), "GET /health is not limited");
    let bad = admin
        .get_quota(GetQuotaRequest {
            api_key: key.clone(),
            method: "GET".into(),
            path: "items/4".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let no_key = admin
        .get_quota(GetQuotaRequest {
            api_key: " ".into(),
            method: "GET".into(),
            path: "/v1/items/4".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(no_key.code(), tonic::Code::InvalidArgument);
}

async fn reset_gives_a_full_window(backend: Backend) {
    let tollgate = Tollgate::start(backend.config(ITEMS)).await;
    let mut admin = admin(&tollgate).await;
    let mut client = tollgate.client().await;
    let (key, bystander) = (unique_key("reset"), unique_key("bystander"));
    for key in [&key, &bystander] {
        for _ in 0..3 {
            check(&mut client, "GET", "/v1/items/1", Some(key)).await;
        }
        // Denied twice: the second from this replica's over-limit cache.
        for _ in 0..2 {
            let denied = check(&mut client, "GET", "/v1/items/1", Some(key)).await;
            assert_eq!(denied.status, 429);
        }
    }
    assert_eq!(reset(&mut admin, &key, "GET", "/v1/items/99").await, 3);
    // At once on this replica: its over-limit cache entry is gone with the bucket.
    for remaining in [2, 1, 0] {
        let answer = check(&mut client, "GET", "/v1/items/1", Some(&key)).await;
        assert_eq!(answer.status, 200, "a full window after the reset");
        assert_eq!(answer.number("x-ratelimit-remaining"), remaining);
    }
    let denied = check(&mut client, "GET", "/v1/items/1", Some(&key)).await;
    assert_eq!(denied.status, 429, "and only a full window");
    let bystander = check(&mut client, "GET", "/v1/items/1", Some(&bystander)).await;
    assert_eq!(bystander.status, 429, "another key keeps its count");
    assert_eq!(
        reset(&mut admin, &unique_key("never-seen"), "GET", "/v1/items/1").await,
        0
    );
}

async fn reset_reaches_the_other_replicas_deny_cache(mut backend: Backend) {
    if !backend.is_shared() {
        return; // One process per in-memory store: there is no other replica.
    }
    let (a, b) = (
        Tollgate::start(backend.config(ITEMS)).await,
        Tollgate::start(backend.config(ITEMS)).await,
    );
    let (mut client_a, mut client_b) = (a.client().await, b.client().await);
    let mut admin_a = admin(&a).await;
    let key = unique_key("replicas");
    for _ in 0..3 {
        check(&mut client_a, "GET", "/v1/items/1", Some(&key)).await;
    }
    // B learns from the store that the bucket is full, and caches it until the window's end.
    let denied = check(&mut client_b, "GET", "/v1/items/1", Some(&key)).await;
    assert_eq!(denied.status, 429);
    assert!(denied.number("retry-after") > 50);

    // What the cache costs the store now: a hammered full bucket asks it twice a second.
    let script_calls =
        |redis: &common::RedisServer| common::redis_server::script_calls(&mut redis.connection());
    if let Some(redis) = backend.redis_server() {
        let calls_before = script_calls(redis);
        let started = Instant::now();
        let mut checks = 0;
        while started.elapsed() < Duration::from_secs(2) {
            let answer = check(&mut client_b, "GET", "/v1/items/1", Some(&key)).await;
            assert_eq!(answer.status, 429);
            checks += 1;
        }
        let calls = script_calls(redis) - calls_before;
        println!("hammered full bucket: {checks} checks in 2 s, {calls} store calls");
        assert!(calls <= 6, "{calls} store calls for {checks} checks");
        assert!(checks > 10 * calls, "{checks} checks, {calls} store calls");
    }

    assert_eq!(reset(&mut admin_a, &key, "GET", "/v1/items/1").await, 3);
    let reset_returned = Instant::now();
    tokio::time::sleep(Duration::from_millis(500).saturating_sub(reset_returned.elapsed())).await;
    let answer = check(&mut client_b, "GET", "/v1/items/1", Some(&key)).await;
    assert_eq!(
        answer.status,
        200,
        "B admits half a second after a reset through A, {:?} after it",
        reset_returned.elapsed()
    );
    assert_eq!(answer.number("x-ratelimit-remaining"), 2, "a full window");
}

async fn a_lowered_limit_is_read_as_a_check_sees_it(backend: Backend) {
    if !backend.is_shared() {
        return; // The memory store's property test covers limits that change between checks.
    }
    // One Redis, two instances: the second one has the limit lowered from 3 to 2.
    let three = Tollgate::start(backend.config(ITEMS)).await;
    let two = Tollgate::start(backend.config(&ITEMS.replace("requests: 3", "requests: 2"))).await;
    let key = unique_key("lowered");
    let mut client = three.client().await;
    for _ in 0..3 {
        check(&mut client, "GET", "/v1/items/1", Some(&key)).await;
    }
    let quota = quota(&mut admin(&two).await, &key, "GET", "/v1/items/1").await;
    assert_eq!((quota.limit, quota.used, quota.remaining), (2, 3, 0));
    let denied = check(&mut two.client().await, "GET", "/v1/items/1", Some(&key)).await;
    assert_eq!(denied.status, 429);
    assert_eq!(
        quota.reset_unix_ms,
        denied.number("x-ratelimit-reset"),
        "when the count falls below the lowered limit, as the check says"
    );
}

async fn list_routes_is_the_check_config_table(backend: Backend) {
    let config = backend.config(DEFAULT_YAML);
    let printed = config.to_string();
    let tollgate = Tollgate::start(config).await;
    let table = admin(&tollgate)
        .await
        .list_routes(ListRoutesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(table.routes.len(), 10);
    let table_lines: Vec<&str> = printed
        .lines()
        .skip_while(|line| !line.starts_with("routes"))
        .skip(1)
        .collect();
    for (route, line) in table.routes.iter().zip(&table_lines) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[0], route.method, "{line}");
        assert_eq!(fields[1], route.path, "{line}");
        assert_eq!(fields[2], route.limit.to_string(), "{line}");
        assert_eq!(fields[5], format!("{}s", route.window_ms / 1000), "{line}");
        assert_eq!(
            route.bucket,
            format!("{} {}", route.method, &route.path[3..]),
            "bucket names drop the prefix"
        );
    }
    let campaigns = table
        .routes
        .iter()
        .find(|r| r.path == "/v1/campaigns/:id")
        .expect("GET /v1/campaigns/:id");
    assert_eq!((campaigns.limit, campaigns.window_ms), (120, 60_000));
    let default = table.default_route.expect("the default route");
    assert_eq!(default.path, "/v1/**");
    assert_eq!((default.limit, default.window_ms), (60, 60_000));
    assert_eq!(default.bucketing(), DefaultBucket::Shared);
    assert!(
        table_lines.last().unwrap().contains("/v1/**"),
        "{table_lines:?}"
    );
}

/// The admin API reads a key as a check reads its header: a key pasted with a newline reaches the
/// bucket and the plan checks use, and a key no check would count is refused, not reported as
/// reset or re-planned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_read_as_a_check_reads_it() {
    let tollgate = Tollgate::start(Backend::memory().config(ITEMS)).await;
    let mut admin = admin(&tollgate).await;
    let mut client = tollgate.client().await;
    let key = unique_key("trimmed");
    for _ in 0..3 {
        check(&mut client, "GET", "/v1/items/1", Some(&key)).await;
    }
    let pasted = format!(" {key}\r\n");
    assert_eq!(
        quota(&mut admin, &pasted, "GET", "/v1/items/1").await.used,
        3
    );
    assert_eq!(reset(&mut admin, &pasted, "GET", "/v1/items/1").await, 3);
    let answer = check(&mut client, "GET", "/v1/items/1", Some(&key)).await;
    assert_eq!(answer.status, 200, "the checks' bucket was reset");
    assert_eq!(answer.number("x-ratelimit-remaining"), 2);
    admin
        .set_plan(SetPlanRequest {
            api_key: format!("{key}\n"),
            plan: "pro".into(),
        })
        .await
        .expect("SetPlan answers");
    let plan = admin
        .get_plan(GetPlanRequest {
            api_key: key.clone(),
        })
        .await
        .expect("GetPlan answers")
        .into_inner();
    assert_eq!(plan.plan, "pro", "stored under the key checks use");

    for (refused, why) in [
        ("", "empty"),
        (" \n\t", "blank"),
        ("K,L", "comma"),
        ("K L", "printable ASCII"),
        ("K\u{a0}", "printable ASCII"),
        ("K\u{7f}", "printable ASCII"),
    ] {
        let request = || ResetQuotaRequest {
            api_key: refused.into(),
            method: "GET".into(),
            path: "/v1/items/1".into(),
            ..Default::default()
        };
        let errors = [
            admin.reset_quota(request()).await.unwrap_err(),
            admin
                .get_quota(GetQuotaRequest {
                    api_key: refused.into(),
                    method: "GET".into(),
                    path: "/v1/items/1".into(),
                    ..Default::default()
                })
                .await
                .unwrap_err(),
            admin
                .set_plan(SetPlanRequest {
                    api_key: refused.into(),
                    plan: "pro".into(),
                })
                .await
                .unwrap_err(),
            admin
                .get_plan(GetPlanRequest {
                    api_key: refused.into(),
                })
                .await
                .unwrap_err(),
        ];
        for error in errors {
            assert_eq!(error.code(), tonic::Code::InvalidArgument, "{refused:?}");
            assert!(
                error.message().contains(why),
                "{refused:?}: {}",
                error.message()
            );
        }
    }
}

fn token_file(token: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}.token", unique_key("admin")));
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_token_is_required() {
    let file = token_file("s3cret-admin-token");
    let backend = Backend::memory();
    let config = backend.config(&format!("admin: {{ token_file: {} }}\n", file.display()));
    let tollgate = Tollgate::start(config).await;
    let channel = Channel::from_shared(format!("http://{}", tollgate.admin_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    for (header, expected) in [
        (None, tonic::Code::Unauthenticated),
        (Some("Bearer wrong"), tonic::Code::Unauthenticated),
        (
            Some("Bearer s3cret-admin-token-and-more"),
            tonic::Code::Unauthenticated,
        ),
        (Some("Bearer s3cret-admin-token"), tonic::Code::Ok),
    ] {
        let mut client =
            AdminClient::with_interceptor(channel.clone(), move |mut r: tonic::Request<()>| {
                if let Some(header) = header {
                    r.metadata_mut()
                        .insert("authorization", header.parse().unwrap());
                }
                Ok(r)
            });
        let routes = client.list_routes(ListRoutesRequest::default()).await;
        let reset = client
            .reset_quota(ResetQuotaRequest {
                api_key: "k".into(),
                method: "GET".into(),
                path: "/v1/x".into(),
                ..Default::default()
            })
            .await;
        for code in [
            routes
                .map(drop)
                .map_or_else(|s| s.code(), |()| tonic::Code::Ok),
            reset
                .map(drop)
                .map_or_else(|s| s.code(), |()| tonic::Code::Ok),
        ] {
            assert_eq!(code, expected, "{header:?}");
        }
    }
    std::fs::remove_file(file).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_is_not_on_the_ext_authz_port() {
    let tollgate = Tollgate::start(Backend::memory().config(DEFAULT_YAML)).await;
    assert_ne!(tollgate.addr.port(), tollgate.admin_addr.port());
    let mut on_authz_port = AdminClient::new(tollgate.channel().await);
    for status in [
        on_authz_port
            .list_routes(ListRoutesRequest::default())
            .await
            .unwrap_err(),
        on_authz_port
            .reset_quota(ResetQuotaRequest {
                api_key: "k".into(),
                method: "GET".into(),
                path: "/v1/users".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
    ] {
        assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    }
    // Nor is ext_authz on the admin port.
    let mut authz_on_admin_port =
        envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(
            format!("http://{}", tollgate.admin_addr),
        )
        .await
        .unwrap();
    let status = authz_on_admin_port
        .check(common::envoy_request("GET", "/v1/users", Some("k")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_stops_with_the_server() {
    let config = Backend::memory().config("drain_period: 200ms\nshutdown_grace: 500ms\n");
    let mut tollgate = Tollgate::start(config).await;
    // A client that keeps its connection open must not hold the shutdown up.
    let mut held = admin(&tollgate).await;
    held.list_routes(ListRoutesRequest::default())
        .await
        .unwrap();
    let started = Instant::now();
    let server = tollgate.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    held.list_routes(ListRoutesRequest::default())
        .await
        .expect("the admin API answers while draining");
    tokio::time::timeout(Duration::from_secs(3), server)
        .await
        .expect("stops within drain + grace")
        .expect("stops cleanly");
    println!("stopped {:?} after the signal", started.elapsed());
    assert!(
        tokio::net::TcpStream::connect(tollgate.admin_addr)
            .await
            .is_err(),
        "the admin listener is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_admin_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let tollgate = Tollgate::start(Backend::memory().config(DEFAULT_YAML)).await;
    let channel = Channel::from_shared(format!("http://{}", tollgate.admin_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(tonic::codegen::tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("{answer:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"tollgate.admin.v1.Admin"), "{names:?}");
}

/// Runs `tollgate admin ...` and returns its exit status, standard output and standard error.
fn tollgate_admin(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("admin")
        .args(args)
        .output()
        .expect("the tollgate binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reads_and_resets_quotas_of_a_running_binary() {
    let file = token_file("cli-token");
    let wrong = token_file("not-the-token");
    let yaml = format!(
        "drain_period: 0s\nshutdown_grace: 1s\nadmin: {{ token_file: {} }}\n{ITEMS}",
        file.display()
    );
    let mut process = TollgateProcess::start(&yaml, common::free_port());
    let addr = format!("127.0.0.1:{}", process.admin_port);
    let token = file.to_str().unwrap();
    let key = unique_key("cli-secret-key");

    let (ok, routes, _) = tollgate_admin(&["--addr", &addr, "--token-file", token, "routes"]);
    assert!(ok);
    assert!(
        routes.contains("GET    /v1/items/:id") && routes.contains("3 requests / 60s"),
        "{routes}"
    );
    assert!(routes.contains("/v1/**"), "{routes}");

    let mut client = envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(
        format!("http://127.0.0.1:{}", process.port),
    )
    .await
    .unwrap();
    for _ in 0..3 {
        check(&mut client, "GET", "/v1/items/5", Some(&key)).await;
    }
    let quota_args = [
        "--addr",
        &addr,
        "--token-file",
        token,
        "quota",
        "--key",
        &key,
        "GET",
        "/v1/items/6",
    ];
    let (ok, quota, _) = tollgate_admin(&quota_args);
    assert!(ok);
    assert!(quota.contains("bucket:    GET /items/:id"), "{quota}");
    assert!(quota.contains("used:      3\nremaining: 0"), "{quota}");

    let (ok, reset, _) = tollgate_admin(&[
        "--addr",
        &addr,
        "--token-file",
        token,
        "reset",
        "--key",
        &key,
        "GET",
        "/v1/items/6",
    ]);
    assert!(ok);
    assert!(reset.contains("3 counted request(s) forgotten"), "{reset}");
    let (_, quota, _) = tollgate_admin(&quota_args);
    assert!(quota.contains("used:      0\nremaining: 3"), "{quota}");
    assert_eq!(
        check(&mut client, "GET", "/v1/items/5", Some(&key))
            .await
            .status,
        200
    );

    let (_, outside, _) = tollgate_admin(&[
        "--addr",
        &addr,
        "--token-file",
        token,
        "quota",
        "--key",
        &key,
        "GET",
        "/health",
    ]);
    assert!(outside.contains("not rate limited"), "{outside}");

    let (ok, _, refused) = tollgate_admin(&[
        "--addr",
        &addr,
        "--token-file",
        wrong.to_str().unwrap(),
        "routes",
    ]);
    assert!(!ok);
    assert!(refused.contains("Unauthenticated"), "{refused}");
    let (ok, _, refused) = tollgate_admin(&["--addr", &addr, "routes"]);
    assert!(!ok);
    assert!(refused.contains("Unauthenticated"), "{refused}");
    let ext_authz = format!("127.0.0.1:{}", process.port);
    let (ok, _, refused) = tollgate_admin(&["--addr", &ext_authz, "--token-file", token, "routes"]);
    assert!(!ok, "the ext_authz port has no admin API");
    assert!(refused.contains("Unimplemented"), "{refused}");

    process.sigterm();
    assert!(process.wait(Duration::from_secs(5)).success());
    let log = process.log();
    assert!(log.contains("quota reset through the admin API"), "{log}");
    assert!(
        !log.contains(&key),
        "the raw API key is never logged:\n{log}"
    );
    for path in [file, wrong] {
        std::fs::remove_file(path).unwrap();
    }
}
