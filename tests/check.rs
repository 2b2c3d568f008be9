//! The ext_authz contract, over a real socket, with the same test bodies for both stores.

mod common;

use common::{
    Backend, Tollgate, WireRequest, check, sleep_until_unix_millis, unique_key, unix_millis,
};
use prost::Message;
use std::time::{Duration, Instant};
use tollgate::config::DEFAULT_YAML;

for_each_store!(
    every_contract_route_has_its_limit_and_headers,
    id_segments_share_one_bucket_per_template,
    undeclared_routes_share_the_default_bucket,
    keys_are_isolated,
    path_spellings_cannot_reach_a_fresh_bucket,
    head_options_and_foreign_paths,
    missing_or_empty_key_is_401,
    two_api_keys_are_refused_and_cost_nothing,
    a_header_flood_costs_its_bytes_only,
    malformed_check_requests_get_400,
    a_burst_waits_for_the_oldest_request_to_leave,
    denied_requests_do_not_consume_quota,
    no_trailing_window_admits_more_than_the_limit,
    concurrent_checks_admit_exactly_the_limit,
);

const CONTRACT: [(&str, &str, u64); 10] = [
    ("GET", "/v1/analytics", 30),
    ("GET", "/v1/analytics/daily", 30),
    ("GET", "/v1/analytics/by-user", 30),
    ("POST", "/v1/leads/add_to_campaign", 20),
    ("GET", "/v1/campaigns", 60),
    ("GET", "/v1/campaigns/17", 120),
    ("GET", "/v1/campaigns/17/statistics", 30),
    ("GET", "/v1/users", 60),
    ("GET", "/v1/users/u-1", 60),
    ("GET", "/v1/teams/me", 60),
];

async fn every_contract_route_has_its_limit_and_headers(backend: Backend) {
    let tollgate = Tollgate::start(backend.config(DEFAULT_YAML)).await;
    let mut client = tollgate.client().await;
    let key = unique_key("contract");
    for (method, path, limit) in CONTRACT {
        let started = unix_millis();
        let mut first_reset = None;
        for i in 1..=limit {
            let answer = check(&mut client, method, path, Some(&key)).await;
            assert_eq!(
                answer.status, 200,
                "{method} {path} request {i}: {answer:?}"
            );
            assert_eq!(answer.number("x-ratelimit-limit"), limit);
            assert_eq!(answer.number("x-ratelimit-remaining"), limit - i);
            assert_eq!(answer.header("retry-after"), None);
            let reset = answer.number("x-ratelimit-reset");
            // The oldest counted request is the first one: it leaves 60 s after it was made.
            assert_eq!(
                *first_reset.get_or_insert(reset),
                reset,
                "reset follows the oldest request"
            );
            assert!(
                reset >= started + 60_000 && reset <= unix_millis() + 60_001,
                "{reset}"
            );
        }
        let denied = check(&mut client, method, path, Some(&key)).await;
        assert_eq!(denied.status, 429, "{method} {path} request {}", limit + 1);
        assert_eq!(denied.number("x-ratelimit-limit"), limit);
        assert_eq!(denied.number("x-ratelimit-remaining"), 0);
        let reset = denied.number("x-ratelimit-reset");
        assert_eq!(Some(reset), first_reset);
        let retry_after = denied.number("retry-after");
        let wait_ms = reset.saturating_sub(unix_millis());
        assert!(
            (1..=60).contains(&retry_after) && retry_after * 1000 + 1000 >= wait_ms + 1000 - 50,
            "retry-after {retry_after} s for a wait of {wait_ms} ms"
        );
        assert_eq!(denied.header("content-type"), Some("application/json"));
        assert!(
            denied.body.contains("\"error\":\"rate_limited\""),
            "{}",
            denied.body
        );
        assert!(
            denied.body.contains(&format!("\"limit\":{limit}")),
            "{}",
            denied.body
        );
    }
}

async fn id_segments_share_one_bucket_per_template(backend: Backend) {
    let tollgate = Tollgate::start(backend.config(DEFAULT_YAML)).await;
    let mut client = tollgate.client().await;
    let key = unique_key("ids");
    for i in 0..120 {
        let answer = check(
            &mut client,
            "GET",
            &format!("/v1/campaigns/{i}"),
            Some(&key),
        )
        .await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.number("x-ratelimit-remaining"), 119 - i);
    }
    let denied = check(&mut client, "GET", "/v1/campaigns/brand-new-id", Some(&key)).await;
    assert_eq!(denied.status, 429, "a new id is the same bucket");
    // The more specific template is a bucket of its own.
    let stats = check(&mut client, "GET", "/v1/campaigns/3/statistics", Some(&key)).await;
    assert_eq!((stats.status, stats.number("x-ratelimit-limit")), (200, 30));
    let list = check(&mut client, "GET", "/v1/campaigns", Some(&key)).await;
    assert_eq!((list.status, list.number("x-ratelimit-limit")), (200, 60));
}

async fn undeclared_routes_share_the_default_bucket(backend: Backend) {
    let tollgate = Tollgate::start(backend.config(DEFAULT_YAML)).await;
    let mut client = tollgate.client().await;
    let key = unique_key("default");
    for i in 0..60u64 {
        // Varying paths and methods that no route declares: one bucket.
        let (method, path) = match i % 3 {
            0 => ("GET", format!("/v1/undeclared/{i}")),
            1 => ("DELETE", format!("/v1/campaigns/{i}")),
            _ => ("POST", "/v1/analytics".to_owned()),
        };
        let answer = check(&mut client, method, &path, Some(&key)).await;
        assert_eq!(answer.status, 200, "{method} {path}");
        assert_eq!(answer.number("x-ratelimit-limit"), 60);
        assert_eq!(answer.number("x-ratelimit-remaining"), 59 - i);
    }
    let denied = check(&mut client, "PUT", "/v1/yet/another/path", Some(&key)).await;
    assert_eq!(denied.status, 429);
    let declared = check(&mut client, "GET", "/v1/analytics", Some(&key)).await;
    assert_eq!(
        declared.status, 200,
        "declared routes have their own buckets"
    );
}

async fn keys_are_isolated(backend: Backend) {
    let tollgate = Tollgate::start(backend.config(DEFAULT_YAML)).await;
    let mut client = tollgate.client().await;
    let (a, b) = (unique_key("a"), unique_key("b"));
    for _ in 0..20 {
        let answer = check(&mut client, "POST", "/v1/leads/add_to_campaign", Some(&a)).await;
        assert_eq!(answer.status, 200);
    }
    let a_denied = check(&mut client, "POST", "/v1/leads/add_to_campaign", Some(&a)).await;
    assert_eq!(a_denied.status, 429);
    let b_first = check(&mut client, "POST", "/v1/leads/add_to_campaign", Some(&b)).await;
    assert_eq!(b_first.status, 200);
    assert_eq!(b_first.number("x-ratelimit-remaining"), 19);
}

async fn path_spellings_cannot_reach_a_fresh_bucket(backend: Backend) {
    let tollgate = Tollgate::start(backend.config(DEFAULT_YAML)).await;
    let mut client = tollgate.client().await;
    let key = unique_key("spellings");
    let spellings = common::ANALYTICS_DAILY_SPELLINGS
        .iter()
        .chain(&["/v1/analytics/daily#frag", "/v1\\analytics\\daily"]);
    for (i, path) in spellings.clone().cycle().take(30).enumerate() {
        let answer = check(&mut client, "GET", path, Some(&key)).await;
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(answer.number("x-ratelimit-limit"), 30, "{path}");
        assert_eq!(
            answer.number("x-ratelimit-remaining"),
            29 - i as u64,
            "{path}"
        );
    }
    for path in spellings {
        let answer = check(&mut client, "GET", path, Some(&key)).await;
        assert_eq!(answer.status, 429, "{path} reached a fresh bucket");
    }
}

async fn head_options_and_foreign_paths(backend: Backend) {
    let tollgate = Tollgate::start(backend.config(DEFAULT_YAML)).await;
    let mut client = tollgate.client().await;
    let key = unique_key("methods");
    let head = check(&mut client, "HEAD", "/v1/teams/me", Some(&key)).await;
    assert_eq!(
        (head.status, head.number("x-ratelimit-remaining")),
        (200, 59)
    );
    let get = check(&mut client, "GET", "/v1/teams/me", Some(&key)).await;
    assert_eq!(
        get.number("x-ratelimit-remaining"),
        58,
        "HEAD counted as GET"
    );
    for _ in 0..5 {
        let preflight = common::preflight(&mut client, "/v1/teams/me").await;
        assert_eq!(preflight.status, 200);
        assert!(preflight.headers.is_empty(), "{preflight:?}");
    }
    // An OPTIONS that is no preflight is counted, as an undeclared method: some upstreams serve it
    // with the real handler.
    let plain = check(&mut client, "OPTIONS", "/v1/teams/me", None).await;
    assert_eq!(plain.status, 401, "{plain:?}");
    let counted = check(&mut client, "OPTIONS", "/v1/teams/me", Some(&key)).await;
    assert_eq!(
        counted.number("x-ratelimit-limit"),
        60,
        "the default bucket"
    );
    let after = check(&mut client, "GET", "/v1/teams/me", Some(&key)).await;
    assert_eq!(
        after.number("x-ratelimit-remaining"),
        57,
        "OPTIONS not counted"
    );
    for path in ["/healthz", "/v2/teams/me", "/v10/x", "/", "/v1/../admin"] {
        let answer = check(&mut client, "GET", path, None).await;
        assert_eq!(answer.status, 200, "{path}");
        assert!(answer.headers.is_empty(), "{path}: {answer:?}");
    }
}

async fn missing_or_empty_key_is_401(backend: Backend) {
    let tollgate = Tollgate::start(backend.config(DEFAULT_YAML)).await;
    let mut client = tollgate.client().await;
    for key in [None, Some(""), Some("   ")] {
        let answer = check(&mut client, "GET", "/v1/users", key).await;
        assert_eq!(answer.status, 401, "{key:?}");
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert!(answer.body.contains("missing_api_key"), "{}", answer.body);
        assert!(answer.body.contains("x-api-key"), "{}", answer.body);
        assert!(!answer.has_rate_limit_headers());
    }
}

async fn two_api_keys_are_refused_and_cost_nothing(backend: Backend) {
    let tollgate = Tollgate::start(backend.config(DEFAULT_YAML)).await;
    let key = unique_key("twice");
    let send = |message: Vec<u8>| {
        let tollgate = &tollgate;
        async move {
            common::Answer::from_response(
                common::check_raw(tollgate, message)
                    .await
                    .expect("never a gRPC error"),
            )
        }
    };
    let other = format!("{key}-other");
    let ambiguous = [
        // Envoy joins a repeated header with a comma in `headers`...
        WireRequest::new("GET", "/v1/users")
            .header("x-api-key", format!("{key},{other}").as_bytes())
            .encode(),
        // ...and sends one entry each in `header_map` (encode_raw_headers).
        WireRequest::new("GET", "/v1/users")
            .raw_header("x-api-key", key.as_bytes())
            .raw_header("X-Api-Key", other.as_bytes())
            .encode(),
        WireRequest::new("GET", "/v1/users")
            .raw_header("x-api-key", key.as_bytes())
            .raw_header("x-api-key", key.as_bytes())
            .encode(),
        // Two map entries never come from Envoy; neither may pick a bucket.
        WireRequest::new("GET", "/v1/users")
            .header("x-api-key", key.as_bytes())
            .header("x-api-key", other.as_bytes())
            .encode(),
    ];
    for _ in 0..3 {
        for message in &ambiguous {
            let answer = send(message.clone()).await;
            assert_eq!(answer.status, 400, "{answer:?}");
            assert!(answer.body.contains("ambiguous_api_key"), "{}", answer.body);
            assert!(answer.body.contains("x-api-key"), "{}", answer.body);
            assert!(!answer.has_rate_limit_headers());
        }
    }
    // A key padded with what an upstream may trim by Unicode's rules is no key of its own.
    for padded in ["\u{a0}", "\u{3000}", "\u{200b}", "\u{b}"] {
        let message = WireRequest::new("GET", "/v1/users")
            .header("x-api-key", format!("{key}{padded}").as_bytes())
            .encode();
        let answer = send(message).await;
        assert_eq!(answer.status, 400, "{padded:?}: {answer:?}");
        assert!(answer.body.contains("printable ASCII"), "{}", answer.body);
    }
    // The key's own bucket was not touched, and outside the prefix nothing is asked.
    let mut client = tollgate.client().await;
    let first = check(&mut client, "GET", "/v1/users", Some(&key)).await;
    assert_eq!(first.number("x-ratelimit-remaining"), 59, "{first:?}");
    let outside = send(
        WireRequest::new("GET", "/healthz")
            .header("x-api-key", b"a,b")
            .encode(),
    )
    .await;
    assert_eq!(outside.status, 200);
}

async fn a_header_flood_costs_its_bytes_only(backend: Backend) {
    let tollgate = Tollgate::start(backend.config(DEFAULT_YAML)).await;
    let key = unique_key("flood");
    // 2-byte empty header entries: as many as fit under max_request_bytes (256 KiB), key last.
    let flood = WireRequest::new("GET", "/v1/users")
        .empty_headers(120_000)
        .header("x-api-key", key.as_bytes())
        .encode();
    assert!(flood.len() < 256 << 10, "{}", flood.len());
    let answer = common::Answer::from_response(
        common::check_raw(&tollgate, flood)
            .await
            .expect("never a gRPC error"),
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.number("x-ratelimit-remaining"), 59);
    // Past the limit the message is refused unread, with a 400 like any unusable message.
    let huge = WireRequest::new("GET", "/v1/users")
        .empty_headers(2_000_000)
        .header("x-api-key", key.as_bytes())
        .encode();
    let answer = common::Answer::from_response(
        common::check_raw(&tollgate, huge)
            .await
            .expect("never a gRPC error"),
    );
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(answer.body.contains("larger than"), "{}", answer.body);
}

async fn malformed_check_requests_get_400(backend: Backend) {
    use envoy_types::ext_authz::v3::pb::CheckRequest;
    let tollgate = Tollgate::start(backend.config(DEFAULT_YAML)).await;
    let mut no_path = common::envoy_request("GET", "", Some("k"));
    let http = no_path
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .unwrap();
    http.headers.remove(":path");
    let mut truncated = common::envoy_request("GET", "/v1/users", Some("k")).encode_to_vec();
    truncated.truncate(truncated.len() - 3);
    // Sent as bytes, so that the list can hold messages no protobuf library builds.
    let cases = [
        ("empty request", CheckRequest::default().encode_to_vec()),
        ("no path", no_path.encode_to_vec()),
        (
            "asterisk",
            common::envoy_request("GET", "*", Some("k")).encode_to_vec(),
        ),
        (
            "absolute URI",
            common::envoy_request("GET", "http://h/v1/users", Some("k")).encode_to_vec(),
        ),
        ("truncated message", truncated),
        ("not protobuf at all", b"\xff\xff\xff\xff".to_vec()),
        (
            "API key not UTF-8",
            WireRequest::new("GET", "/v1/users")
                .header("x-api-key", b"k\xff")
                .encode(),
        ),
        (
            "larger than max_request_bytes",
            WireRequest::new("GET", "/v1/users")
                .header("x-api-key", b"k")
                .header("x-padding", &vec![b'p'; 300 << 10])
                .encode(),
        ),
    ];
    for (label, message) in cases {
        let response = common::check_raw(&tollgate, message)
            .await
            .unwrap_or_else(|e| panic!("{label}: gRPC error {e}"));
        let answer = common::Answer::from_response(response);
        assert_eq!(answer.status, 400, "{label}");
        assert!(
            answer.body.contains("bad_request"),
            "{label}: {}",
            answer.body
        );
    }
    // A header tollgate does not read may hold any byte (envoy-types would refuse the message).
    let key = unique_key("stray-byte");
    let stray_byte = WireRequest::new("GET", "/v1/users")
        .header("x-api-key", key.as_bytes())
        .header("cookie", b"\xff")
        .encode();
    let answer = common::Answer::from_response(
        common::check_raw(&tollgate, stray_byte)
            .await
            .expect("a stray byte in an unread header is not an error"),
    );
    assert_eq!(answer.status, 200);
    assert!(answer.has_rate_limit_headers());
}

/// A short-window configuration for timing tests.
fn short_window(requests: u32, window: &str) -> String {
    format!(
        "routes:\n  - {{ method: GET, path: /fast, limit: {{ requests: {requests}, window: {window} }} }}\n"
    )
}

async fn a_burst_waits_for_the_oldest_request_to_leave(backend: Backend) {
    let tollgate = Tollgate::start(backend.config(&short_window(3, "1s"))).await;
    let mut client = tollgate.client().await;
    let key = unique_key("burst");
    let first = check(&mut client, "GET", "/v1/fast", Some(&key)).await;
    assert_eq!(first.status, 200);
    let oldest_leaves = first.number("x-ratelimit-reset");
    // The oldest request stands apart, so its departure frees exactly one slot.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second_sent = unix_millis();
    for remaining in [1, 0] {
        let answer = check(&mut client, "GET", "/v1/fast", Some(&key)).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.number("x-ratelimit-remaining"), remaining);
        assert_eq!(
            answer.number("x-ratelimit-reset"),
            oldest_leaves,
            "reset follows the oldest request"
        );
    }
    let second_received = unix_millis();
    let denied = check(&mut client, "GET", "/v1/fast", Some(&key)).await;
    assert_eq!(denied.status, 429);
    assert_eq!(denied.number("retry-after"), 1);
    assert_eq!(denied.number("x-ratelimit-reset"), oldest_leaves);
    // Still denied shortly before the reset...
    sleep_until_unix_millis(oldest_leaves.saturating_sub(150)).await;
    assert_eq!(
        check(&mut client, "GET", "/v1/fast", Some(&key))
            .await
            .status,
        429
    );
    // ...and allowed again once the oldest request has left: exactly one slot came free.
    sleep_until_unix_millis(oldest_leaves + 20).await;
    let again = check(&mut client, "GET", "/v1/fast", Some(&key)).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.number("x-ratelimit-remaining"), 0);
    let next_reset = again.number("x-ratelimit-reset");
    assert!(
        (second_sent + 1000..=second_received + 1001).contains(&next_reset),
        "the next-oldest request's departure: {next_reset} not in {second_sent}+1s..{second_received}+1s"
    );
}

async fn denied_requests_do_not_consume_quota(backend: Backend) {
    let tollgate = Tollgate::start(backend.config(&short_window(2, "600ms"))).await;
    let mut client = tollgate.client().await;
    let key = unique_key("hammer");
    assert_eq!(
        check(&mut client, "GET", "/v1/fast", Some(&key))
            .await
            .status,
        200
    );
    assert_eq!(
        check(&mut client, "GET", "/v1/fast", Some(&key))
            .await
            .status,
        200
    );
    let mut denied = 0;
    let mut reset = 0;
    let hammer_until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < hammer_until {
        let answer = check(&mut client, "GET", "/v1/fast", Some(&key)).await;
        assert_eq!(answer.status, 429);
        reset = answer.number("x-ratelimit-reset");
        denied += 1;
    }
    assert!(denied > 10, "the client hammered {denied} times");
    sleep_until_unix_millis(reset + 20).await;
    let recovered = check(&mut client, "GET", "/v1/fast", Some(&key)).await;
    assert_eq!(recovered.status, 200, "hammering did not extend the wait");
}

async fn no_trailing_window_admits_more_than_the_limit(backend: Backend) {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    const LIMIT: usize = 4;
    const WINDOW_MS: u64 = 400;
    let tollgate = Tollgate::start(backend.config(&short_window(LIMIT as u32, "400ms"))).await;
    let mut client = tollgate.client().await;
    let key = unique_key("schedule");
    let gaps = prop::collection::vec(0u64..120, 60)
        .new_tree(&mut TestRunner::default())
        .unwrap()
        .current();

    // (sent, received, allowed) in Unix ms; the server's decision time lies between the two.
    let mut log: Vec<(u64, u64, bool)> = Vec::new();
    for gap in gaps {
        tokio::time::sleep(Duration::from_millis(gap)).await;
        let sent = unix_millis();
        let answer = check(&mut client, "GET", "/v1/fast", Some(&key)).await;
        log.push((sent, unix_millis(), answer.status == 200));
    }
    let allowed: Vec<_> = log.iter().filter(|r| r.2).collect();
    // Safety: LIMIT+1 admissions that certainly fall into one window are a violation.
    for run in allowed.windows(LIMIT + 1) {
        let (first_sent, last_received) = (run[0].0, run[LIMIT].1);
        assert!(
            last_received - first_sent >= WINDOW_MS,
            "{} requests admitted within {} ms",
            LIMIT + 1,
            last_received - first_sent
        );
    }
    // Liveness: a denial needs LIMIT admissions that may still be in the window.
    for &(sent, received, ok) in &log {
        if !ok {
            let possibly_in_window = allowed
                .iter()
                .filter(|a| a.1 + WINDOW_MS > sent && a.0 <= received)
                .count();
            assert!(
                possibly_in_window >= LIMIT,
                "denied at {sent} with only {possibly_in_window} in the window"
            );
        }
    }
    assert!(
        allowed.len() > LIMIT && allowed.len() < log.len(),
        "the schedule exercised both outcomes"
    );
}

async fn concurrent_checks_admit_exactly_the_limit(backend: Backend) {
    let yaml =
        "routes:\n  - { method: POST, path: /burst, limit: { requests: 20, window: 60s } }\n";
    // Two replicas on one Redis (or cluster); the in-memory store can only be one instance.
    let first = Tollgate::start(backend.config(yaml)).await;
    let second = if backend.is_shared() {
        Some(Tollgate::start(backend.config(yaml)).await)
    } else {
        None
    };
    let channels = [
        first.channel().await,
        match &second {
            Some(second) => second.channel().await,
            None => first.channel().await,
        },
    ];
    let key = unique_key("concurrent");
    let mut tasks = Vec::new();
    for i in 0..200 {
        let channel = channels[i % 2].clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut client =
                envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::new(channel);
            check(&mut client, "POST", "/v1/burst", Some(&key)).await.status
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 20);
    assert_eq!(statuses.iter().filter(|&&s| s == 429).count(), 180);
}
