//! The processes under test: a redis-server and the tollgate binary of each run, and what they
//! did during the measurement.

use crate::Options;
use crate::Shape;
use crate::ports::{NotListening, free_port, wait_listening};
use crate::redis_server::RedisServer;
use crate::temp::yaml_file;
use std::process::{Child, Command};
use std::time::Duration;

/// Empties Redis and its command statistics between the measurements of a run.
pub fn flush(redis: &RedisServer) {
    let mut c = redis.connection();
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
}

pub struct TollgateProcess {
    pub port: u16,
    pub child: Child,
    /// Kept until the process is gone; removed on drop.
    _config: tempfile::NamedTempFile,
}

impl TollgateProcess {
    pub fn start(redis: &RedisServer, shape: Shape, o: &Options) -> Self {
        let port = free_port();
        let config = yaml_file(&format!(
            "listen: 127.0.0.1:{port}\nadmin: {{ listen: 127.0.0.1:0 }}\nmetrics: {}\ndrain_period: 0s\ndeny_cache_entries: {}\nredis: {{ url: \"{}\", connections: {} }}\nroutes:\n  - {{ method: GET, path: /bench/:id, limits: [{{ requests: {}, window: 60s }}{}] }}\n{}",
            if o.metrics {
                "{ listen: 127.0.0.1:0 }"
            } else {
                "{ enabled: false }"
            },
            if o.deny_cache { 100_000 } else { 0 },
            redis.url(),
            o.redis_connections,
            shape.limit,
            if o.second_window {
                ", { requests: 1000, window: 1h }"
            } else {
                ""
            },
            match &o.tracing {
                Some((ratio, endpoint)) => format!(
                    "tracing: {{ otlp_endpoint: \"{endpoint}\", sampling_ratio: {ratio} }}\n"
                ),
                None => String::new(),
            }
        ));
        let binary = std::env::var_os("TOLLGATE_BENCH_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_tollgate").into());
        let mut child = Command::new(binary)
            .arg("--config")
            .arg(config.path())
            .env("RUST_LOG", "warn")
            // Metrics on, as deployed, on a port no other run holds (an older build ignores it).
            .env("TOLLGATE_METRICS_LISTEN", "127.0.0.1:0")
            .spawn()
            .expect("the tollgate binary");
        match wait_listening(&mut child, port, Duration::from_secs(10)) {
            Ok(()) => {}
            Err(NotListening::Exited(status)) => panic!("tollgate exited with {status}"),
            Err(NotListening::Silent) => panic!("tollgate did not listen on {port}"),
        }
        Self {
            port,
            child,
            _config: config,
        }
    }
}

impl Drop for TollgateProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the processes did during the measurement window.
pub struct Window {
    pub script_calls: u64,
    /// CPU time (user + system) of tollgate, Redis and the load tool.
    pub cpu_seconds: [f64; 3],
}
