//! A bucket's layout in Redis: the ring of admission times in one string (`src/store/ring.lua`
//! and `src/store/check.lua`, what tollgate runs) against the sorted set per bucket it replaced
//! (`zset.lua` beside this file: commit d28bef3's script with the same interface), both measured in
//! the same run on a `redis-server` of the bench's own (on a free port).
//!
//!     cargo bench --bench storage
//!
//! 1. **Memory**: buckets of one window of N requests per hour (N = 60, 1 000, 10 000; about
//!    250 000 requests in all when full) are filled with checks of cost 1, round-robin over the
//!    buckets, completely or to half; the growth of `used_memory` (`INFO memory`) since the
//!    `FLUSHALL` before, divided by the requests admitted and by the buckets.
//! 2. **Redis CPU per check**: after `CONFIG RESETSTAT`, a fixed number of checks from concurrent
//!    callers over multiplexed connections, as tollgate sends them (the ring by `FCALL` of its
//!    function, which tollgate calls on Redis 7; the other layout by `EVALSHA`); then
//!    `usec_per_call` of that command (`INFO commandstats`): the script's own time in Redis,
//!    without reading and writing the sockets; and the Redis commands the script ran per call.
//!    Beside it, Redis's whole CPU per check (`/proc/<pid>/stat`): the script, the protocol and
//!    the sockets.
//! 3. **Throughput**: the same checks per second of wall time, seen by the client. The client and
//!    Redis share the machine's cores, so only the ratio of the two layouts in one run means much.
//!
//! `STORAGE_BASELINE=FILE` compares against the check script in FILE (an earlier ring, e.g.
//! `git show REV:src/store/ring.lua` + `admit.lua` + `check.lua`, from before issue 18's third
//! session: the interface of `zset.lua`, retain in µs and a reply of integers) instead of the
//! sorted set; both must then admit the same checks.

#[path = "../../tests/common/cpu.rs"]
mod cpu;

// The tests' launcher; this bench needs neither TLS, restarts nor its script counter.
#[allow(dead_code)]
#[path = "../../tests/common/redis_server.rs"]
mod redis_server;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use redis_server::RedisServer;
use std::time::{Duration, Instant};

/// What it ran before, with the interface of the scripts compared with (tollgate's own code is
/// its function, `tollgate::store::check_function`).
const ZSET: &str = include_str!("zset.lua");

/// A file holding another script to compare the ring with, instead of [`ZSET`].
const BASELINE_ENV: &str = "STORAGE_BASELINE";

const SECOND_US: u64 = 1_000_000;
const MINUTE_US: u64 = 60 * SECOND_US;
const HOUR_US: u64 = 60 * MINUTE_US;

/// Checks sent per CPU scenario and layout.
const CALLS: u64 = 200_000;
/// Concurrent callers of the CPU scenarios, spread over [`CONNECTIONS`] multiplexed connections
/// (the shape of the load bench's `allowed` scenario).
const CALLERS: u64 = 64;
const CONNECTIONS: usize = 4;
/// Checks per pipeline when buckets are filled.
const PIPELINE: usize = 1_000;

/// The buckets of one memory row: `buckets` buckets of one window of `limit` requests per hour.
struct Fill {
    limit: u64,
    buckets: u64,
}

const FILLS: [Fill; 3] = [
    Fill {
        limit: 60,
        buckets: 4_000,
    },
    Fill {
        limit: 1_000,
        buckets: 250,
    },
    Fill {
        limit: 10_000,
        buckets: 25,
    },
];

/// What one fill left in Redis.
struct Footprint {
    admitted: u64,
    bytes: u64,
    /// `OBJECT ENCODING` of a filled bucket.
    encoding: String,
}

/// One CPU scenario: [`CALLS`] checks of cost 1, the i-th on bucket `i % buckets`.
struct Scenario {
    name: &'static str,
    /// (requests, window in µs), shortest window first.
    windows: &'static [(u64, u64)],
    buckets: u64,
    /// Requests admitted in every bucket before the measurement (one check of that cost).
    prefill: u64,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "(a) mostly allowed: 20 000 buckets, 60/60 s",
        windows: &[(60, MINUTE_US)],
        buckets: 20_000,
        prefill: 0,
    },
    Scenario {
        name: "(b) two windows: 20 000 buckets, 10/1 s + 1 000/1 h",
        windows: &[(10, SECOND_US), (1_000, HOUR_US)],
        buckets: 20_000,
        prefill: 0,
    },
    Scenario {
        name: "(c) hot key: 1 bucket, 60/60 s",
        windows: &[(60, MINUTE_US)],
        buckets: 1,
        prefill: 0,
    },
    Scenario {
        name: "(d) 2 500 buckets holding 900, 1 000/1 h",
        windows: &[(1_000, HOUR_US)],
        buckets: 2_500,
        prefill: 900,
    },
];

/// What Redis and the client saw of one CPU scenario.
struct Run {
    allowed: u64,
    /// Script calls counted by `INFO commandstats`, and their mean time in Redis.
    calls: u64,
    usec_per_call: f64,
    /// Redis commands the script ran per call (`redis.call`, `TIME` included).
    commands: f64,
    /// Redis's CPU per call, all of it (`/proc`): the script, the protocol and the sockets.
    cpu_us: f64,
    /// Checks per second of wall time, seen by the client.
    per_second: f64,
}

fn main() {
    let (base, base_code) = match std::env::var_os(BASELINE_ENV) {
        Some(file) => ("baseline", std::fs::read_to_string(file).unwrap()),
        None => ("sorted set", ZSET.to_owned()),
    };
    let redis = RedisServer::start();
    // Closed before the memory rows, which wait until they have Redis to themselves.
    let mut c = redis.connection();
    // The one compared with first.
    let (library, function) = tollgate::store::check_function();
    let _: redis::Value = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(&library)
        .query(&mut c)
        .unwrap();
    let layouts = [
        Layout::Script(redis::Script::new(&base_code).load(&mut c).unwrap()),
        Layout::Function(function),
    ];
    let server = info(&mut c, "server");
    drop(c);
    println!(
        "# Storage layout: {base} vs ring (Redis {}, {} cores shared by Redis and this client)",
        field(&server, "redis_version"),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    println!(
        "\n## Memory: one window of N requests per hour, cost 1 (`used_memory` growth after `FLUSHALL`)\n"
    );
    println!(
        "| N | filled | buckets | admitted | {base} B/request | ring B/request | {base} B/bucket | ring B/bucket | ring / {base} | {base} encoding |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for fill in &FILLS {
        for (filled, requests) in [("full", fill.limit), ("half", fill.limit / 2)] {
            let [zset, ring] = layouts
                .each_ref()
                .map(|layout| footprint(&redis, layout, fill, requests));
            let per_request = |f: &Footprint| f.bytes as f64 / f.admitted as f64;
            let admitted = if zset.admitted == ring.admitted {
                zset.admitted.to_string()
            } else {
                format!("{} / {}", zset.admitted, ring.admitted)
            };
            println!(
                "| {} | {filled} | {} | {admitted} | {:.1} | {:.1} | {:.0} | {:.0} | {:.2} | {} |",
                fill.limit,
                fill.buckets,
                per_request(&zset),
                per_request(&ring),
                zset.bytes as f64 / fill.buckets as f64,
                ring.bytes as f64 / fill.buckets as f64,
                per_request(&ring) / per_request(&zset),
                zset.encoding
            );
        }
    }

    println!(
        "\n## CPU: {CALLS} checks per scenario and layout, {CALLERS} callers over {CONNECTIONS} multiplexed connections\n"
    );
    println!(
        "| scenario | allowed: {base} / ring | commands per call: {base} / ring | {base} µs/call in Redis | ring µs/call in Redis | ring / {base} | Redis CPU µs/call, all: {base} / ring | ring / {base} | {base} calls/s | ring calls/s | ring / {base} |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for scenario in &SCENARIOS {
        let [zset, ring] = layouts
            .each_ref()
            .map(|layout| runtime.block_on(measure(&redis, layout, scenario)));
        for run in [&zset, &ring] {
            assert_eq!(run.calls, CALLS, "script calls seen by Redis");
        }
        if base_code != ZSET {
            assert_eq!(
                zset.allowed, ring.allowed,
                "{}: checks admitted",
                scenario.name
            );
        }
        println!(
            "| {} | {} / {} | {:.1} / {:.1} | {:.2} | {:.2} | {:.2} | {:.1} / {:.1} | {:.2} | {:.0} | {:.0} | {:.2} |",
            scenario.name,
            zset.allowed,
            ring.allowed,
            zset.commands,
            ring.commands,
            zset.usec_per_call,
            ring.usec_per_call,
            ring.usec_per_call / zset.usec_per_call,
            zset.cpu_us,
            ring.cpu_us,
            ring.cpu_us / zset.cpu_us,
            zset.per_second,
            ring.per_second,
            ring.per_second / zset.per_second
        );
    }
}

/// A bucket's key, the same for both layouts (its name costs both the same).
fn key(bucket: u64) -> String {
    format!("tollgate:ring:{{bench-key-{bucket}}}:GET /bench/:id")
}

/// How a layout's check is called.
#[derive(Clone)]
enum Layout {
    /// By `EVALSHA` of the script of this SHA1, with `zset.lua`'s interface (retain in µs).
    Script(String),
    /// By `FCALL` of tollgate's function of this name (retain in ms).
    Function(String),
}

impl Layout {
    /// The command, as `INFO commandstats` names it.
    fn command(&self) -> &'static str {
        match self {
            Layout::Script(_) => "evalsha",
            Layout::Function(_) => "fcall",
        }
    }
}

/// One check of `bucket` by `layout`, counted only when admitted.
fn check(layout: &Layout, bucket: u64, cost: u64, windows: &[(u64, u64)]) -> redis::Cmd {
    let capacity = windows.iter().map(|w| w.0).max().unwrap_or(1);
    let retain_us = windows.iter().map(|w| w.1).max().unwrap_or(1);
    let (mut cmd, retain) = match layout {
        Layout::Script(sha) => (redis::cmd("EVALSHA").arg(sha).to_owned(), retain_us),
        Layout::Function(name) => (
            redis::cmd("FCALL").arg(name).to_owned(),
            retain_us.div_ceil(1000),
        ),
    };
    cmd.arg(1)
        .arg(key(bucket))
        .arg(cost)
        .arg(0)
        .arg(capacity)
        .arg(retain);
    for (requests, window) in windows {
        cmd.arg(requests).arg(window);
    }
    cmd
}

/// Whether a check's reply says it was admitted: its first number is 1, in a reply of integers
/// (the scripts compared with) or of packed doubles (tollgate's, `src/store/check.lua`).
fn is_admitted(reply: &redis::Value) -> bool {
    match reply {
        redis::Value::Array(values) => values.first() == Some(&redis::Value::Int(1)),
        redis::Value::BulkString(packed) => packed.get(..8) == Some(&1f64.to_be_bytes()[..]),
        other => panic!("a check's reply: {other:?}"),
    }
}

/// Sends `checks` in pipelines of [`PIPELINE`] and returns how many were admitted.
fn pipelined(connection: &mut redis::Connection, checks: impl Iterator<Item = redis::Cmd>) -> u64 {
    let mut admitted = 0;
    let mut pipe = redis::pipe();
    let mut checks = checks.peekable();
    while checks.peek().is_some() {
        pipe.clear();
        for check in checks.by_ref().take(PIPELINE) {
            pipe.add_command(check);
        }
        let replies: Vec<redis::Value> = pipe.query(connection).unwrap();
        admitted += replies.iter().filter(|r| is_admitted(r)).count() as u64;
    }
    admitted
}

/// Empties Redis, fills `fill`'s buckets with `requests` checks each over a connection of its
/// own, and measures what they take once that connection is gone (its buffers are not the data's).
fn footprint(redis: &RedisServer, layout: &Layout, fill: &Fill, requests: u64) -> Footprint {
    let mut c = redis.connection();
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    let before = used_memory(&mut c);
    let windows = [(fill.limit, HOUR_US)];
    let checks = (0..requests)
        .flat_map(|_| 0..fill.buckets)
        .map(|bucket| check(layout, bucket, 1, &windows));
    let admitted = pipelined(&mut redis.connection(), checks);
    while field(&info(&mut c, "clients"), "connected_clients") != "1" {
        std::thread::sleep(Duration::from_millis(10));
    }
    let encoding = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(key(0))
        .query(&mut c)
        .unwrap();
    Footprint {
        admitted,
        bytes: used_memory(&mut c).saturating_sub(before),
        encoding,
    }
}

/// Empties Redis, prefills `scenario`'s buckets, then sends its checks and reads what Redis spent.
async fn measure(redis: &RedisServer, layout: &Layout, scenario: &Scenario) -> Run {
    let mut c = redis.connection();
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    if scenario.prefill > 0 {
        let checks =
            (0..scenario.buckets).map(|b| check(layout, b, scenario.prefill, scenario.windows));
        assert_eq!(pipelined(&mut c, checks), scenario.buckets, "prefill");
    }
    let client = redis::Client::open(redis.url()).unwrap();
    // No response timeout: on a busy shared machine an answer may take longer than the default.
    let config = AsyncConnectionConfig::new().set_response_timeout(None);
    let mut connections = Vec::new();
    for _ in 0..CONNECTIONS {
        connections.push(
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .unwrap(),
        );
    }
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    let start = Instant::now();
    let cpu_before = cpu::cpu_seconds(redis.pid());
    let allowed = drive(&connections, layout, scenario).await;
    let cpu = cpu::cpu_seconds(redis.pid()) - cpu_before;
    let elapsed = start.elapsed();
    // One line per command, `cmdstat_<name>:calls=…,usec=…,usec_per_call=…,…`, the commands
    // scripts run included; besides the scripts' own, only the `CONFIG RESETSTAT` above.
    let stats = info(&mut c, "commandstats");
    let command = layout.command();
    let calls = field(&stats, &format!("cmdstat_{command}"));
    let in_scripts: u64 = stats
        .lines()
        .filter_map(|line| line.strip_prefix("cmdstat_")?.split_once(':'))
        .filter(|(name, _)| ![command, "config"].contains(name))
        .map(|(_, stat)| value(stat, "calls").parse::<u64>().unwrap())
        .sum();
    Run {
        allowed,
        calls: value(calls, "calls").parse().unwrap(),
        usec_per_call: value(calls, "usec_per_call").parse().unwrap(),
        commands: in_scripts as f64 / CALLS as f64,
        cpu_us: cpu * 1e6 / CALLS as f64,
        per_second: CALLS as f64 / elapsed.as_secs_f64(),
    }
}

/// The value of `name` in a `name=value,…` line of `INFO commandstats`.
fn value<'a>(stat: &'a str, name: &str) -> &'a str {
    stat.split(',')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{name} in {stat}"))
}

/// [`CALLS`] checks of `scenario` from [`CALLERS`] concurrent callers, each waiting for its answer
/// before the next; returns how many were admitted.
async fn drive(connections: &[MultiplexedConnection], layout: &Layout, scenario: &Scenario) -> u64 {
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..CALLERS {
        let mut connection = connections[caller as usize % connections.len()].clone();
        let (layout, windows, buckets) = (layout.clone(), scenario.windows, scenario.buckets);
        callers.spawn(async move {
            let mut admitted = 0;
            for i in (caller..CALLS).step_by(CALLERS as usize) {
                let reply: redis::Value = check(&layout, i % buckets, 1, windows)
                    .query_async(&mut connection)
                    .await
                    .unwrap();
                admitted += u64::from(is_admitted(&reply));
            }
            admitted
        });
    }
    callers.join_all().await.into_iter().sum()
}

/// One section of `INFO`.
fn info(connection: &mut redis::Connection, section: &str) -> String {
    redis::cmd("INFO").arg(section).query(connection).unwrap()
}

/// The value of `name` in an `INFO` text.
fn field<'a>(info: &'a str, name: &str) -> &'a str {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("{name} in INFO"))
}

fn used_memory(connection: &mut redis::Connection) -> u64 {
    field(&info(connection, "memory"), "used_memory")
        .parse()
        .unwrap()
}
