//! A `redis-server` process of the test's own, on a free port (never the machine's 6379).

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
            let port = super::free_port();
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

fn spawn(port: u16, tls: Option<&(std::path::PathBuf, std::path::PathBuf)>) -> Option<Child> {
    let mut command = Command::new("redis-server");
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
    let child = command
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        // DEBUG SLEEP simulates a stalled Redis.
        .args(["--enable-debug-command", "local"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server on PATH (.ci/run installs it)");
    answering(child, port)
}

/// `child` once it accepts connections on `port`; `None` when it exits first (the port was taken
/// by someone else: try another) or does not answer within 5 s.
pub fn answering(mut child: Child, port: u16) -> Option<Child> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return None; // Port taken by someone else: try another.
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}
