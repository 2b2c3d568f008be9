//! The tollgate binary as a child process, the way Kubernetes runs it: a configuration file, a
//! port, SIGTERM to stop it.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct TollgateProcess {
    pub port: u16,
    /// The admin API's port.
    pub admin_port: u16,
    child: Child,
    /// The configuration file when this process wrote it: kept until the process is gone.
    _config: Option<tempfile::NamedTempFile>,
    log: tempfile::NamedTempFile,
}

impl TollgateProcess {
    /// Starts the binary with `yaml` as its configuration file, listening on 127.0.0.1:`port`
    /// (the admin API on a free port of its own), and returns once it accepts connections.
    pub fn start(yaml: &str, port: u16) -> Self {
        let config = super::temp::yaml_file(yaml);
        let mut process = Self::start_file(config.path(), port);
        process._config = Some(config);
        process
    }

    /// Starts the binary with the configuration file at `config`, which the caller keeps.
    pub fn start_file(config: &std::path::Path, port: u16) -> Self {
        let log = tempfile::NamedTempFile::new().expect("create the log file");
        let admin_port = super::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("--config")
            .arg(config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            // Processes run side by side: never the default 0.0.0.0:9090.
            .args(["--metrics-listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("open the log file"))
            .spawn()
            .expect("the tollgate binary runs");
        let mut process = Self {
            port,
            admin_port,
            child,
            _config: None,
            log,
        };
        process.wait_listening();
        process
    }

    fn wait_listening(&mut self) {
        match super::ports::wait_listening(&mut self.child, self.port, Duration::from_secs(10)) {
            Ok(()) => {}
            Err(super::ports::NotListening::Exited(status)) => {
                panic!("tollgate exited with {status}:\n{}", self.log())
            }
            Err(super::ports::NotListening::Silent) => {
                panic!("tollgate does not listen within 10 s:\n{}", self.log())
            }
        }
    }

    /// The process id, for `/proc/<pid>/...`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// The port its metrics listener bound (it is started on port 0), as its start-up log names
    /// it; waits up to 10 s for that line.
    pub fn metrics_port(&self) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            let port = log
                .lines()
                .filter(|line| line.contains("serving Prometheus metrics"))
                .find_map(|line| line.split_once("addr=127.0.0.1:"))
                .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok());
            if let Some(port) = port {
                return port;
            }
            assert!(Instant::now() < deadline, "no metrics listener:\n{log}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The value of one series (`name{labels}`, as the exposition writes it) in a scrape of its
    /// metrics, or `None` when the scrape has no such series.
    pub async fn metric(&self, series: &str) -> Option<u64> {
        let port = self.metrics_port();
        let body = tokio::task::spawn_blocking(move || {
            super::http::request_blocking(port, "GET", "/metrics", &[]).expect("scrape")
        })
        .await
        .unwrap()
        .body;
        let prefix = format!("{series} ");
        body.lines()
            .find_map(|line| line.strip_prefix(&prefix)?.parse().ok())
    }

    /// Sends SIGTERM, as Kubernetes does to a pod it stops.
    pub fn sigterm(&self) {
        self.signal("-TERM");
    }

    /// Sends SIGHUP: read the configuration again.
    pub fn sighup(&self) {
        self.signal("-HUP");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for it to exit; panics (and kills it) if it is still running after `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "tollgate still runs {limit:?} later:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TollgateProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
