//! A rolling restart loses nothing: two tollgate replicas (the real binary, one shared Redis)
//! behind a real Envoy running the shipped `envoy/envoy.yaml`, under continuous client load. Each
//! replica in turn gets SIGTERM, drains, exits, and is replaced on its port, as a Deployment does
//! it. No client request may fail, and under 1 % of the answers may lack the `x-ratelimit-*`
//! headers (an answer without them passed unlimited: Envoy's `failure_mode_allow`, or a Redis
//! failure).

mod common;

use common::RedisServer;
use common::envoy::Envoy;
use common::http::{Upstream, request_blocking};
use common::process::TollgateProcess;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The replicas' drain period. Envoy's health check (interval 1 s, 10 % jitter) sees the
/// NOT_SERVING that starts it within about 1.1 s; the drain must outlast that with room to spare
/// on a loaded machine.
const DRAIN: Duration = Duration::from_secs(3);
/// The replicas' shutdown grace.
const GRACE: Duration = Duration::from_secs(1);
/// How long the port stays closed between a replica's exit and its replacement's start, as
/// between a pod's end and its successor's start: long enough that Envoy would send many checks
/// into it if it still counted the replica.
const REPLACEMENT_DELAY: Duration = Duration::from_secs(1);
/// Client threads, each sending one request at a time.
const CLIENTS: usize = 4;

/// What the clients saw.
#[derive(Debug, Default)]
struct Counts {
    total: u64,
    /// Transport errors and statuses other than 200.
    failed: u64,
    /// 200 without any `x-ratelimit-*` header.
    headerless: u64,
    /// When the first few headerless answers came, since the load started.
    headerless_at: Vec<Duration>,
}

/// Sends requests through Envoy until `stop` is set, each client with its own API key.
fn load(envoy_port: u16, client: usize, stop: &AtomicBool, started: Instant) -> Counts {
    let key = common::unique_key(&format!("rolling-{client}"));
    let mut counts = Counts::default();
    while !stop.load(Ordering::Relaxed) {
        counts.total += 1;
        match request_blocking(envoy_port, "GET", "/v1/users", &[("x-api-key", &key)]) {
            Ok(response) if response.status == 200 => {
                if !response.has_rate_limit_headers() {
                    counts.headerless += 1;
                    if counts.headerless_at.len() < 5 {
                        counts.headerless_at.push(started.elapsed());
                    }
                }
            }
            Ok(response) => {
                counts.failed += 1;
                eprintln!("failed: {} {:?}", response.status, response.body);
            }
            Err(e) => {
                counts.failed += 1;
                eprintln!("failed: {e}");
            }
        }
        // Paced so that Envoy, two replicas, Redis and the clients share two cores without
        // checks running into Envoy's 0.25 s timeout.
        std::thread::sleep(Duration::from_millis(5));
    }
    counts
}

/// Polls Envoy until `done` holds for the replica on `port`; returns how long that took.
fn wait_health(envoy: &Envoy, port: u16, done: impl Fn(&str) -> bool, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let flags = envoy.tollgate_health(port);
        if done(&flags) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "replica on {port} is still {flags:?} after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_two_replicas_loses_no_check() {
    let redis = RedisServer::start();
    // A limit no client reaches, so every answer carries the headers; Redis may take up to 0.2 s
    // (under Envoy's 0.25 s) before tollgate answers without them.
    let yaml = format!(
        "drain_period: {}s\nshutdown_grace: {}s\ndefault_limit: {{ requests: 100000, window: 60s }}\nredis: {{ url: \"{}\", timeout: 200ms }}\n",
        DRAIN.as_secs(),
        GRACE.as_secs(),
        redis.url()
    );
    let upstream = Upstream::start().await;
    let upstream_port = upstream.port;
    let counts = tokio::task::spawn_blocking(move || {
        let ports = [common::free_port(), common::free_port()];
        let mut replicas = ports.map(|port| TollgateProcess::start(&yaml, port));
        let envoy = Envoy::start_with_replicas(&ports, upstream_port);
        for port in ports {
            wait_health(&envoy, port, |f| f == "healthy", Duration::from_secs(10));
        }

        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let stop = stop.clone();
                let envoy_port = envoy.port;
                std::thread::spawn(move || load(envoy_port, client, &stop, started))
            })
            .collect();
        std::thread::sleep(Duration::from_secs(1));

        for (replica, port) in replicas.iter_mut().zip(ports) {
            replica.sigterm();
            let sigterm_at = Instant::now();
            let noticed = wait_health(&envoy, port, |f| f != "healthy", DRAIN * 2);
            println!("replica on {port}: Envoy stopped using it {noticed:?} after SIGTERM");
            assert!(
                noticed < DRAIN,
                "Envoy noticed the drain only after {noticed:?}, drain period {DRAIN:?}"
            );
            let status = replica.wait(DRAIN + GRACE + Duration::from_secs(5));
            assert!(status.success(), "{status}:\n{}", replica.log());
            println!(
                "replica on {port}: exited {:?} after SIGTERM",
                sigterm_at.elapsed()
            );
            std::thread::sleep(REPLACEMENT_DELAY);
            *replica = TollgateProcess::start(&yaml, port);
            let back = wait_health(&envoy, port, |f| f == "healthy", Duration::from_secs(20));
            println!("replica on {port}: replacement healthy in Envoy {back:?} after its start");
        }
        std::thread::sleep(Duration::from_secs(1));

        stop.store(true, Ordering::Relaxed);
        clients
            .into_iter()
            .map(|client| client.join().unwrap())
            .fold(Counts::default(), |mut all, one| {
                all.total += one.total;
                all.failed += one.failed;
                all.headerless += one.headerless;
                all.headerless_at.extend(one.headerless_at);
                all
            })
    })
    .await
    .unwrap();

    println!(
        "rolling restart: {} requests, {} failed, {} without x-ratelimit-* headers ({:.3} %), first at {:?}",
        counts.total,
        counts.failed,
        counts.headerless,
        counts.headerless as f64 * 100.0 / counts.total as f64,
        counts.headerless_at
    );
    assert!(
        counts.total >= 1_000,
        "too little load to judge: {counts:?}"
    );
    assert_eq!(counts.failed, 0, "{counts:?}");
    assert!(
        counts.headerless * 100 < counts.total,
        "1 % or more answered without limits: {counts:?}"
    );
}
