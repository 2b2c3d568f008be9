//! tollgate's load tool: drives `Authorization/Check` over gRPC against a real tollgate (the release
//! binary) and a real Redis, and measures the Redis ceiling for the same quota script in the same
//! run, so every result is printed as a ratio of what Redis itself allows on this machine.
//!
//!     cargo bench --bench load -- [--scenario allowed|hot|light|all] [--runs 3]
//!         [--duration 10] [--warmup 2] [--callers N] [--connections N] [--keys N]
//!         [--no-deny-cache] [--no-metrics] [--compare-pool] [--redis-connections N]
//!         [--rate CHECKS_PER_S] [--second-window] [--tracing RATIO]
//!
//! `--tracing RATIO` turns tollgate's traces on at `sampling_ratio: RATIO`, exported to an OTLP
//! receiver in the load tool. Every check carries a `traceparent` of a trace of its own, traces on
//! or off, so the messages are the same either way.
//!
//! `--second-window` gives the route a second window of 1 000 requests per hour beside its 60 s
//! one (the A/B of one window against two; the Redis ceiling stays the one-window script).
//!
//! Each run starts its own `redis-server` on a free port and its own tollgate, and stops both;
//! `TOLLGATE_BENCH_BIN=<path>` runs that tollgate binary instead of this build's (A/B of builds).
//! Scenarios (defaults; every number can be overridden):
//! - `allowed`: 64 callers over 4 HTTP/2 connections, 100 000 keys: mostly allowed, at saturation;
//! - `hot`: 64 callers over 4 connections, one key with a limit of 60: mostly denied; prints the
//!   Redis script calls during the measurement (`INFO commandstats`) and the admitted count;
//! - `light`: 8 callers over 1 connection, 100 000 keys: latency;
//! - `floor` (not in `all`): like `allowed`, but every path is outside the rate-limited prefix, so
//!   tollgate answers without Redis or hashing: the cost of the gRPC path alone.

#[path = "../../tests/common/check_request.rs"]
mod check_request;
mod checks;
#[path = "../../tests/common/cpu.rs"]
mod cpu;
mod measure;
mod processes;
mod redis_direct;
// The tests' launcher; the load tool needs neither TLS nor restarts.
#[allow(dead_code)] // only the receiver itself
#[path = "../../tests/common/otlp.rs"]
mod otlp;
#[allow(dead_code)]
#[path = "../../tests/common/redis_server.rs"]
mod redis_server;
#[allow(dead_code)] // only its files, not its directories
#[path = "../../tests/common/temp.rs"]
mod temp;

use checks::drive_tollgate;
use processes::{TollgateProcess, flush};
use redis_direct::{redis_benchmark, redis_ceiling};
use redis_server::RedisServer;
use redis_server::ports;
use std::time::Duration;

#[derive(Debug, Clone)]
struct Options {
    scenario: String,
    runs: usize,
    duration: Duration,
    warmup: Duration,
    callers: Option<usize>,
    connections: Option<usize>,
    keys: Option<u64>,
    deny_cache: bool,
    /// Prometheus metrics on (on a free port) or off (`metrics.enabled: false`), for their A/B.
    metrics: bool,
    compare_pool: bool,
    redis_connections: usize,
    /// Checks per second in all, paced (open loop); 0 for closed loop.
    rate: f64,
    /// The route also has a second window (1 000 requests per hour), for the A/B of one window
    /// against two.
    second_window: bool,
    /// Traces on at this sampling ratio, exported to the receiver at this endpoint (set once
    /// the receiver runs).
    tracing: Option<(f64, String)>,
}

fn options() -> Options {
    let mut o = Options {
        scenario: "all".into(),
        runs: 3,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        callers: None,
        connections: None,
        keys: None,
        deny_cache: true,
        metrics: true,
        compare_pool: false,
        redis_connections: 4,
        rate: 0.0,
        second_window: false,
        tracing: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--bench" => {} // cargo bench passes it to every bench binary
            "--scenario" => o.scenario = value(),
            "--runs" => o.runs = value().parse().unwrap(),
            "--duration" => o.duration = Duration::from_secs_f64(value().parse().unwrap()),
            "--warmup" => o.warmup = Duration::from_secs_f64(value().parse().unwrap()),
            "--callers" => o.callers = Some(value().parse().unwrap()),
            "--connections" => o.connections = Some(value().parse().unwrap()),
            "--keys" => o.keys = Some(value().parse().unwrap()),
            "--no-deny-cache" => o.deny_cache = false,
            "--no-metrics" => o.metrics = false,
            "--compare-pool" => o.compare_pool = true,
            "--redis-connections" => o.redis_connections = value().parse().unwrap(),
            "--rate" => o.rate = value().parse().unwrap(),
            "--second-window" => o.second_window = true,
            "--tracing" => o.tracing = Some((value().parse().unwrap(), String::new())),
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

/// One scenario's shape.
#[derive(Debug, Clone, Copy)]
struct Shape {
    callers: usize,
    connections: usize,
    keys: u64,
    limit: u32,
    /// Requests go outside the rate-limited prefix: the cost of the gRPC path alone.
    unlimited: bool,
}

fn shape(name: &str, o: &Options) -> Shape {
    let base = match name {
        "allowed" => Shape {
            callers: 64,
            connections: 4,
            keys: 100_000,
            limit: 60,
            unlimited: false,
        },
        "hot" => Shape {
            callers: 64,
            connections: 4,
            keys: 1,
            limit: 60,
            unlimited: false,
        },
        "light" => Shape {
            callers: 8,
            connections: 1,
            keys: 100_000,
            limit: 60,
            unlimited: false,
        },
        "floor" => Shape {
            callers: 64,
            connections: 4,
            keys: 100_000,
            limit: 60,
            unlimited: true,
        },
        other => panic!("unknown scenario {other}"),
    };
    Shape {
        callers: o.callers.unwrap_or(base.callers),
        connections: o.connections.unwrap_or(base.connections),
        keys: o.keys.unwrap_or(base.keys),
        ..base
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut o = options();
    // Kept for the whole run: every tollgate exports to it.
    let receiver = match &mut o.tracing {
        Some((_, endpoint)) => {
            let receiver = otlp::Receiver::start().await;
            *endpoint = receiver.endpoint();
            Some(receiver)
        }
        None => None,
    };
    let scenarios: Vec<&str> = match o.scenario.as_str() {
        "all" => vec!["allowed", "hot", "light"],
        one => vec![one],
    };
    println!(
        "# tollgate load ({} run(s) of {:?} after {:?} warm-up; {} cores)",
        o.runs,
        o.duration,
        o.warmup,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for name in scenarios {
        let shape = shape(name, &o);
        println!(
            "\n## {name}: {} callers over {} connection(s), {} key(s), limit {}/60s{}, deny cache {}, metrics {}, traces {}, {} Redis connection(s) in tollgate, {}",
            shape.callers,
            shape.connections,
            shape.keys,
            shape.limit,
            if o.second_window { " + 1000/1h" } else { "" },
            if o.deny_cache { "on" } else { "off" },
            if o.metrics { "on" } else { "off" },
            match &o.tracing {
                Some((ratio, _)) => format!("on ({ratio} sampled)"),
                None => "off".to_owned(),
            },
            o.redis_connections,
            if o.rate > 0.0 {
                format!("paced at {} checks/s", o.rate)
            } else {
                "closed loop".to_owned()
            }
        );
        println!(
            "| run | Redis ceiling (redis-benchmark) calls/s | script over multiplexed connections calls/s | tollgate checks/s | ratio to the ceiling | allowed | denied | errors | p50 ms | p90 ms | p99 ms | p99.9 ms | script calls while measuring | CPU µs per check: tollgate / Redis / load tool |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        let mut ratios = Vec::new();
        let mut rates = Vec::new();
        let mut p99s = Vec::new();
        for run in 1..=o.runs {
            let redis = RedisServer::start();
            let yardstick = redis_benchmark(&redis, shape, &o);
            flush(&redis);
            let ceiling = redis_ceiling(&redis, shape, &o, false).await;
            if o.compare_pool {
                let pooled = redis_ceiling(&redis, shape, &o, true).await;
                println!(
                    "| {run}: deadpool-redis, {} pooled connections | | {:.0} ({:.2} of multiplexed) | | | | | | {:.2} | | {:.2} | | |",
                    shape.callers,
                    pooled.per_second(),
                    pooled.per_second() / ceiling.per_second(),
                    pooled.percentile(0.5),
                    pooled.percentile(0.99)
                );
            }
            flush(&redis);
            let tollgate = TollgateProcess::start(&redis, shape, &o);
            let (tally, window) = drive_tollgate(&tollgate, &redis, shape, &o).await;
            let ratio = tally.per_second() / yardstick;
            let checks = (tally.allowed + tally.denied + tally.errors) as f64;
            let [tollgate_cpu, redis_cpu, load_cpu] = window.cpu_seconds.map(|s| s * 1e6 / checks);
            println!(
                "| {run} | {:.0} | {:.0} | {:.0} | {:.2} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.1} / {:.1} / {:.1} |",
                yardstick,
                ceiling.per_second(),
                tally.per_second(),
                ratio,
                tally.allowed,
                tally.denied,
                tally.errors,
                tally.percentile(0.5),
                tally.percentile(0.9),
                tally.percentile(0.99),
                tally.percentile(0.999),
                window.script_calls,
                tollgate_cpu,
                redis_cpu,
                load_cpu
            );
            ratios.push(ratio);
            rates.push(tally.per_second());
            p99s.push(tally.percentile(0.99));
        }
        println!(
            "\nmedian: {:.0} checks/s, ratio to the Redis ceiling {:.2}, p99 {:.2} ms",
            median(&mut rates),
            median(&mut ratios),
            median(&mut p99s)
        );
    }
    if let Some(receiver) = receiver {
        println!(
            "\nspans received by the OTLP receiver: {}",
            receiver.spans().len()
        );
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}
