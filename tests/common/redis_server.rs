//! A `redis-server` process of the test's (or the bench's) own, on a free port (never the
//! machine's 6379).
//!
//! Standalone (it needs only `redis` and [`ports`]), so a bench can include it with
//! `#[path = "../../tests/common/redis_server.rs"] mod redis_server;`.

// Loaded here rather than beside this module, so that it is loaded once wherever this file is
// (clippy's `duplicate_mod`); the includer re-exports it.
#[path = "ports.rs"]
pub mod ports;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// `--tls-cert-file` and `--tls-key-file` when the server speaks only TLS.
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A server that accepts only TLS connections, with this certificate and key.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Self {
        Self::start_with(Some((cert.to_owned(), key.to_owned())))
    }

    fn start_with(tls: Option<(std::path::PathBuf, std::path::PathBuf)>) -> Self {
        for _ in 0..5 {
            let port = ports::free_port();
            if let Some(child) = spawn(port, tls.as_ref()) {
                return Self {
                    port,
                    child: Some(child),
                    tls,
                };
            }
        }
        panic!("cannot start redis-server (is it installed? .ci/run installs it)");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its data is gone, as after a crash of a cache without persistence).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = spawn(self.port, self.tls.as_ref()) {
                self.child = Some(child);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("cannot restart redis-server on port {}", self.port);
    }

    /// The process id of the running server (to read the CPU time it used).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis-server runs").id()
    }

    /// Runs a command with redis-cli-like simplicity through a blocking client.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .expect("connect to the test redis")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `redis-server` as the tests and benches run every node: on 127.0.0.1 only, without
/// persistence, its log discarded. The caller adds the port and its own options, then
/// [`start_on`]s it.
pub fn command() -> Command {
    let mut command = Command::new("redis-server");
    command
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null());
    command
}

/// Runs `command` and returns the child once it accepts connections on `port` (see
/// [`answering`]).
pub fn start_on(command: &mut Command, port: u16) -> Option<Child> {
    let child = command
        .spawn()
        .expect("redis-server on PATH (.ci/run installs it)");
    answering(child, port)
}

fn spawn(port: u16, tls: Option<&(std::path::PathBuf, std::path::PathBuf)>) -> Option<Child> {
    let mut command = command();
    match tls {
        None => command.args(["--port", &port.to_string()]),
        Some((cert, key)) => command
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--tls-auth-clients",
                "no",
            ])
            .arg("--tls-cert-file")
            .arg(cert)
            .arg("--tls-key-file")
            .arg(key),
    };
    // DEBUG SLEEP simulates a stalled Redis.
    command
        .args(["--enable-debug-command", "local"])
        .stderr(Stdio::null());
    start_on(&mut command, port)
}

/// `child` once it accepts connections on `port`; `None` when it exits first (the port was taken
/// by someone else: try another) or does not answer within 5 s.
fn answering(mut child: Child, port: u16) -> Option<Child> {
    match ports::wait_listening(&mut child, port, Duration::from_secs(5)) {
        Ok(()) => Some(child),
        Err(ports::NotListening::Exited(_)) => None,
        Err(ports::NotListening::Silent) => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    }
}

/// Calls of the quota script (`EVALSHA` and `EVAL`) the server has served so far, from
/// `INFO commandstats`.
pub fn script_calls(connection: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(connection)
        .unwrap();
    ["cmdstat_evalsha:", "cmdstat_eval:"]
        .iter()
        .filter_map(|prefix| info.lines().find(|l| l.starts_with(prefix)))
        .map(|line| {
            let calls = line
                .split("calls=")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap();
            calls.parse::<u64>().unwrap()
        })
        .sum()
}
