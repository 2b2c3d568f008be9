//! tollgate's load tool: drives `Authorization/Check` over gRPC against a real tollgate (the release
//! binary) and a real Redis, and measures the Redis ceiling for the same quota script in the same
//! run, so every result is printed as a ratio of what Redis itself allows on this machine.
//!
//!     cargo bench --bench load -- [--scenario allowed|hot|light|all] [--runs 3]
//!         [--duration 10] [--warmup 2] [--callers N] [--connections N] [--keys N]
//!         [--no-deny-cache] [--compare-pool] [--redis-connections N]
//!
//! Each run starts its own `redis-server` on a free port and its own tollgate, and stops both.
//! Scenarios (defaults; every number can be overridden):
//! - `allowed`: 64 callers over 4 HTTP/2 connections, 100 000 keys: mostly allowed, at saturation;
//! - `hot`: 64 callers over 4 connections, one key with a limit of 60: mostly denied; prints the
//!   Redis script calls during the measurement (`INFO commandstats`) and the admitted count;
//! - `light`: 8 callers over 1 connection, 100 000 keys: latency.

use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, attribute_context};
use hdrhistogram::Histogram;
use prost::Message;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SCRIPT: &str = include_str!("../src/store/sliding_window.lua");

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
    compare_pool: bool,
    redis_connections: usize,
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
        compare_pool: false,
        redis_connections: 4,
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
            "--compare-pool" => o.compare_pool = true,
            "--redis-connections" => o.redis_connections = value().parse().unwrap(),
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
}

fn shape(name: &str, o: &Options) -> Shape {
    let base = match name {
        "allowed" => Shape {
            callers: 64,
            connections: 4,
            keys: 100_000,
            limit: 60,
        },
        "hot" => Shape {
            callers: 64,
            connections: 4,
            keys: 1,
            limit: 60,
        },
        "light" => Shape {
            callers: 8,
            connections: 1,
            keys: 100_000,
            limit: 60,
        },
        other => panic!("unknown scenario {other}"),
    };
    Shape {
        callers: o.callers.unwrap_or(base.callers),
        connections: o.connections.unwrap_or(base.connections),
        keys: o.keys.unwrap_or(base.keys),
        limit: base.limit,
    }
}

/// What one measurement saw.
#[derive(Debug, Default)]
struct Tally {
    allowed: u64,
    denied: u64,
    errors: u64,
    latency_us: Option<Histogram<u64>>,
    elapsed: Duration,
}

impl Tally {
    fn per_second(&self) -> f64 {
        (self.allowed + self.denied + self.errors) as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, q: f64) -> f64 {
        self.latency_us
            .as_ref()
            .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let o = options();
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
            "\n## {name}: {} callers over {} connection(s), {} key(s), limit {}/60s, deny cache {}, {} Redis connection(s) in tollgate",
            shape.callers,
            shape.connections,
            shape.keys,
            shape.limit,
            if o.deny_cache { "on" } else { "off" },
            o.redis_connections
        );
        println!(
            "| run | Redis ceiling (redis-benchmark) calls/s | script over multiplexed connections calls/s | tollgate checks/s | ratio to the ceiling | allowed | denied | errors | p50 ms | p90 ms | p99 ms | p99.9 ms | script calls while measuring | CPU µs per check: tollgate / Redis / load tool |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        let mut ratios = Vec::new();
        let mut rates = Vec::new();
        let mut p99s = Vec::new();
        for run in 1..=o.runs {
            let redis = RedisProcess::start();
            let yardstick = redis_benchmark(&redis, shape, &o);
            redis.flush();
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
            redis.flush();
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
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status}");
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not listen on {port}");
}

struct RedisProcess {
    port: u16,
    child: Child,
}

impl RedisProcess {
    fn start() -> Self {
        let port = free_port();
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        wait_for_port(port, &mut child, "redis-server");
        Self { port, child }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    fn flush(&self) {
        let mut c = self.connection();
        let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
        let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TollgateProcess {
    port: u16,
    child: Child,
    config: std::path::PathBuf,
}

impl TollgateProcess {
    fn start(redis: &RedisProcess, shape: Shape, o: &Options) -> Self {
        let port = free_port();
        let config =
            std::env::temp_dir().join(format!("tollgate-bench-{}-{port}.yaml", std::process::id()));
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\ndrain_period: 0s\ndeny_cache_entries: {}\nredis: {{ url: \"{}\", connections: {} }}\nroutes:\n  - {{ method: GET, path: /bench/:id, limit: {{ requests: {}, window: 60s }} }}\n",
                if o.deny_cache { 100_000 } else { 0 },
                redis.url(),
                o.redis_connections,
                shape.limit
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("the tollgate binary");
        wait_for_port(port, &mut child, "tollgate");
        Self {
            port,
            child,
            config,
        }
    }
}

impl Drop for TollgateProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// A cheap, per-caller pseudo-random key index (xorshift): no shared state on the load side.
struct Keys {
    state: u64,
    count: u64,
}

impl Keys {
    fn new(seed: u64, count: u64) -> Self {
        Self {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            count,
        }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state % self.count
    }
}

fn check_request(key: u64) -> CheckRequest {
    let path = format!("/v1/bench/{}", key % 1000);
    let headers = [
        (":method", "GET".to_owned()),
        (":path", path.clone()),
        (":authority", "api.example.com".to_owned()),
        ("x-api-key", format!("bench-key-{key}")),
        ("user-agent", "tollgate-bench".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: "GET".into(),
                    path,
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// Runs `callers` tasks until `duration` after `warmup`, each calling `call` in a loop; only calls
/// that start after the warm-up are measured.
async fn drive<F, Fut>(callers: usize, warmup: Duration, duration: Duration, call: F) -> Tally
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Outcome> + Send,
{
    let call = Arc::new(call);
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let (call, stop, measuring) = (call.clone(), stop.clone(), measuring.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally {
                latency_us: Some(Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()),
                ..Default::default()
            };
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let measured = measuring.load(Ordering::Relaxed);
                let t = Instant::now();
                let outcome = call(caller, n).await;
                n += 1;
                if measured && !stop.load(Ordering::Relaxed) {
                    let us = t.elapsed().as_micros() as u64;
                    tally
                        .latency_us
                        .as_mut()
                        .unwrap()
                        .saturating_record(us.max(1));
                    match outcome {
                        Outcome::Allowed => tally.allowed += 1,
                        Outcome::Denied => tally.denied += 1,
                        Outcome::Error => tally.errors += 1,
                    }
                }
            }
            tally
        }));
    }
    tokio::time::sleep(warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let t = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = t.elapsed();
    let mut total = Tally {
        latency_us: Some(Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()),
        elapsed,
        ..Default::default()
    };
    for task in tasks {
        let tally = task.await.unwrap();
        total.allowed += tally.allowed;
        total.denied += tally.denied;
        total.errors += tally.errors;
        total
            .latency_us
            .as_mut()
            .unwrap()
            .add(tally.latency_us.unwrap())
            .unwrap();
    }
    total
}

enum Outcome {
    Allowed,
    Denied,
    Error,
}

/// The yardstick: `redis-benchmark` running the same script with `EVALSHA`, one client per
/// caller, no pipelining, random keys from the same key space. Returns calls per second.
fn redis_benchmark(redis: &RedisProcess, shape: Shape, o: &Options) -> f64 {
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(SCRIPT)
        .query(&mut redis.connection())
        .unwrap();
    let key = if shape.keys == 1 {
        "tollgate:{bench-key-0}:GET /bench/:id".to_owned()
    } else {
        "tollgate:{bench-key-__rand_int__}:GET /bench/:id".to_owned()
    };
    // About as many calls as the measurement window lasts at 40k/s.
    let calls = (o.duration.as_secs_f64() * 40_000.0) as u64;
    let output = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &redis.port.to_string(),
            "-c",
            &shape.callers.to_string(),
        ])
        .args([
            "-n",
            &calls.to_string(),
            "-r",
            &shape.keys.to_string(),
            "--csv",
        ])
        .args([
            "EVALSHA",
            &sha,
            "1",
            &key,
            &shape.limit.to_string(),
            "60000000",
        ])
        .output()
        .expect("redis-benchmark (installed with redis-server)");
    let csv = String::from_utf8(output.stdout).unwrap();
    let row = csv
        .lines()
        .find(|l| l.starts_with("\"EVALSHA"))
        .unwrap_or_else(|| panic!("redis-benchmark: {csv}"));
    row.split("\",\"").nth(1).unwrap().parse().unwrap()
}

/// The quota script driven directly over multiplexed connections (or a deadpool-redis pool), the
/// way tollgate drives it.
async fn redis_ceiling(redis: &RedisProcess, shape: Shape, o: &Options, pooled: bool) -> Tally {
    let script = Arc::new(redis::Script::new(SCRIPT));
    let client = redis::Client::open(redis.url()).unwrap();
    enum Conns {
        Multiplexed(Vec<redis::aio::MultiplexedConnection>),
        Pool(deadpool_redis::Pool),
    }
    let conns = Arc::new(if pooled {
        let pool = deadpool_redis::Config::from_url(redis.url())
            .builder()
            .unwrap()
            .max_size(shape.callers)
            .runtime(deadpool_redis::Runtime::Tokio1)
            .build()
            .unwrap();
        Conns::Pool(pool)
    } else {
        let mut v = Vec::new();
        for _ in 0..shape.connections {
            v.push(client.get_multiplexed_async_connection().await.unwrap());
        }
        Conns::Multiplexed(v)
    });
    let mut first = client.get_multiplexed_async_connection().await.unwrap();
    script.load_async(&mut first).await.unwrap();
    let keys = shape.keys;
    let limit = shape.limit;
    let callers = shape.callers;
    let states: Arc<Vec<std::sync::Mutex<Keys>>> = Arc::new(
        (0..callers)
            .map(|c| std::sync::Mutex::new(Keys::new(c as u64 + 1, keys)))
            .collect(),
    );
    drive(callers, o.warmup, o.duration, move |caller, _| {
        let (script, conns, states) = (script.clone(), conns.clone(), states.clone());
        async move {
            let key = states[caller].lock().unwrap().next();
            let mut invocation = script.key(format!("tollgate:{{bench-key-{key}}}:GET /bench/:id"));
            invocation.arg(limit).arg(60_000_000u64);
            let result: redis::RedisResult<(u8, u32, u64, u64)> = match &*conns {
                Conns::Multiplexed(v) => {
                    let mut c = v[caller % v.len()].clone();
                    invocation.invoke_async(&mut c).await
                }
                Conns::Pool(pool) => {
                    let mut c = pool.get().await.unwrap();
                    invocation.invoke_async(&mut *c).await
                }
            };
            match result {
                Ok((1, ..)) => Outcome::Allowed,
                Ok(_) => Outcome::Denied,
                Err(_) => Outcome::Error,
            }
        }
    })
    .await
}

async fn drive_tollgate(
    tollgate: &TollgateProcess,
    redis: &RedisProcess,
    shape: Shape,
    o: &Options,
) -> (Tally, Window) {
    let mut connections = Vec::new();
    for _ in 0..shape.connections {
        connections.push(GrpcConnection::connect(tollgate.port).await);
    }
    let connections = Arc::new(connections);
    let states: Arc<Vec<std::sync::Mutex<Keys>>> = Arc::new(
        (0..shape.callers)
            .map(|c| std::sync::Mutex::new(Keys::new(c as u64 + 7, shape.keys)))
            .collect(),
    );
    let allowed_total = Arc::new(AtomicU64::new(0));
    let counted = allowed_total.clone();
    // Script calls are read around the measurement window, from a task that wakes at its edges.
    let before_after = {
        let url = redis.url();
        let (warmup, duration) = (o.warmup, o.duration);
        let pids = [tollgate.child.id(), redis.child.id(), std::process::id()];
        tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            let calls = script_calls(&url);
            let cpu = pids.map(cpu_seconds);
            tokio::time::sleep(duration).await;
            let after = pids.map(cpu_seconds);
            Window {
                script_calls: script_calls(&url) - calls,
                cpu_seconds: [0, 1, 2].map(|i| after[i] - cpu[i]),
            }
        })
    };
    let tally = drive(shape.callers, o.warmup, o.duration, move |caller, _| {
        let (connections, states, counted) = (connections.clone(), states.clone(), counted.clone());
        async move {
            let key = states[caller].lock().unwrap().next();
            let connection = &connections[caller % connections.len()];
            match connection.check(&check_request(key)).await {
                Some(HttpResponse::OkResponse(ok)) if !ok.response_headers_to_add.is_empty() => {
                    counted.fetch_add(1, Ordering::Relaxed);
                    Outcome::Allowed
                }
                Some(HttpResponse::DeniedResponse(d))
                    if d.status.is_some_and(|s| s.code == 429) =>
                {
                    Outcome::Denied
                }
                _ => Outcome::Error,
            }
        }
    })
    .await;
    let window = before_after.await.unwrap();
    if shape.keys == 1 {
        let admitted = allowed_total.load(Ordering::Relaxed);
        println!(
            "<!-- hot key: {admitted} admitted over warm-up and measurement (limit {}) -->",
            shape.limit
        );
        assert_eq!(
            admitted,
            u64::from(shape.limit),
            "one hot key must admit exactly its limit"
        );
    }
    (tally, window)
}

/// A gRPC client reduced to what the load needs: one HTTP/2 connection (the `h2` crate directly,
/// without tonic's buffering layer, so the load tool spends as little of the shared CPU as it can)
/// and unary `Check` calls on it.
struct GrpcConnection {
    sender: h2::client::SendRequest<Bytes>,
    uri: http::Uri,
}

impl GrpcConnection {
    async fn connect(port: u16) -> Self {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        tcp.set_nodelay(true).unwrap();
        let (sender, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(connection);
        let uri = format!("http://127.0.0.1:{port}/envoy.service.auth.v3.Authorization/Check")
            .parse()
            .unwrap();
        Self { sender, uri }
    }

    /// One unary call; `None` for any transport or gRPC error.
    async fn check(&self, request: &CheckRequest) -> Option<HttpResponse> {
        let mut frame = BytesMut::with_capacity(5 + request.encoded_len());
        frame.put_u8(0); // not compressed
        frame.put_u32(request.encoded_len() as u32);
        request.encode(&mut frame).ok()?;
        let head = http::Request::post(self.uri.clone())
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .ok()?;
        let mut sender = self.sender.clone().ready().await.ok()?;
        let (response, mut stream) = sender.send_request(head, false).ok()?;
        stream.send_data(frame.freeze(), true).ok()?;
        let mut body = response.await.ok()?.into_body();
        let mut message = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.ok()?;
            let _ = body.flow_control().release_capacity(chunk.len());
            message.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.ok()??;
        if trailers.get("grpc-status")? != "0" || message.len() < 5 {
            return None;
        }
        CheckResponse::decode(&message[5..]).ok()?.http_response
    }
}

/// What the processes did during the measurement window.
struct Window {
    script_calls: u64,
    /// CPU time (user + system) of tollgate, Redis and the load tool.
    cpu_seconds: [f64; 3],
}

/// CPU time a process has used so far, from `/proc/<pid>/stat` (Linux).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0 // USER_HZ, 100 on Linux
}

/// Calls of the quota script Redis has served (`INFO commandstats`).
fn script_calls(url: &str) -> u64 {
    let mut connection = redis::Client::open(url).unwrap().get_connection().unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut connection)
        .unwrap();
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .map(|l| {
            l.split("calls=")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}
