//! Health reporting, the drain and the bounded shutdown, and the binary's command line.

mod common;

use common::process::TollgateProcess;
use common::{Backend, RedisServer, Tollgate, check, health, unique_key};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const AUTHZ_SERVICE: &str = "envoy.service.auth.v3.Authorization";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_then_not_serving_while_draining() {
    let backend = Backend::memory();
    let config = backend.config("drain_period: 1s\n");
    let mut tollgate = Tollgate::start(config).await;
    let channel = tollgate.channel().await;
    for service in ["", AUTHZ_SERVICE] {
        assert_eq!(
            health(&channel, service).await,
            ServingStatus::Serving,
            "{service:?}"
        );
    }

    let server = tollgate.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for service in ["", AUTHZ_SERVICE] {
        assert_eq!(
            health(&channel, service).await,
            ServingStatus::NotServing,
            "{service:?}"
        );
    }
    // Checks are still answered, on the existing connection and on a new one.
    let mut client = tollgate.client().await;
    let key = unique_key("drain");
    assert_eq!(
        check(&mut client, "GET", "/v1/users", Some(&key))
            .await
            .status,
        200
    );
    assert!(!server.is_finished(), "still draining");

    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("stops after the drain period")
        .expect("stops cleanly");
}

/// The binary, with its metrics on a port of its own (tests run side by side: never the default
/// 0.0.0.0:9090).
fn tollgate_binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command.env("TOLLGATE_METRICS_LISTEN", "127.0.0.1:0");
    command
}

#[test]
fn check_config_prints_the_resolved_table() {
    let file = common::temp::yaml_file(tollgate::config::DEFAULT_YAML);
    let output = tollgate_binary()
        .arg("check-config")
        .arg(file.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("OK"), "{stdout}");
    // Among templates of one length, literals come before parameters.
    let daily = stdout.find("/v1/analytics/daily ").expect(&stdout);
    let campaign = stdout.find("/v1/campaigns/:id ").expect(&stdout);
    assert!(daily < campaign, "most specific first:\n{stdout}");
    assert!(stdout.contains("120 requests / 60s"), "{stdout}");
    assert!(stdout.contains("memory"), "{stdout}");
    for line in [
        "metadata:        on",
        "quota endpoint:  off",
        "traces:          off",
    ] {
        assert!(stdout.contains(line), "{line:?} in\n{stdout}");
    }
}

const BAD_CONFIG: &str = r#"
listen: nowhere
path_prefx: /v1
default_limit: { requests: 0, window: 60s }
failure_mode: maybe
redis: { url: "redis://:hunter2@127.0.0.1:1", timeout: fast, tls_ca_file: /nonexistent/ca.pem }
routes:
  - { method: GET, path: /campaigns/:id, limit: { requests: 10, window: 60s } }
  - { method: GET, path: /campaigns/:cid, limit: { requests: 5, window: 60s } }
  - { method: GET, path: /users, limit: { requests: 10, window: 5x } }
  - { method: HEAD, path: /teams/me, limit: { requests: 10, window: 1m } }
  - { method: GET, path: /a//b, limit: { requests: 10, window: 1m } }
  - { method: GET, path: /c, limit: { requests: 10, windw: 1m } }
"#;

#[test]
fn a_bad_configuration_is_refused_with_every_problem_named() {
    let file = common::temp::yaml_file(BAD_CONFIG);
    let output = tollgate_binary()
        .arg("check-config")
        .arg(file.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    for expected in [
        "listen: not an address",
        "unknown key path_prefx",
        "default_limit: requests is 0",
        "failure_mode: unknown variant `maybe`, expected `allow` or `deny`",
        "redis.timeout",
        "redis.tls_ca_file: only applies to a rediss:// URL",
        "redis.tls_ca_file: cannot read /nonexistent/ca.pem",
        "routes[1] (GET /campaigns/:cid): duplicates routes[0] (GET /campaigns/:id)",
        "routes[2] (GET /users).limit: cannot parse window \"5x\"",
        "routes[3] (HEAD /teams/me): method \"HEAD\" cannot be declared",
        "routes[4] (GET /a//b): path template \"/a//b\" has an empty segment",
        "routes[5] (GET /c).limit: unknown key windw",
        "routes[5] (GET /c).limit: window is missing",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains("hunter2"),
        "the Redis password leaked:\n{stderr}"
    );
}

#[test]
fn serving_with_a_bad_configuration_exits_before_binding() {
    let file = common::temp::yaml_file(BAD_CONFIG);
    let port = common::free_port();
    let output = tollgate_binary()
        .arg("--config")
        .arg(file.path())
        .env("TOLLGATE_LISTEN", format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("configuration problem"), "{stderr}");
    assert!(!stderr.contains("tollgate starting"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_the_built_in_configuration_and_stops_on_sigterm() {
    let port = common::free_port();
    let child = tollgate_binary()
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "json",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut client = None;
    for _ in 0..100 {
        match envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(
            format!("http://127.0.0.1:{port}"),
        )
        .await
        {
            Ok(c) => {
                client = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let mut client = client.expect("tollgate listens");
    let key = unique_key("binary");
    for remaining in [19, 18] {
        let answer = check(&mut client, "POST", "/v1/leads/add_to_campaign", Some(&key)).await;
        assert_eq!(answer.number("x-ratelimit-remaining"), remaining);
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let log = String::from_utf8(output.stderr).unwrap();
    let start_line = log
        .lines()
        .find(|l| l.contains("tollgate starting"))
        .expect(&log);
    assert!(start_line.starts_with('{'), "JSON log: {start_line}");
    assert!(start_line.contains("memory"), "{start_line}");
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("single instance"), "{log}");
    // .cargo/config.toml took effect: the runtime runs with its LIFO slot off.
    assert!(!log.contains("tokio_unstable"), "{log}");
}

/// After SIGTERM a health Watch stream, which never ends on its own, holds the process only until
/// the drain period and the shutdown grace are over; a check that is in flight when the drain
/// period ends is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_watch_stream_does_not_hold_the_shutdown_and_in_flight_checks_are_answered() {
    const DRAIN: Duration = Duration::from_secs(2);
    const GRACE: Duration = Duration::from_secs(3);
    let redis = RedisServer::start();
    // A Redis timeout longer than the stall below: the check waits for Redis's real answer.
    let yaml = format!(
        "drain_period: 2s\nshutdown_grace: 3s\nredis: {{ url: \"{}\", timeout: 10s }}\n",
        redis.url()
    );
    let mut tollgate =
        tokio::task::spawn_blocking(move || TollgateProcess::start(&yaml, common::free_port()))
            .await
            .unwrap();
    let channel =
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", tollgate.port))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest {
            service: AUTHZ_SERVICE.to_owned(),
        })
        .await
        .expect("Watch answers")
        .into_inner();
    let mut next_status = async || {
        let response = watch
            .message()
            .await
            .expect("Watch stream")
            .expect("status");
        ServingStatus::try_from(response.status).unwrap()
    };
    assert_eq!(next_status().await, ServingStatus::Serving);
    let mut client = AuthorizationClient::new(channel);
    let key = unique_key("grace");
    assert!(
        check(&mut client, "GET", "/v1/users", Some(&key))
            .await
            .has_rate_limit_headers()
    );

    tollgate.sigterm();
    let sigterm_at = Instant::now();
    assert_eq!(next_status().await, ServingStatus::NotServing);

    // Redis stalls from shortly before the end of the drain period until well after it, so the
    // check sent now is answered only during the grace.
    tokio::time::sleep((DRAIN - Duration::from_millis(500)).saturating_sub(sigterm_at.elapsed()))
        .await;
    // CLIENT PAUSE answers at once and holds every other client's commands for 1.5 s, so the
    // stall has begun when the check is sent.
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("ALL")
        .query::<()>(&mut redis.connection())
        .expect("CLIENT PAUSE");
    let sent_after = sigterm_at.elapsed();
    let answer = check(&mut client, "GET", "/v1/users", Some(&key)).await;
    let answered_after = sigterm_at.elapsed();
    println!("check sent {sent_after:?} after SIGTERM, answered after {answered_after:?}");
    assert!(
        sent_after < DRAIN && answered_after > DRAIN,
        "the check must be in flight when the drain period ends: sent {sent_after:?}, answered {answered_after:?}"
    );
    assert_eq!(answer.status, 200);
    assert_eq!(answer.number("x-ratelimit-remaining"), 58, "{answer:?}");

    let status = tokio::task::spawn_blocking(move || {
        let status = tollgate.wait(DRAIN + GRACE + Duration::from_secs(5));
        (status, tollgate.log())
    });
    let (status, log) = status.await.unwrap();
    let exited_after = sigterm_at.elapsed();
    println!("exited {exited_after:?} after SIGTERM with an open Watch stream");
    assert!(status.success(), "{status}:\n{log}");
    assert!(
        exited_after >= DRAIN + GRACE,
        "the grace was cut short: {exited_after:?}\n{log}"
    );
    assert!(
        exited_after < DRAIN + GRACE + Duration::from_secs(3),
        "{exited_after:?}\n{log}"
    );
    assert!(log.contains("shutdown grace over"), "{log}");
    assert!(
        !matches!(watch.message().await, Ok(Some(_))),
        "the Watch stream ended with the process"
    );
}
