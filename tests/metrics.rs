//! The Prometheus metrics, scraped over a real socket from tollgate serving real checks: every
//! result moves its counter by exactly the checks sent, the route label stays bounded, the store
//! series follow a Redis that stops, and the shipped Grafana dashboard asks only for series that
//! tollgate exports.

mod common;

use common::{
    Backend, RedisServer, Tollgate, WireRequest, check, check_raw, free_port, unique_key,
};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tollgate::config::Config;

/// Series name with its labels, as written in the exposition (`name{a="x",b="y"}`) → value.
type Scrape = HashMap<String, f64>;

/// tollgate with its metrics on a port of its own, held from the bind on (a port picked free
/// beforehand could be taken by a test running beside this one), and that port.
async fn start(config: Config) -> (Tollgate, u16) {
    let mut config = config;
    config.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let tollgate = Tollgate::start(config).await;
    let port = tollgate.metrics_addr.expect("metrics are on").port();
    (tollgate, port)
}

/// One `GET` of `target` on the metrics port, retried while the listener is still being bound.
async fn get(port: u16, method: &str, target: &str) -> common::http::HttpResponse {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (method, target) = (method.to_owned(), target.to_owned());
        let response = tokio::task::spawn_blocking(move || {
            common::http::request_blocking(port, &method, &target, &[])
        })
        .await
        .unwrap();
        match response {
            Ok(response) => return response,
            Err(e) if Instant::now() > deadline => panic!("metrics port {port}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn scrape(port: u16) -> Scrape {
    let response = get(port, "GET", "/metrics").await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    parse(&response.body)
}

fn parse(text: &str) -> Scrape {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

fn checks(route: &str, result: &str) -> String {
    format!("tollgate_checks_total{{result=\"{result}\",route=\"{route}\"}}")
}

/// `after - before` for every series whose value changed.
fn moved(before: &Scrape, after: &Scrape, prefix: &str) -> HashMap<String, f64> {
    after
        .iter()
        .filter(|(series, _)| series.starts_with(prefix))
        .map(|(series, value)| (series.clone(), value - before.get(series).unwrap_or(&0.0)))
        .filter(|(_, delta)| *delta != 0.0)
        .collect()
}

fn expect(pairs: &[(String, f64)]) -> HashMap<String, f64> {
    pairs.iter().cloned().collect()
}

const ROUTES: &str =
    "routes:\n  - { method: GET, path: /campaigns/:id, limit: { requests: 2, window: 60s } }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_result_moves_its_counter_by_exactly_the_checks_sent() {
    // Two buckets fit in the memory store: a third is refused (503), never failed open.
    let yaml = format!("memory_store_entries: 2\n{ROUTES}");
    let (tollgate, port) = start(Backend::memory().config(&yaml)).await;
    let mut client = tollgate.client().await;
    let before = scrape(port).await;
    let campaigns = "GET /campaigns/:id";
    let (key, other) = (unique_key("metrics"), unique_key("metrics-other"));

    for expected in [200, 200, 429, 429] {
        let answer = check(&mut client, "GET", "/v1/campaigns/7", Some(&key)).await;
        assert_eq!(answer.status, expected);
    }
    assert_eq!(
        check(&mut client, "GET", "/v1/teams", Some(&key))
            .await
            .status,
        200
    );
    assert_eq!(
        check(&mut client, "GET", "/v1/campaigns/8", None)
            .await
            .status,
        401
    );
    // The store is full: the other key's bucket is refused.
    let failed = check(&mut client, "GET", "/v1/campaigns/9", Some(&other)).await;
    assert_eq!(failed.status, 503, "{failed:?}");
    assert_eq!(check(&mut client, "GET", "/health", None).await.status, 200);
    assert_eq!(
        common::preflight(&mut client, "/v1/campaigns/7")
            .await
            .status,
        200
    );
    let ambiguous = WireRequest::new("GET", "/v1/campaigns/7")
        .header("x-api-key", format!("{key},{other}").as_bytes())
        .encode();
    let garbage = vec![0xff, 0xff, 0xff];
    for message in [ambiguous, garbage] {
        let answer = common::Answer::from_response(check_raw(&tollgate, message).await.unwrap());
        assert_eq!(answer.status, 400);
    }

    let after = scrape(port).await;
    assert_eq!(
        moved(&before, &after, "tollgate_checks_total"),
        expect(&[
            (checks(campaigns, "allowed"), 2.0),
            (checks(campaigns, "denied"), 2.0),
            (checks("default", "allowed"), 1.0),
            (checks(campaigns, "unauthenticated"), 1.0),
            (checks(campaigns, "failed_closed"), 1.0),
            (checks("none", "not_limited"), 2.0),
            (checks(campaigns, "bad_request"), 1.0),
            (checks("none", "bad_request"), 1.0),
        ])
    );
    // The second 429 came from the over-limit cache; the store was asked for the others.
    assert_eq!(
        moved(&before, &after, "tollgate_deny_cache_hits"),
        expect(&[("tollgate_deny_cache_hits_total".into(), 1.0)])
    );
    assert_eq!(after["tollgate_deny_cache_entries"], 1.0);
    assert_eq!(
        moved(&before, &after, "tollgate_store_errors_total"),
        expect(&[("tollgate_store_errors_total{kind=\"full\"}".into(), 1.0)])
    );
    let count = |series: &str| after[series] - before[series];
    assert_eq!(count("tollgate_store_duration_seconds_count"), 5.0);
    assert_eq!(count("tollgate_check_duration_seconds_count"), 11.0);
    assert_eq!(
        after["tollgate_store_breakers_open"], 0.0,
        "no breaker in memory"
    );
    assert_eq!(after["tollgate_build_info{version=\"0.1.0\"}"], 1.0);
    for result in ["applied", "refused"] {
        let series = format!("tollgate_config_reloads_total{{result=\"{result}\"}}");
        assert_eq!(after[&series], 0.0, "{series}");
    }

    // Failing closed instead, in a tollgate whose store holds one bucket.
    let deny = format!("failure_mode: deny\nmemory_store_entries: 1\n{ROUTES}");
    let (closed, closed_port) = start(Backend::memory().config(&deny)).await;
    let mut client = closed.client().await;
    assert_eq!(
        check(&mut client, "GET", "/v1/campaigns/1", Some(&key))
            .await
            .status,
        200
    );
    assert_eq!(
        check(&mut client, "GET", "/v1/campaigns/1", Some(&other))
            .await
            .status,
        503
    );
    assert_eq!(
        scrape(closed_port).await[&checks(campaigns, "failed_closed")],
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_label_is_bounded_by_the_route_table() {
    let yaml = format!("default_bucket: per_path\n{ROUTES}");
    let (tollgate, port) = start(Backend::memory().config(&yaml)).await;
    let mut client = tollgate.client().await;
    let key = unique_key("secret-api-key");
    for i in 0..100 {
        check(
            &mut client,
            "GET",
            &format!("/v1/campaigns/{i}"),
            Some(&key),
        )
        .await;
        check(&mut client, "GET", &format!("/v1/things/{i}"), Some(&key)).await;
        check(&mut client, "GET", &format!("/outside/{i}"), Some(&key)).await;
    }
    let text = get(port, "GET", "/metrics").await.body;
    assert!(!text.contains(&key), "an API key in the metrics");
    assert!(!text.contains("things"), "a raw path in the metrics");
    let scrape = parse(&text);
    let routes: BTreeSet<&str> = scrape
        .keys()
        .filter_map(|s| s.strip_prefix("tollgate_checks_total{"))
        .map(|labels| {
            labels
                .split("route=\"")
                .nth(1)
                .unwrap()
                .trim_end_matches("\"}")
        })
        .collect();
    assert_eq!(
        routes,
        BTreeSet::from(["GET /campaigns/:id", "default", "per_path", "quota", "none"])
    );
    assert_eq!(scrape[&checks("GET /campaigns/:id", "allowed")], 2.0);
    assert_eq!(scrape[&checks("GET /campaigns/:id", "denied")], 98.0);
    assert_eq!(scrape[&checks("per_path", "allowed")], 100.0);
    assert_eq!(scrape[&checks("none", "not_limited")], 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_series_follow_a_redis_that_stops_and_comes_back() {
    let mut backend = Backend::Redis(RedisServer::start());
    let (tollgate, port) = start(backend.config(ROUTES)).await;
    let mut client = tollgate.client().await;
    let key = unique_key("redis-down");
    assert!(
        check(&mut client, "GET", "/v1/campaigns/1", Some(&key))
            .await
            .has_rate_limit_headers()
    );
    let before = scrape(port).await;

    backend.redis_server().unwrap().stop();
    const CHECKS: usize = 10;
    for _ in 0..CHECKS {
        let answer = check(&mut client, "GET", "/v1/campaigns/1", Some(&key)).await;
        assert!(
            answer.status == 200 && !answer.has_rate_limit_headers(),
            "{answer:?}"
        );
    }
    let down = scrape(port).await;
    assert_eq!(
        moved(&before, &down, "tollgate_checks_total"),
        expect(&[(checks("GET /campaigns/:id", "failed_open"), CHECKS as f64)])
    );
    let errors = moved(&before, &down, "tollgate_store_errors_total");
    assert_eq!(errors.values().sum::<f64>(), CHECKS as f64, "{errors:?}");
    // Each of the four connections fails once as Redis closes it and is then made again in the
    // background; the checks after that fail at once, no connection being ready.
    let kind = |kind: &str| {
        errors
            .get(&format!("tollgate_store_errors_total{{kind=\"{kind}\"}}"))
            .copied()
            .unwrap_or(0.0)
    };
    let refused = kind("error") + kind("timeout");
    assert!((1.0..=4.0).contains(&refused), "{errors:?}");
    assert_eq!(kind("not_connected"), CHECKS as f64 - refused, "{errors:?}");
    assert_eq!(down["tollgate_store_breakers_open"], 0.0);
    assert_eq!(
        down["tollgate_store_duration_seconds_count"]
            - before["tollgate_store_duration_seconds_count"],
        CHECKS as f64
    );

    backend.redis_server().unwrap().restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check(
        &mut client,
        "GET",
        "/v1/campaigns/2",
        Some(&unique_key("back")),
    )
    .await
    .has_rate_limit_headers()
    {
        assert!(Instant::now() < deadline, "limits never applied again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(scrape(port).await["tollgate_store_breakers_open"], 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_metrics_is_served_and_the_listener_follows_the_server() {
    let yaml = format!("drain_period: 0s\n{ROUTES}");
    let (mut tollgate, port) = start(Backend::memory().config(&yaml)).await;
    assert_eq!(get(port, "GET", "/metrics").await.status, 200);
    let head = get(port, "HEAD", "/metrics").await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    for path in ["/", "/metrics/", "/metricsx", "/v1/campaigns/1"] {
        assert_eq!(get(port, "GET", path).await.status, 404, "{path}");
    }
    let post = get(port, "POST", "/metrics").await;
    assert_eq!(
        (post.status, post.header("allow")),
        (405, Some("GET, HEAD"))
    );

    tokio::time::timeout(Duration::from_secs(10), tollgate.begin_shutdown())
        .await
        .expect("stops")
        .unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the metrics listener closes with the server"
    );

    let port = free_port();
    let overrides = tollgate::config::Overrides {
        listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    };
    let yaml = format!("metrics: {{ enabled: false, listen: \"127.0.0.1:{port}\" }}\n{ROUTES}");
    let off = Config::from_yaml(&yaml, "test", &overrides).unwrap();
    assert_eq!(off.metrics_listen, None);
    let tollgate = Tollgate::start(off).await;
    let mut client = tollgate.client().await;
    check(&mut client, "GET", "/v1/campaigns/1", Some("k")).await;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "metrics.enabled: false binds nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_asks_only_for_exported_series() {
    let (tollgate, port) = start(Backend::memory().config(ROUTES)).await;
    tollgate.client().await;
    let exported: BTreeSet<String> = get(port, "GET", "/metrics")
        .await
        .body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect();
    assert!(
        exported.contains("tollgate_check_duration_seconds_bucket"),
        "{exported:?}"
    );

    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/k8s/grafana/tollgate-dashboard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("valid JSON");
    // The name finder itself: names outside matchers, ranges and grouping only.
    assert_eq!(
        metric_names(
            "histogram_quantile(0.99, sum by (le) (rate(x_bucket{route=\"GET /a\"}[$__rate_interval]))) / y"
        ),
        ["x_bucket", "y"]
    );
    let mut queries = Vec::new();
    collect_queries(&dashboard, &mut queries);
    assert!(queries.len() >= 4, "{queries:?}");
    for query in &queries {
        let names: Vec<&str> = metric_names(query);
        assert!(!names.is_empty(), "{query}: asks for no tollgate series");
        for name in names {
            assert!(exported.contains(name), "{query}: {name} is not exported");
        }
    }
}

/// Every `expr` of every panel target, however deeply nested (rows hold panels).
fn collect_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(expr)) = map.get("expr") {
                out.push(expr.clone());
            }
            map.values().for_each(|v| collect_queries(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_queries(v, out)),
        _ => {}
    }
}

/// The metric names a PromQL expression selects: identifiers outside label matchers and
/// `by (...)` clauses that are not functions or keywords. Every one must be tollgate's, so a
/// name outside the `tollgate_` namespace counts as a name the scrape lacks.
fn metric_names(query: &str) -> Vec<&str> {
    assert!(
        !query.contains('"') || query.contains('{'),
        "{query}: a string outside label matchers"
    );
    const WORDS: [&str; 11] = [
        "sum",
        "rate",
        "irate",
        "increase",
        "histogram_quantile",
        "by",
        "without",
        "max",
        "min",
        "avg",
        "clamp_min",
    ];
    let mut names = Vec::new();
    let mut rest = query;
    // Inside `{...}` (label matchers) or `[...]` (ranges, Grafana's `$__rate_interval`).
    let mut depth_braces = 0;
    let mut after_by = false;
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic() || "_{}[]()".contains(c)) {
        let c = rest[start..].chars().next().unwrap();
        match c {
            '{' | '[' => {
                depth_braces += 1;
                rest = &rest[start + 1..];
                continue;
            }
            '}' | ']' => {
                depth_braces -= 1;
                rest = &rest[start + 1..];
                continue;
            }
            '(' | ')' => {
                if c == ')' {
                    after_by = false;
                }
                rest = &rest[start + 1..];
                continue;
            }
            _ => {}
        }
        let end = rest[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(rest.len(), |e| start + e);
        let word = &rest[start..end];
        // A preceding digit makes it a duration or number suffix (`5m`, `1e3`), not a name.
        let in_number = start > 0 && rest.as_bytes()[start - 1].is_ascii_digit();
        if word == "by" || word == "without" {
            after_by = true;
        } else if depth_braces == 0 && !after_by && !in_number && !WORDS.contains(&word) {
            names.push(word);
        }
        rest = &rest[end..];
    }
    names
}

#[test]
fn a_metrics_port_that_cannot_be_bound_stops_tollgate_at_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--metrics-listen", &taken.local_addr().unwrap().to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tollgate kept running without its metrics port");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("cannot bind the metrics listener"), "{log}");
}
