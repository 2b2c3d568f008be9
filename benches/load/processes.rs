//! The processes under test: a redis-server and the tollgate binary of each run, and what they
//! did during the measurement.

use crate::Options;
use crate::Shape;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for_port(port: u16, child: &mut Child, what: &str) {
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

pub struct RedisProcess {
    pub port: u16,
    pub child: Child,
}

impl RedisProcess {
    pub fn start() -> Self {
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

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    pub fn flush(&self) {
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

pub struct TollgateProcess {
    pub port: u16,
    pub child: Child,
    pub config: std::path::PathBuf,
}

impl TollgateProcess {
    pub fn start(redis: &RedisProcess, shape: Shape, o: &Options) -> Self {
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
        let binary = std::env::var_os("TOLLGATE_BENCH_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_tollgate").into());
        let mut child = Command::new(binary)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            // Metrics on, as deployed, on a port no other run holds (an older build ignores it).
            .env("TOLLGATE_METRICS_LISTEN", "127.0.0.1:0")
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

/// What the processes did during the measurement window.
pub struct Window {
    pub script_calls: u64,
    /// CPU time (user + system) of tollgate, Redis and the load tool.
    pub cpu_seconds: [f64; 3],
}

/// CPU time a process has used so far, from `/proc/<pid>/stat` (Linux).
pub fn cpu_seconds(pid: u32) -> f64 {
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
pub fn script_calls(url: &str) -> u64 {
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
