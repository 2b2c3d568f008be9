//! Ready only when it can limit: the real binary reports NOT_SERVING until its Redis has
//! answered, then limits every check on every connection; and it limits exactly on each
//! supported server.

mod common;

use common::process::TollgateProcess;
use common::redis_server::{Flavour, RedisServer};
use common::{check, free_port, health, unique_key};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

/// Both services Envoy and Kubernetes may ask about.
const SERVICES: [&str; 2] = ["", "envoy.service.auth.v3.Authorization"];

/// The binary on a free port with `yaml`, and a channel to it.
async fn start(yaml: String) -> (TollgateProcess, Channel) {
    let tollgate = tokio::task::spawn_blocking(move || TollgateProcess::start(&yaml, free_port()))
        .await
        .unwrap();
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", tollgate.port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (tollgate, channel)
}

/// A rollout pointed at a Redis that is not there yet stays NOT_SERVING (so it takes no traffic
/// it would fail open); once Redis answers it is SERVING within about a second, and from then on
/// no check goes unlimited: every one of many, spread over all four connections, carries the
/// rate-limit headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_serving_until_redis_answers_then_every_check_is_limited() {
    let port = free_port();
    let (tollgate, channel) = start(format!(
        "redis: {{ url: \"redis://127.0.0.1:{port}\", connections: 4 }}\nroutes:\n  - {{ method: GET, path: /items/:id, limit: {{ requests: 100000, window: 60s }} }}\n"
    ))
    .await;
    let mut client = AuthorizationClient::new(channel.clone());
    let key = unique_key("ready");

    let unreachable_since = Instant::now();
    while unreachable_since.elapsed() < Duration::from_secs(3) {
        for service in SERVICES {
            assert_eq!(
                health(&channel, service).await,
                ServingStatus::NotServing,
                "{service:?} while nothing listens on the Redis port:\n{}",
                tollgate.log()
            );
        }
        let answer = check(&mut client, "GET", "/v1/items/1", Some(&key)).await;
        assert!(!answer.has_rate_limit_headers(), "{answer:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let redis = RedisServer::start_on_port(Flavour::Redis7, port);
    let redis_started = Instant::now();
    loop {
        let mut statuses = Vec::new();
        for service in SERVICES {
            statuses.push(health(&channel, service).await);
        }
        if statuses.iter().all(|s| *s == ServingStatus::Serving) {
            break;
        }
        // The two are set one after the other and asked one after the other: a poll may fall
        // between the two changes, but they must agree again at once.
        if statuses.iter().any(|s| *s != statuses[0]) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut again = Vec::new();
            for service in SERVICES {
                again.push(health(&channel, service).await);
            }
            assert!(
                again.iter().all(|s| *s == again[0]),
                "both services change together: {statuses:?}, then {again:?}"
            );
            continue;
        }
        assert!(
            redis_started.elapsed() < Duration::from_millis(1500),
            "still NOT_SERVING {:?} after Redis answered:\n{}",
            redis_started.elapsed(),
            tollgate.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("SERVING {:?} after Redis started", redis_started.elapsed());

    // Four connections round-robin: 400 checks pass over each of them a hundred times.
    for i in 0..400 {
        let answer = check(&mut client, "GET", "/v1/items/1", Some(&key)).await;
        assert_eq!(answer.status, 200, "check {i}: {answer:?}");
        assert!(
            answer.has_rate_limit_headers(),
            "check {i} once SERVING went unlimited: {answer:?}\n{}",
            tollgate.log()
        );
    }
    let mut connection = redis.connection();
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut connection)
        .unwrap();
    // Ours, plus the four of tollgate.
    assert_eq!(clients.lines().count(), 5, "{clients}");
    let log = tollgate.log();
    assert_eq!(
        log.matches("cannot connect to redis").count(),
        1,
        "the failure is logged once:\n{log}"
    );
    assert_eq!(
        log.matches("connected to redis;").count(),
        1,
        "and so is the success:\n{log}"
    );
}

/// Redis 6.2 (no `PEXPIRE … GT`) and Valkey 8 limit exactly through the binary: 40 checks on a
/// 30-per-minute route give 30 allowed with headers, then 10 denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_6_2_and_valkey_8_limit_exactly() {
    for flavour in [Flavour::Redis62, Flavour::Valkey8] {
        let redis = RedisServer::start_flavour(flavour);
        let (tollgate, channel) = start(format!(
            "redis: {{ url: \"{}\", timeout: 1s }}\nroutes:\n  - {{ method: GET, path: /reports, limit: {{ requests: 30, window: 60s }} }}\n",
            redis.url()
        ))
        .await;
        for service in SERVICES {
            assert_eq!(
                health(&channel, service).await,
                ServingStatus::Serving,
                "{flavour:?} {service:?}"
            );
        }
        let mut client = AuthorizationClient::new(channel);
        let key = unique_key("exact");
        let mut statuses = Vec::new();
        for i in 0..40 {
            let answer = check(&mut client, "GET", "/v1/reports", Some(&key)).await;
            assert!(
                answer.has_rate_limit_headers(),
                "{flavour:?} check {i}: {answer:?}\n{}",
                tollgate.log()
            );
            statuses.push(answer.status);
        }
        let allowed = statuses.iter().filter(|s| **s == 200).count();
        assert_eq!(allowed, 30, "{flavour:?}: {statuses:?}");
        assert!(
            statuses[30..].iter().all(|s| *s == 429),
            "{flavour:?}: {statuses:?}"
        );
        let log = tollgate.log();
        let name = match flavour {
            Flavour::Redis62 => "redis 6.2.14",
            _ => "valkey 8.1.8 (redis 7.2.4)",
        };
        assert!(log.contains(name), "the version is logged:\n{log}");
    }
}
