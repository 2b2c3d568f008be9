//! What only the Redis store does: outages, script cache loss, key names and expiry (on every
//! supported server).

mod common;

use common::redis_server::{Flavour, RedisServer, script_calls};
use common::{Backend, Tollgate, check, unique_key};
use redis::Commands;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};
use tollgate::api_key::KeyDigest;
use tollgate::config::Topology;
use tollgate::policy::limit::{Limit, Mode, Rule};
use tollgate::store::{BucketRef, QuotaStore, RedisStore};

const ROUTES: &str =
    "routes:\n  - { method: GET, path: /items/:id, limit: { requests: 3, window: 2s } }\n";

/// The status of one check of `GET /v1/items/1` with `key`.
async fn item_status(
    client: &mut envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient<tonic::transport::Channel>,
    key: &str,
) -> u16 {
    check(client, "GET", "/v1/items/1", Some(key)).await.status
}

/// Generous bound against hangs (reconnect backoff, a missing timeout); not a speed target.
const NO_HANG: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_open_without_headers_and_recovers_without_restart() {
    let mut backend = Backend::redis();
    let tollgate = Tollgate::start(backend.config(ROUTES)).await;
    let mut client = tollgate.client().await;
    let key = unique_key("outage");
    for _ in 0..3 {
        assert_eq!(item_status(&mut client, &key).await, 200);
    }
    assert_eq!(item_status(&mut client, &key).await, 429);

    backend.redis_server().unwrap().stop();
    let fresh = unique_key("outage-fresh");
    for i in 0..20 {
        let started = Instant::now();
        let answer = check(&mut client, "GET", "/v1/items/1", Some(&fresh)).await;
        assert!(
            started.elapsed() < NO_HANG,
            "check {i} took {:?}",
            started.elapsed()
        );
        assert_eq!(answer.status, 200, "fail open: {answer:?}");
        assert!(
            answer.headers.is_empty(),
            "no rate-limit headers while Redis is down: {answer:?}"
        );
    }
    // The bucket known to be full stays denied from memory until its reset: that needs no Redis,
    // even once the entry is past its trust and the check asks Redis again.
    tokio::time::sleep(tollgate::check::deny_cache::TRUST).await;
    assert_eq!(item_status(&mut client, &key).await, 429);

    backend.redis_server().unwrap().restart();
    // The restarted Redis lost its data (no persistence), so limits start afresh once the
    // connection is re-established.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut recovered = None;
    while Instant::now() < deadline {
        let answer = check(&mut client, "GET", "/v1/items/1", Some(&fresh)).await;
        if answer.has_rate_limit_headers() {
            recovered = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = recovered.expect("limits apply again without restarting tollgate");
    let key = fresh;
    assert_eq!(first.status, 200);
    assert_eq!(first.number("x-ratelimit-remaining"), 2);
    assert_eq!(item_status(&mut client, &key).await, 200);
    assert_eq!(item_status(&mut client, &key).await, 200);
    assert_eq!(item_status(&mut client, &key).await, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_fails_open_after_the_timeout() {
    let backend = Backend::redis();
    let config = backend.config_as_written(&format!("redis: {{ timeout: 100ms }}\n{ROUTES}"));
    let tollgate = Tollgate::start(config).await;
    let mut client = tollgate.client().await;
    let key = unique_key("slow");
    assert!(
        check(&mut client, "GET", "/v1/items/1", Some(&key))
            .await
            .has_rate_limit_headers()
    );

    // Redis is busy for 1.5 s: every command waits behind DEBUG SLEEP.
    let Backend::Redis(redis) = &backend else {
        unreachable!()
    };
    let mut connection = redis.connection();
    let sleeper = std::thread::spawn(move || {
        let _: () = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg("1.5")
            .query(&mut connection)
            .unwrap();
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let answer = check(&mut client, "GET", "/v1/items/1", Some(&key)).await;
    let waited = started.elapsed();
    assert_eq!(answer.status, 200);
    assert!(
        answer.headers.is_empty(),
        "fail open without headers: {answer:?}"
    );
    assert!(
        waited >= Duration::from_millis(100),
        "it waited for the timeout: {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(1300),
        "it did not wait for Redis: {waited:?}"
    );
    sleeper.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_mode_deny_answers_503_while_redis_is_down() {
    let mut backend = Backend::redis();
    let tollgate = Tollgate::start(backend.config(&format!("failure_mode: deny\n{ROUTES}"))).await;
    let mut client = tollgate.client().await;
    let key = unique_key("deny");
    assert_eq!(item_status(&mut client, &key).await, 200);
    backend.redis_server().unwrap().stop();
    let answer = check(&mut client, "GET", "/v1/items/1", Some(&key)).await;
    assert_eq!(answer.status, 503);
    assert!(
        answer.body.contains("rate_limit_unavailable"),
        "{}",
        answer.body
    );
    assert!(!answer.has_rate_limit_headers());
    // Requests that are not rate limited do not depend on Redis.
    assert_eq!(check(&mut client, "GET", "/other", None).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_script_cache_is_reloaded() {
    let backend = Backend::redis();
    let tollgate = Tollgate::start(backend.config(ROUTES)).await;
    let mut client = tollgate.client().await;
    let key = unique_key("flush");
    assert_eq!(item_status(&mut client, &key).await, 200);
    let Backend::Redis(redis) = &backend else {
        unreachable!()
    };
    let mut connection = redis.connection();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut connection)
        .unwrap();
    let answer = check(&mut client, "GET", "/v1/items/1", Some(&key)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.number("x-ratelimit-remaining"),
        1,
        "state survived, script reloaded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_hashed_hash_tagged_and_expire() {
    let backend = Backend::redis();
    let tollgate = Tollgate::start(backend.config(ROUTES)).await;
    let mut client = tollgate.client().await;
    let key = unique_key("secret-api-key");
    check(&mut client, "GET", "/v1/items/1", Some(&key)).await;
    check(&mut client, "GET", "/v1/other", Some(&key)).await;

    let Backend::Redis(redis) = &backend else {
        unreachable!()
    };
    let mut connection = redis.connection();
    let mut names: Vec<String> = connection.keys("*").unwrap();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    for name in &names {
        assert!(!name.contains(&key), "raw API key stored in {name}");
        let tag = name
            .split_once('{')
            .and_then(|(_, rest)| rest.split_once('}'))
            .map(|(t, _)| t);
        assert_eq!(
            tag.map(str::len),
            Some(32),
            "one hash tag, the key digest: {name}"
        );
        let ttl: i64 = connection.pttl(name).unwrap();
        assert!(ttl > 0, "{name} expires (pttl {ttl})");
    }
    assert!(
        names.iter().any(|n| n.ends_with("}:GET /items/:id")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.ends_with("}:default")), "{names:?}");
    let tags: Vec<_> = names.iter().map(|n| n.split('}').next().unwrap()).collect();
    assert_eq!(tags[0], tags[1], "all buckets of one key share a slot");

    let item_key = names.iter().find(|n| n.ends_with("/items/:id")).unwrap();
    let ttl: i64 = connection.pttl(item_key).unwrap();
    assert!(ttl <= 2000, "expires after one window: {ttl}");
    tokio::time::sleep(Duration::from_millis(ttl as u64 + 100)).await;
    let exists: bool = connection.exists(item_key).unwrap();
    assert!(!exists, "the log is gone once its window has passed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hammering_after_a_429_costs_no_redis_traffic() {
    let backend = Backend::redis();
    let tollgate = Tollgate::start(backend.config(ROUTES)).await;
    let mut client = tollgate.client().await;
    let Backend::Redis(redis) = &backend else {
        unreachable!()
    };
    let mut connection = redis.connection();
    let key = unique_key("hammer");
    for _ in 0..3 {
        assert_eq!(item_status(&mut client, &key).await, 200);
    }
    let first_429 = check(&mut client, "GET", "/v1/items/1", Some(&key)).await;
    assert_eq!(first_429.status, 429);
    let reset = first_429.number("x-ratelimit-reset");

    let before = script_calls(&mut connection);
    let hammered = Instant::now();
    for _ in 0..50 {
        let answer = check(&mut client, "GET", "/v1/items/2", Some(&key)).await;
        assert_eq!(answer.status, 429);
        assert_eq!(
            answer.number("x-ratelimit-reset"),
            reset,
            "same headers as Redis gave"
        );
        assert_eq!(answer.number("x-ratelimit-limit"), 3);
        assert_eq!(answer.number("x-ratelimit-remaining"), 0);
        assert!((1..=2).contains(&answer.number("retry-after")));
    }
    // An entry is trusted for half a second (a quota reset on another replica is seen within
    // it): past that, one check asks Redis again and renews it.
    let rechecks = (hammered.elapsed().as_millis() / 500) as u64;
    let calls = script_calls(&mut connection) - before;
    assert!(
        calls <= rechecks,
        "answered from memory: {calls} calls in {:?}",
        hammered.elapsed()
    );
    let before = before + calls;
    // Another key is not affected by the cache.
    let other = check(
        &mut client,
        "GET",
        "/v1/items/1",
        Some(&unique_key("other")),
    )
    .await;
    assert_eq!(other.status, 200);
    assert_eq!(script_calls(&mut connection), before + 1);

    // At the reset the cache lets go and Redis admits again.
    common::sleep_until_unix_millis(reset + 20).await;
    let again = check(&mut client, "GET", "/v1/items/1", Some(&key)).await;
    assert_eq!(again.status, 200, "{again:?}");
}

/// A private CA and a server certificate for 127.0.0.1 that it signs, made with the openssl
/// command line. Returns (CA certificate, server certificate, server key).
fn private_pki(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=tollgate test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_is_verified_and_used() {
    let dir = common::temp::dir();
    let (ca, cert, key) = private_pki(dir.path());
    let redis = common::RedisServer::start_tls(&cert, &key);
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let overrides = common::loopback();

    let trusted = format!(
        "redis: {{ url: \"{url}\", timeout: 1s, tls_ca_file: \"{}\" }}\n{ROUTES}",
        ca.display()
    );
    let config = tollgate::config::Config::from_yaml(&trusted, "tls", &overrides).unwrap();
    let tollgate = Tollgate::start(config).await;
    let mut client = tollgate.client().await;
    let api_key = unique_key("tls");
    let answer = check(&mut client, "GET", "/v1/items/1", Some(&api_key)).await;
    assert_eq!(
        answer.number("x-ratelimit-remaining"),
        2,
        "counted over TLS: {answer:?}"
    );

    // Without the CA the certificate is not trusted: the check fails open, nothing is counted.
    let untrusted = format!("redis: {{ url: \"{url}\", timeout: 1s }}\n{ROUTES}");
    let config = tollgate::config::Config::from_yaml(&untrusted, "tls", &overrides).unwrap();
    let unverified = Tollgate::start(config).await;
    let mut client = unverified.client().await;
    let answer = check(&mut client, "GET", "/v1/items/1", Some(&api_key)).await;
    assert_eq!(answer.status, 200);
    assert!(
        answer.headers.is_empty(),
        "an unverified server is not used: {answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_spreads_the_keys_over_its_nodes() {
    let backend = Backend::cluster();
    let tollgate = Tollgate::start(backend.config(ROUTES)).await;
    let mut client = tollgate.client().await;
    for i in 0..60 {
        let answer = check(
            &mut client,
            "GET",
            "/v1/items/1",
            Some(&unique_key(&format!("spread-{i}"))),
        )
        .await;
        assert_eq!(answer.number("x-ratelimit-remaining"), 2, "{answer:?}");
    }
    let Backend::Cluster(cluster) = &backend else {
        unreachable!()
    };
    let mut total = 0;
    for port in &cluster.ports {
        let mut node = redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .unwrap()
            .get_connection()
            .unwrap();
        let keys: u64 = redis::cmd("DBSIZE").query(&mut node).unwrap();
        assert!(keys > 0, "node {port} holds none of 60 keys");
        total += keys;
    }
    assert_eq!(total, 60, "one sliding log per API key");
}

/// A store of one connection to `redis`, once it answers.
async fn ready_store(redis: &RedisServer, key_prefix: &str) -> RedisStore {
    common::ready_store(&redis.url(), Topology::Standalone, key_prefix).await
}

/// A reload that raises a route's capacity lays its ring out again (oldest first, from one read
/// of the whole string) and loses no time counted before: the ring is counted exactly under the
/// larger capacity while it grows past one block of the script's reads (127 slots), written on
/// while its new slots lie in the first block (header and slots in one command) and past it
/// (apart), to the new limit and not one request further.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_capacity_keeps_every_counted_time() {
    let rule = |requests: u32| {
        let limit = Limit {
            requests: NonZeroU32::new(requests).unwrap(),
            window: Duration::from_secs(60),
        };
        Rule::new(vec![limit], 1, Mode::Enforce).unwrap()
    };
    let redis = RedisServer::start();
    let store = ready_store(&redis, "capacity").await;
    let key = KeyDigest::of("capacity");
    let bucket = BucketRef {
        key: &key,
        name: "GET /x",
    };
    // 90 times, laid out again from slot 0 under the larger capacity: the next 37 are written
    // with the header, the rest apart, and the newest ones read from the blocks past the first.
    let before = rule(100);
    for n in 1..=90 {
        let outcome = store.check(bucket, &before).await.unwrap();
        assert_eq!(
            (outcome.allowed, outcome.windows[0].remaining),
            (true, 100 - n)
        );
    }
    let after = rule(400);
    for n in 91..=400 {
        let outcome = store.check(bucket, &after).await.unwrap();
        assert_eq!(
            (outcome.allowed, outcome.windows[0].remaining),
            (true, 400 - n),
            "request {n} under the raised capacity"
        );
    }
    let outcome = store.check(bucket, &after).await.unwrap();
    assert!(!outcome.allowed, "a 401st request in the window");
}

/// A bucket's expiry is only ever lengthened, on every supported server (Redis 6.2 has no
/// `PEXPIRE … GT`, so the script compares by hand): a check under a shorter window (after a
/// reload) keeps the longer life of what was counted before, a longer one extends it, and a ring
/// without an expiry keeps none, as GT would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_only_ever_lengthened_on_every_server() {
    let rule = |seconds: u64| {
        let limit = Limit {
            requests: NonZeroU32::new(10).unwrap(),
            window: Duration::from_secs(seconds),
        };
        Rule::new(vec![limit], 1, Mode::Enforce).unwrap()
    };
    for flavour in [Flavour::Redis7, Flavour::Redis62, Flavour::Valkey8] {
        let redis = RedisServer::start_flavour(flavour);
        let store = ready_store(&redis, "expiry").await;
        let key = KeyDigest::of("expiry");
        let bucket = BucketRef {
            key: &key,
            name: "GET /x",
        };
        let name = store.key_name(bucket);
        let mut connection = redis.connection();
        let checked_under = |seconds| {
            let store = &store;
            let rule = rule(seconds);
            async move {
                let outcome = store.check(bucket, &rule).await.expect("the store answers");
                assert!(outcome.allowed, "{flavour:?}");
            }
        };

        checked_under(60).await;
        let ttl: i64 = connection.pttl(&name).unwrap();
        assert!((59_000..=60_000).contains(&ttl), "{flavour:?}: {ttl}");
        checked_under(2).await;
        let ttl: i64 = connection.pttl(&name).unwrap();
        assert!(
            ttl > 59_000,
            "{flavour:?}: a shorter window kept it ({ttl})"
        );
        checked_under(120).await;
        let ttl: i64 = connection.pttl(&name).unwrap();
        assert!(
            ttl > 119_000,
            "{flavour:?}: a longer one extended it ({ttl})"
        );

        let _: bool = connection.persist(&name).unwrap();
        checked_under(120).await;
        let ttl: i64 = connection.pttl(&name).unwrap();
        assert_eq!(ttl, -1, "{flavour:?}: no expiry stays none");
    }
}
