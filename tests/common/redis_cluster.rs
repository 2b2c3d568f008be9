//! A Redis Cluster of the test's own on free ports: three primaries, and optionally one replica
//! of each for failover tests.

use super::redis_server;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Option<Child>>,
    /// The nodes' `nodes-<port>.conf` files; removed on drop, after the nodes are killed.
    dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Three primaries, no replicas.
    pub fn start() -> Self {
        Self::start_with(0, 2000)
    }

    /// Three primaries with one replica each. Nodes count as failing after 1 s without an
    /// answer (`cluster-node-timeout`), so a replica takes over from a killed primary in a few
    /// seconds, and the other primaries keep serving their slots meanwhile
    /// (`cluster-require-full-coverage no`, as a deployment that wants one node's failure to
    /// stay one node's would set).
    pub fn start_with_replicas() -> Self {
        Self::start_with(1, 1000)
    }

    fn start_with(replicas: usize, node_timeout_ms: u32) -> Self {
        let full_coverage = if replicas == 0 { "yes" } else { "no" };
        let mut cluster = Self {
            ports: Vec::new(),
            children: Vec::new(),
            dir: super::temp::dir(),
        };
        for _ in 0..3 * (1 + replicas) {
            let (port, child) = (0..10)
                .find_map(|_| {
                    let port = node_port();
                    spawn_node(port, cluster.dir.path(), node_timeout_ms, full_coverage)
                        .map(|child| (port, child))
                })
                .expect(
                    "cannot start a cluster node (is redis-server installed? .ci/run installs it)",
                );
            cluster.ports.push(port);
            cluster.children.push(Some(child));
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
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
        if replicas > 0 {
            // A replica can take over only once it has synchronised with its primary.
            for &port in &cluster.ports {
                wait_until(
                    || {
                        let info: String = redis::cmd("INFO")
                            .arg("replication")
                            .query(&mut node(port))
                            .unwrap_or_default();
                        (info.contains("role:master") && info.contains("connected_slaves:1"))
                            || info.contains("master_link_status:up")
                    },
                    "every replica in sync",
                );
            }
        }
        cluster
    }

    /// The port of the primary that serves `slot` now.
    pub fn primary_of_slot(&self, slot: u16) -> u16 {
        let live = self.live_port();
        let ranges: Vec<(u16, u16, (String, u16))> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query::<Vec<redis::Value>>(&mut node(live))
            .unwrap()
            .into_iter()
            .map(|range| {
                let redis::Value::Array(items) = range else {
                    panic!("CLUSTER SLOTS: {range:?}")
                };
                let start: u16 = redis::from_redis_value(items[0].clone()).unwrap();
                let end: u16 = redis::from_redis_value(items[1].clone()).unwrap();
                let primary: Vec<redis::Value> = redis::from_redis_value(items[2].clone()).unwrap();
                let host: String = redis::from_redis_value(primary[0].clone()).unwrap();
                let port: u16 = redis::from_redis_value(primary[1].clone()).unwrap();
                (start, end, (host, port))
            })
            .collect();
        ranges
            .into_iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, (_, port))| port)
            .unwrap_or_else(|| panic!("no node serves slot {slot}"))
    }

    /// The hash slot of `key`.
    pub fn slot_of(&self, key: &str) -> u16 {
        let live = self.live_port();
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut node(live))
            .unwrap()
    }

    fn live_port(&self) -> u16 {
        self.ports
            .iter()
            .zip(&self.children)
            .find(|(_, child)| child.is_some())
            .map(|(port, _)| *port)
            .expect("a live node")
    }

    /// Kills the node on `port` at once, as a crash would.
    pub fn kill(&mut self, port: u16) {
        let index = self.ports.iter().position(|p| *p == port).expect("a node");
        if let Some(mut child) = self.children[index].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The node tollgate is given; it discovers the others.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.ports[0])
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::as_mut) {
            let _ = child.kill();
            let _ = child.wait();
        }
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
fn spawn_node(
    port: u16,
    dir: &std::path::Path,
    node_timeout_ms: u32,
    full_coverage: &str,
) -> Option<Child> {
    let mut command = redis_server::command();
    command
        .args(["--port", &port.to_string(), "--cluster-enabled", "yes"])
        .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
        .args(["--cluster-node-timeout", &node_timeout_ms.to_string()])
        .args(["--cluster-require-full-coverage", full_coverage])
        .arg("--dir")
        .arg(dir);
    redis_server::start_on(&mut command, port)
}

fn node(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|c| c.get_connection())
        .expect("connect to a cluster node")
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
