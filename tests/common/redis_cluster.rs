//! A three-node Redis Cluster of the test's own (three primaries, no replicas), on free ports.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Child>,
    dir: PathBuf,
}

impl RedisCluster {
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(super::unique_key("tollgate-cluster"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cluster = Self {
            ports: Vec::new(),
            children: Vec::new(),
            dir,
        };
        for _ in 0..3 {
            let (port, child) = (0..10)
                .find_map(|_| {
                    let port = node_port();
                    spawn_node(port, &cluster.dir).map(|child| (port, child))
                })
                .expect(
                    "cannot start a cluster node (is redis-server installed? .ci/run installs it)",
                );
            cluster.ports.push(port);
            cluster.children.push(child);
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli (installed with redis-server)");
        assert!(status.success(), "redis-cli --cluster create failed");
        for &port in &cluster.ports {
            wait_until(
                || {
                    redis::Client::open(format!("redis://127.0.0.1:{port}"))
                        .and_then(|c| c.get_connection())
                        .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
                        .is_ok_and(|info| info.contains("cluster_state:ok"))
                },
                "cluster_state:ok",
            );
        }
        cluster
    }

    /// The node tollgate is given; it discovers the others.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.ports[0])
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free port whose cluster bus port (port + 10000) exists and is free as well.
fn node_port() -> u16 {
    loop {
        let port = super::free_port();
        if port <= 55535 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

/// Starts one node; `None` when it does not come up (see `answering`).
fn spawn_node(port: u16, dir: &std::path::Path) -> Option<Child> {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--cluster-enabled",
            "yes",
        ])
        .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
        .args(["--cluster-node-timeout", "2000"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server on PATH (.ci/run installs it)");
    super::redis_server::answering(child, port)
}

fn wait_until(mut ready: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("redis cluster: {what} not reached within 20 s");
}
