//! Traces of checks, exported to a real OTLP/gRPC receiver (tests/common/otlp.rs): a check whose
//! request carries `traceparent` is a child of that span, with the decision's attributes and a
//! child span for its store call; a collector that is down or slow never holds a check back, and
//! what it loses is counted. Envoy's span and tollgate's share one trace id in `tests/envoy.rs`.

mod common;

use common::otlp::{Receiver, attribute};
use common::{Backend, Tollgate, check_request::envoy_request, unique_key};
use envoy_types::ext_authz::v3::pb::CheckRequest;
use std::time::{Duration, Instant};

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID: &str = "b7ad6b7169203331";

fn config(receiver: &Receiver, ratio: f64) -> String {
    format!(
        r#"
tracing: {{ otlp_endpoint: "{}", sampling_ratio: {ratio} }}
routes:
  - {{ method: GET, path: /campaigns/:id, limit: {{ requests: 2, window: 60s }} }}
"#,
        receiver.endpoint()
    )
}

/// A check of `path` for `key`, with `traceparent` instead of the helper's own (or none).
fn request(path: &str, key: &str, traceparent: Option<&str>) -> CheckRequest {
    let mut request = envoy_request("GET", path, Some(key));
    let headers = &mut request
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .expect("an HTTP request")
        .headers;
    headers.remove("traceparent");
    if let Some(traceparent) = traceparent {
        headers.insert("traceparent".into(), traceparent.into());
    }
    request
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of `series` on tollgate's metrics listener.
async fn metric(tollgate: &Tollgate, series: &str) -> f64 {
    let port = tollgate.metrics_addr.expect("metrics on").port();
    let response = common::http::request(port, "GET", "/metrics", &[]).await;
    response
        .body
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {}", response.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_with_traceparent_is_a_child_of_the_requests_span() {
    let receiver = Receiver::start().await;
    let backend = Backend::redis();
    let tollgate = Tollgate::start(backend.config(&config(&receiver, 1.0))).await;
    let mut client = tollgate.client().await;
    let key = unique_key("traced");
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    for _ in 0..3 {
        client
            .check(request("/v1/campaigns/9", &key, Some(&traceparent)))
            .await
            .unwrap();
    }
    let limit = Duration::from_secs(10);
    let of_trace = |s: &opentelemetry_proto::tonic::trace::v1::Span| hex(&s.trace_id) == TRACE_ID;
    let denied = receiver
        .span(
            "tollgate.check",
            |s| of_trace(s) && attribute(s, "tollgate.decision").as_deref() == Some("denied"),
            limit,
        )
        .await
        .expect("the denied check's span");
    assert_eq!(hex(&denied.parent_span_id), PARENT_ID);
    let allowed = receiver
        .span(
            "tollgate.check",
            |s| of_trace(s) && attribute(s, "tollgate.decision").as_deref() == Some("allowed"),
            limit,
        )
        .await
        .expect("an allowed check's span");
    assert_eq!(hex(&allowed.parent_span_id), PARENT_ID);
    assert_eq!(
        attribute(&allowed, "tollgate.route").as_deref(),
        Some("GET /campaigns/:id")
    );
    assert_eq!(attribute(&allowed, "tollgate.cost").as_deref(), Some("1"));
    assert_eq!(
        attribute(&allowed, "tollgate.window").as_deref(),
        Some("2 requests / 60s")
    );
    assert!(attribute(&allowed, "tollgate.store.duration_us").is_some());
    assert!(allowed.end_time_unix_nano >= allowed.start_time_unix_nano);
    let store = receiver
        .span(
            "tollgate.store",
            |s| s.parent_span_id == allowed.span_id,
            limit,
        )
        .await
        .expect("the store call's span, a child of the check's");
    assert_eq!(store.trace_id, allowed.trace_id);
    assert!(store.start_time_unix_nano >= allowed.start_time_unix_nano);
    assert!(store.end_time_unix_nano <= allowed.end_time_unix_nano);

    // Three checks, three store calls.
    let deadline = Instant::now() + limit;
    while metric(&tollgate, "tollgate_trace_spans_total{result=\"exported\"}").await < 6.0 {
        assert!(Instant::now() < deadline, "six spans exported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_switch_sampling_on_only_envoy_can() {
    let receiver = Receiver::start().await;
    let tollgate = Tollgate::start(common::config(&config(&receiver, 0.0))).await;
    let mut client = tollgate.client().await;
    let sampled = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    // The request's own header says sampled: a client wrote it, the ratio (0) decides.
    for _ in 0..20 {
        client
            .check(request("/v1/campaigns/1", "k", Some(&sampled)))
            .await
            .unwrap();
    }
    client
        .check(request("/v1/campaigns/1", "k", None))
        .await
        .unwrap();
    // The call's context (Envoy's span) says sampled: followed.
    let mut call = tonic::Request::new(request("/v1/campaigns/2", "k", None));
    call.metadata_mut()
        .insert("traceparent", sampled.parse().unwrap());
    client.check(call).await.unwrap();
    let span = receiver
        .span("tollgate.check", |_| true, Duration::from_secs(10))
        .await
        .expect("the span of the check Envoy sampled");
    assert_eq!(hex(&span.parent_span_id), PARENT_ID);
    // Anything else would have been exported with it or a second later.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let checks = receiver
        .spans()
        .into_iter()
        .filter(|s| s.name == "tollgate.check")
        .count();
    assert_eq!(checks, 1, "only the check Envoy sampled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sampling_ratio_starts_traces_of_checks_without_traceparent() {
    let receiver = Receiver::start().await;
    let tollgate = Tollgate::start(common::config(&config(&receiver, 1.0))).await;
    let mut client = tollgate.client().await;
    let key = unique_key("root");
    client.check(request("/outside", &key, None)).await.unwrap();
    let root = receiver
        .span("tollgate.check", |_| true, Duration::from_secs(10))
        .await
        .expect("a root span");
    assert!(root.parent_span_id.is_empty(), "a root: {root:?}");
    assert_eq!(
        attribute(&root, "tollgate.decision").as_deref(),
        Some("not_limited")
    );
    assert_eq!(attribute(&root, "tollgate.route"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_down_or_slow_never_holds_a_check_back_and_losses_are_counted() {
    // Nothing listens: every export fails, and is counted.
    let down = common::ports::free_port();
    let yaml =
        format!("tracing: {{ otlp_endpoint: \"http://127.0.0.1:{down}\", sampling_ratio: 1.0 }}\n");
    let tollgate = Tollgate::start(common::config(&yaml)).await;
    let mut client = tollgate.client().await;
    for i in 0..50 {
        let started = Instant::now();
        client
            .check(request(&format!("/v1/x/{i}"), "k", None))
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a check waited for the collector"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(
        &tollgate,
        "tollgate_trace_spans_total{result=\"export_failed\"}",
    )
    .await
        < 50.0
    {
        assert!(Instant::now() < deadline, "failed exports not counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A collector that takes 30 s per export: the queue fills, and the checks past it drop
    // their spans at once rather than wait.
    let receiver = Receiver::start().await;
    receiver.slow_down(Duration::from_secs(30));
    let tollgate = Tollgate::start(common::config(&config(&receiver, 1.0))).await;
    let mut client = tollgate.client().await;
    let started = Instant::now();
    for i in 0..5000 {
        client
            .check(request(&format!("/v1/x/{i}"), "k", None))
            .await
            .unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "5000 checks took {:?}: they waited for the collector",
        started.elapsed()
    );
    let dropped = metric(
        &tollgate,
        "tollgate_trace_spans_total{result=\"queue_full\"}",
    )
    .await;
    // 4 096 wait in the queue and up to 512 in the batch being sent.
    assert!(dropped >= 5000.0 - 4096.0 - 512.0, "{dropped}");
}

/// Envoy's HTTP connection manager traced by its OpenTelemetry tracer, exporting to `otlp`.
fn traced_envoy(config: String, otlp: u16) -> String {
    let tracing = r#"stat_prefix: api
                tracing:
                  random_sampling: { value: 100 }
                  provider:
                    name: envoy.tracers.opentelemetry
                    typed_config:
                      "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                      grpc_service:
                        envoy_grpc: { cluster_name: otlp }
                        timeout: 1s
                      service_name: envoy"#;
    let cluster = format!(
        r#"  clusters:
    - name: otlp
      type: STATIC
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: {{ http2_protocol_options: {{}} }}
      load_assignment:
        cluster_name: otlp
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {otlp} }} }} }}
"#
    );
    config
        .replacen("stat_prefix: api", tracing, 1)
        .replacen("  clusters:\n", &cluster, 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoys_span_and_tollgates_share_one_trace() {
    let receiver = Receiver::start().await;
    let backend = Backend::redis();
    let tollgate = Tollgate::start(backend.config(&format!(
        "{}\ntracing: {{ otlp_endpoint: \"{}\" }}\n",
        tollgate::config::DEFAULT_YAML,
        receiver.endpoint()
    )))
    .await;
    let upstream = common::http::Upstream::start().await;
    let (ports, otlp) = ([tollgate.addr.port()], receiver.port);
    let upstream_port = upstream.port;
    let envoy = tokio::task::spawn_blocking(move || {
        common::envoy::Envoy::start_edited(&ports, upstream_port, |config| {
            traced_envoy(config, otlp)
        })
    })
    .await
    .unwrap();
    let key = unique_key("e2e-traced");
    let response = common::http::request(
        envoy.port,
        "GET",
        "/v1/campaigns/5",
        &[("x-api-key", key.as_str())],
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");
    let limit = Duration::from_secs(20);
    let check = receiver.span("tollgate.check", |_| true, limit).await;
    let names: Vec<String> = receiver
        .spans()
        .iter()
        .map(|s| format!("{} {} {}", s.name, hex(&s.trace_id), hex(&s.parent_span_id)))
        .collect();
    let check = check.unwrap_or_else(|| panic!("tollgate's span: {names:?}"));
    // Envoy's request span and its ext_authz client span, in tollgate's trace; tollgate's span is
    // the client span's child.
    receiver
        .span("ingress", |s| s.trace_id == check.trace_id, limit)
        .await
        .unwrap_or_else(|| panic!("Envoy's request span in tollgate's trace: {names:?}"));
    let ext_authz = receiver
        .span(
            "async envoy.service.auth.v3.Authorization.Check egress",
            |s| s.trace_id == check.trace_id,
            limit,
        )
        .await
        .unwrap_or_else(|| panic!("Envoy's ext_authz span in tollgate's trace: {names:?}"));
    assert_eq!(check.parent_span_id, ext_authz.span_id);
    assert_eq!(
        attribute(&check, "tollgate.route").as_deref(),
        Some("GET /campaigns/:id")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calls_trace_context_wins_over_the_requests() {
    let receiver = Receiver::start().await;
    let tollgate = Tollgate::start(common::config(&config(&receiver, 0.0))).await;
    let mut client = tollgate.client().await;
    let call_parent = "1111111111111111";
    let mut call = tonic::Request::new(request(
        "/v1/campaigns/1",
        "k",
        Some(&format!("00-{TRACE_ID}-{PARENT_ID}-01")),
    ));
    call.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{call_parent}-01").parse().unwrap(),
    );
    client.check(call).await.unwrap();
    let span = receiver
        .span("tollgate.check", |_| true, Duration::from_secs(10))
        .await
        .expect("a span");
    assert_eq!(hex(&span.parent_span_id), call_parent);
}
