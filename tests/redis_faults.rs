//! Redis faults recover by themselves, fast: tollgate in process, a real `redis-server` behind a
//! fault-injecting proxy, and a steady stream of checks through it. The measured times are
//! printed (`cargo test --test redis_faults -- --nocapture`).

mod common;

use common::fault_proxy::{Fault, FaultProxy};
use common::{RedisCluster, RedisServer, Tollgate, unique_key};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tollgate::api_key::KeyDigest;
use tollgate::config::{Config, StoreSettings};
use tonic::transport::Channel;

/// The store timeout of these tests: far above a healthy local Redis even on a loaded CI machine,
/// so that only the injected faults make checks fail.
const TIMEOUT: Duration = Duration::from_millis(300);

/// A limit no stream reaches: every answer Redis gives carries rate-limit headers.
const ROUTES: &str =
    "routes:\n  - { method: GET, path: /items/:id, limit: { requests: 100000, window: 60s } }\n";

/// One check every 2.5 ms (400 a second), sent whether or not earlier ones were answered: the
/// probes (two a second, each waiting for the timeout) stay at 0.5 % of them, under the 1 % a p99
/// looks past, and a debug build keeps up on two loaded cores.
const PACE: Duration = Duration::from_micros(2500);

/// The fault tests each run a stream of checks; on two shared cores they run one at a time so
/// that they measure tollgate, not each other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config_for(url: &str, timeout: Duration) -> Config {
    let yaml = format!(
        "redis: {{ url: \"{url}\", timeout: {}ms }}\n{ROUTES}",
        timeout.as_millis()
    );
    common::config(&yaml)
}

/// What one check of the stream got.
struct Sample {
    sent: Instant,
    latency: Duration,
    /// `Ok(true)`: allowed with rate-limit headers (Redis answered); `Ok(false)`: allowed
    /// without them (failed open); `Err`: a gRPC error or any other status.
    answer: Result<bool, String>,
}

/// Sends checks at `PACE` for `run_for`, each on its own task, and returns what each got.
fn stream(
    client: AuthorizationClient<Channel>,
    run_for: Duration,
) -> tokio::task::JoinHandle<Vec<Sample>> {
    tokio::spawn(async move {
        let keys: Vec<String> = (0..8).map(|i| unique_key(&format!("stream-{i}"))).collect();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut tick = tokio::time::interval(PACE);
        let end = Instant::now() + run_for;
        let mut n = 0;
        while Instant::now() < end {
            tick.tick().await;
            let mut client = client.clone();
            let tx = tx.clone();
            let request = common::envoy_request("GET", "/v1/items/1", Some(&keys[n % keys.len()]));
            n += 1;
            tokio::spawn(async move {
                let sent = Instant::now();
                let answer = match client.check(request).await {
                    Ok(response) => {
                        let answer = common::Answer::from_response(response.into_inner());
                        if answer.status == 200 {
                            Ok(answer.has_rate_limit_headers())
                        } else {
                            Err(format!("status {}: {answer:?}", answer.status))
                        }
                    }
                    Err(status) => Err(format!("gRPC error {status:?}")),
                };
                let _ = tx.send(Sample {
                    sent,
                    latency: sent.elapsed(),
                    answer,
                });
            });
        }
        drop(tx);
        let mut samples = Vec::new();
        while let Some(sample) = rx.recv().await {
            samples.push(sample);
        }
        samples.sort_by_key(|s| s.sent);
        samples
    })
}

fn percentile(latencies: &mut [Duration], p: f64) -> Duration {
    latencies.sort();
    let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
    latencies[index]
}

/// Runs a stream through `proxy`: 0.5 s healthy, `fault` for 2.5 s, then `Pass` for 2.5 s, and
/// checks what tollgate answered in each phase.
async fn fault_then_heal(fault: Fault) {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.port).await;
    let tollgate = Tollgate::start(config_for(&proxy.url(), TIMEOUT)).await;
    let client = tollgate.client().await;

    let samples = stream(client, Duration::from_millis(5500));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let faulted = Instant::now();
    proxy.set(fault);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let healed = Instant::now();
    proxy.set(Fault::Pass);
    let samples = samples.await.unwrap();

    let errors: Vec<&String> = samples
        .iter()
        .filter_map(|s| s.answer.as_ref().err())
        .collect();
    assert!(
        errors.is_empty(),
        "{fault:?}: {} errors, first {:?}",
        errors.len(),
        errors[0]
    );
    assert!(
        samples
            .iter()
            .any(|s| s.sent < faulted && s.answer == Ok(true)),
        "{fault:?}: Redis answered before the fault"
    );

    // Under the fault: every answer fails open, and once the breaker is open, at once.
    let during: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.sent > faulted && s.sent < healed)
        .collect();
    assert!(
        during.iter().all(|s| s.answer == Ok(false)),
        "{fault:?}: an answer with rate-limit headers while Redis was unreachable"
    );
    let slowest = during.iter().map(|s| s.latency).max().unwrap();
    assert!(
        slowest < TIMEOUT + Duration::from_millis(300),
        "{fault:?}: a check waited {slowest:?}, past the timeout"
    );
    let fast = TIMEOUT / 4;
    let fails_open_at_once = during
        .iter()
        .find(|s| s.latency < fast)
        .map(|s| s.sent - faulted)
        .expect("checks fail open at once under the fault");
    let steady_from = faulted + Duration::from_millis(800);
    let mut steady: Vec<Duration> = during
        .iter()
        .filter(|s| s.sent >= steady_from)
        .map(|s| s.latency)
        .collect();
    let steady_checks = steady.len();
    assert!(
        steady_checks > 500,
        "{fault:?}: only {steady_checks} checks sent"
    );
    let p50 = percentile(&mut steady, 0.50);
    let p99 = percentile(&mut steady, 0.99);
    let waited = steady.iter().filter(|l| **l >= fast).count();
    // Half the timeout: a check that waited for Redis takes the whole timeout; the margin is for
    // a loaded machine's scheduling, not for Redis.
    assert!(
        p99 < TIMEOUT / 2,
        "{fault:?}: p99 {p99:?} under the fault, not well under the timeout {TIMEOUT:?}"
    );

    // After healing: limits apply again within 2 s, and then on every connection.
    let recovered = samples
        .iter()
        .find(|s| s.sent > healed && s.answer == Ok(true))
        .map(|s| s.sent + s.latency - healed)
        .unwrap_or_else(|| panic!("{fault:?}: limits never applied again after healing"));
    assert!(
        recovered < Duration::from_secs(2),
        "{fault:?}: limits applied again only after {recovered:?}"
    );
    let settled = healed + recovered + Duration::from_millis(300);
    let after: Vec<&Sample> = samples.iter().filter(|s| s.sent > settled).collect();
    assert!(
        after.len() > 100,
        "{fault:?}: only {} checks after recovery",
        after.len()
    );
    let failed_open = after.iter().filter(|s| s.answer == Ok(false)).count();
    assert_eq!(
        failed_open,
        0,
        "{fault:?}: {failed_open} of {} checks failed open after recovery: a dead connection is still in use",
        after.len()
    );
    println!(
        "{fault:?} (timeout {TIMEOUT:?}): checks fail open at once {fails_open_at_once:?} after the fault began; \
         under the fault p50 {p50:?}, p99 {p99:?} over {steady_checks} checks ({waited} waited for a probe or more); \
         limits apply again {recovered:?} after healing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_fails_open_at_once_and_heals_within_two_seconds() {
    fault_then_heal(Fault::BlackHole).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_past_the_timeout_fails_open_at_once_and_heals_within_two_seconds() {
    fault_then_heal(Fault::Delay(TIMEOUT * 2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_fail_open_at_once_and_heal_within_two_seconds() {
    fault_then_heal(Fault::Reset).await;
}

/// One check of `key`: its latency and whether Redis counted it (rate-limit headers).
async fn timed_check(mut client: AuthorizationClient<Channel>, key: String) -> (Duration, bool) {
    let sent = Instant::now();
    let answer = common::check(&mut client, "GET", "/v1/items/1", Some(&key)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    (sent.elapsed(), answer.has_rate_limit_headers())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cluster_primary_fails_open_fast_and_its_replica_takes_over() {
    let _serial = SERIAL.lock().await;
    let mut cluster = RedisCluster::start_with_replicas();
    let mut config = config_for(&cluster.url(), TIMEOUT);
    config.store = StoreSettings::Cluster(config.store.redis().unwrap().clone());
    let tollgate = Tollgate::start(config).await;
    let client = tollgate.client().await;

    // Two API keys: one served by the primary that is killed, one by another primary.
    let primary_of = |key: &str| {
        let tag = format!("{{{}}}", KeyDigest::of(key).as_str());
        cluster.primary_of_slot(cluster.slot_of(&tag))
    };
    let victim_key = unique_key("failover-victim");
    let victim = primary_of(&victim_key);
    let other_key = (0..)
        .map(|i| unique_key(&format!("failover-other-{i}")))
        .find(|key| primary_of(key) != victim)
        .unwrap();
    for key in [&victim_key, &other_key] {
        let (_, counted) = timed_check(client.clone(), key.clone()).await;
        assert!(counted, "the cluster counts before the failure");
    }

    cluster.kill(victim);
    let killed = Instant::now();
    let mut victim_latencies = Vec::new();
    let mut fast_after = None;
    let mut waited = false;
    let mut other_failed_open = 0;
    let mut other_checks = 0;
    let recovered = loop {
        let (victim_answer, other_answer) = tokio::join!(
            timed_check(client.clone(), victim_key.clone()),
            timed_check(client.clone(), other_key.clone()),
        );
        other_checks += 1;
        if !other_answer.1 {
            other_failed_open += 1;
        }
        if victim_answer.1 {
            break killed.elapsed();
        }
        // The first answers may fail at once (the dropped connection); then calls wait for the
        // timeout until the node's breaker opens, and from then on fail at once.
        if victim_answer.0 >= TIMEOUT / 4 {
            waited = true;
        } else if waited {
            fast_after.get_or_insert(killed.elapsed() - victim_answer.0);
        }
        victim_latencies.push(victim_answer.0);
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "the replica did not take over within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let failed_open = victim_latencies.len();
    let p50 = percentile(&mut victim_latencies, 0.50);
    let slow = victim_latencies
        .iter()
        .filter(|l| **l >= TIMEOUT / 4)
        .count();
    println!(
        "cluster failover (node timeout 1 s, store timeout {TIMEOUT:?}): the dead primary's keys \
         failed open {failed_open} times, {slow} of them after waiting (p50 {p50:?}), at once from \
         {fast_after:?} after the kill; limits applied again {recovered:?} after the kill; \
         another primary's key failed open {other_failed_open} of {other_checks} times"
    );
    assert!(
        failed_open > 10,
        "the dead primary's keys fail open until the failover"
    );
    assert!(
        p50 < TIMEOUT / 4,
        "once its breaker is open, the dead primary's keys fail open at once: p50 {p50:?}"
    );
    assert_eq!(
        other_failed_open, 0,
        "another primary's keys are counted throughout"
    );
}

/// tollgate configured with a Redis Cluster whose seed node is reached through `proxy`.
fn cluster_config(proxy: &FaultProxy, timeout: Duration) -> Config {
    let mut config = config_for(&proxy.url(), timeout);
    config.store = StoreSettings::Cluster(config.store.redis().unwrap().clone());
    config
}

/// Checks a fresh key until Redis counts it, and returns how long that took.
async fn until_counted(client: &AuthorizationClient<Channel>, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (_, counted) = timed_check(client.clone(), unique_key("cluster-start")).await;
        if counted {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "the cluster connection was not made within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_fails_open_at_once_and_is_connected_in_the_background() {
    let _serial = SERIAL.lock().await;
    let cluster = RedisCluster::start();
    let proxy = FaultProxy::start(cluster.ports[0]).await;
    proxy.set(Fault::BlackHole);
    let tollgate = Tollgate::start(cluster_config(&proxy, TIMEOUT)).await;
    let client = tollgate.client().await;
    // The first check waits for the start-up's bounded wait for the cluster.
    let (_, counted) = timed_check(client.clone(), unique_key("cluster-start")).await;
    assert!(!counted);
    for _ in 0..20 {
        let (latency, counted) = timed_check(client.clone(), unique_key("cluster-start")).await;
        assert!(!counted, "fails open while the cluster is unreachable");
        assert!(
            latency < TIMEOUT / 4,
            "fails open at once, without trying to connect: {latency:?}"
        );
    }
    proxy.set(Fault::Pass);
    let connected = until_counted(&client, Duration::from_secs(10)).await;
    println!("an unreachable cluster seed healed: limits apply {connected:?} later");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_slower_to_discover_than_a_check_timeout_still_gets_connected() {
    let _serial = SERIAL.lock().await;
    let cluster = RedisCluster::start();
    let proxy = FaultProxy::start(cluster.ports[0]).await;
    // Every answer of the seed node takes 60 ms, under the 100 ms timeout; discovering the
    // cluster takes several of them in a row, well over it.
    proxy.set(Fault::Delay(Duration::from_millis(30)));
    let timeout = Duration::from_millis(100);
    let tollgate = Tollgate::start(cluster_config(&proxy, timeout)).await;
    let client = tollgate.client().await;
    let connected = until_counted(&client, Duration::from_secs(10)).await;
    println!(
        "a slow cluster seed (60 ms round trips, timeout {timeout:?}): limits apply {connected:?} after start"
    );
}
