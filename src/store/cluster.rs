//! Redis Cluster: one cluster connection made in the background, and a circuit breaker per
//! primary node.
//!
//! Why per node: a breaker for all keys would open when one node dies and fail every key open,
//! and one per slot would rarely see enough failures to open (a slot holds few API keys). redis-rs
//! keeps its slot map private, so tollgate reads the topology itself (`CLUSTER SLOTS`, once a
//! second and whenever a breaker opens) and finds each key's primary by its hash slot. After a
//! failover the slots point at the promoted replica, whose breaker is closed: its keys count
//! again as soon as the topology shows it.

use super::breaker::{Breaker, BreakerSettings, Call, Transition};
use super::call::{Request, within_timeout};
use super::function::CheckCode;
use super::readiness::{ConnectError, Reporter};
use super::version::Server;
use super::{AbortOnDrop, StoreError};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Time allowed to connect to the cluster, or to read its topology, in the background: the
/// first connection discovers every node, which need not fit in one check's timeout.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Backoff between background attempts to connect to the cluster: at most a second, so that a
/// replica is ready (health) within about a second of the cluster answering.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// How often the topology is read when nothing fails.
const TOPOLOGY_REFRESH: Duration = Duration::from_secs(1);

/// Hash slots of a Redis Cluster.
const SLOTS: usize = 16384;

/// The cluster side of the store.
pub(super) struct Cluster {
    shared: Arc<Shared>,
    /// Stops the background task when the store goes away (tests start many in one process).
    _background: AbortOnDrop,
}

struct Shared {
    /// Set once by the background task; empty until every primary of the cluster first answered
    /// with a supported version.
    connection: OnceLock<ClusterConnection>,
    topology: RwLock<Arc<SlotMap>>,
    /// Woken when a breaker opens: the node may have failed over.
    stale: Notify,
    breaker: BreakerSettings,
}

/// Which primary serves each slot, with that primary's breaker.
#[derive(Default)]
struct SlotMap {
    /// Index into `primaries` for every slot; `u16::MAX` for a slot no node serves.
    slots: Vec<u16>,
    primaries: Vec<Arc<Primary>>,
}

/// A primary node and its breaker; shared, so a check takes it without copying the address.
struct Primary {
    /// `host:port`, as `CLUSTER SLOTS` gives it.
    address: String,
    breaker: Breaker,
}

impl Cluster {
    /// Starts connecting in the background; checks fail open at once until it is connected.
    /// `reporter` hears of every attempt.
    pub(super) fn start(
        client: ClusterClient,
        code: Arc<CheckCode>,
        breaker: BreakerSettings,
        reporter: Arc<Reporter>,
    ) -> Self {
        let shared = Arc::new(Shared {
            connection: OnceLock::new(),
            topology: RwLock::new(Arc::default()),
            stale: Notify::new(),
            breaker,
        });
        let task = tokio::spawn(run(client, code, shared.clone(), reporter));
        Self {
            shared,
            _background: AbortOnDrop(task.abort_handle()),
        }
    }

    /// Sends `request` to `key`'s primary within `timeout`, through that primary's breaker.
    pub(super) async fn call<T: redis::FromRedisValue>(
        &self,
        key: &str,
        request: Request<'_>,
        timeout: Duration,
    ) -> Result<T, StoreError> {
        let mut connection = self
            .shared
            .connection
            .get()
            .ok_or(StoreError::NotConnected)?
            .clone();
        // Until the topology is known, calls go without a breaker.
        let node = self.shared.primary_of(slot(key));
        let call = match &node {
            Some(primary) => primary
                .breaker
                .admit(Instant::now())
                .ok_or(StoreError::CircuitOpen)?,
            None => Call::Normal,
        };
        let result = within_timeout(timeout, request.send(&mut connection)).await;
        if let Some(primary) = node {
            match primary.breaker.record(call, result.is_ok(), Instant::now()) {
                Some(Transition::Opened) => {
                    self.shared.stale.notify_one();
                    if let Err(e) = &result {
                        tracing::warn!(
                            node = %primary.address,
                            error = %e,
                            failures = self.shared.breaker.failures_to_open,
                            probe_interval = ?self.shared.breaker.probe_interval,
                            "redis cluster node keeps failing: circuit breaker open for its keys, which fail at once while one check per interval probes it"
                        );
                    }
                }
                Some(Transition::Closed) => {
                    tracing::info!(node = %primary.address, "redis cluster node answered the probe: circuit breaker closed");
                }
                None => {}
            }
        }
        result
    }
}

impl Cluster {
    /// Primaries of the current topology whose breaker is open.
    pub(super) fn breakers_open(&self) -> usize {
        let topology = self
            .shared
            .topology
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        topology
            .primaries
            .iter()
            .filter(|p| p.breaker.is_open())
            .count()
    }
}

impl Shared {
    fn primary_of(&self, slot: u16) -> Option<Arc<Primary>> {
        let topology = self
            .topology
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let index = *topology.slots.get(usize::from(slot))?;
        topology.primaries.get(usize::from(index)).cloned()
    }
}

/// Connects, then keeps the topology current.
async fn run(
    client: ClusterClient,
    code: Arc<CheckCode>,
    shared: Arc<Shared>,
    reporter: Arc<Reporter>,
) {
    let (mut connection, server) = connect(&client, &code, &reporter).await;
    let _ = shared.connection.set(connection.clone());
    // Only now: a check that follows the readiness it reports finds the connection.
    reporter.connected(&server);
    loop {
        match tokio::time::timeout(CONNECT_TIMEOUT, read_topology(&mut connection)).await {
            Ok(Ok(primaries)) => shared.update(primaries),
            // Mid-failover a node may not answer; the next round asks another.
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot read the redis cluster topology"),
            Err(_) => tracing::debug!("the redis cluster topology was not read in time"),
        }
        tokio::select! {
            () = tokio::time::sleep(TOPOLOGY_REFRESH) => {}
            () = shared.stale.notified() => {}
        }
    }
}

/// Connects outside any check, retrying with backoff until every primary answers with a
/// supported version, and loads the check's code on every primary; the oldest primary with the
/// connection. Made inside a check, a first connection slower than the check's timeout would be
/// cancelled again and again.
async fn connect(
    client: &ClusterClient,
    code: &CheckCode,
    reporter: &Reporter,
) -> (ClusterConnection, Server) {
    let mut delay = RETRY_MIN;
    loop {
        let attempt = async {
            let mut connection = client.get_async_connection().await?;
            let server = oldest_primary(&mut connection).await?;
            code.load(&mut connection, &server).await?;
            Ok::<_, ConnectError>((connection, server))
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(Ok(connected)) => return connected,
            Ok(Err(error)) => reporter.failed(&error),
            Err(_) => reporter.failed(&ConnectError::Timeout(CONNECT_TIMEOUT)),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RETRY_MAX);
    }
}

/// The oldest of the primaries, from `INFO server` on each; an error if any is unsupported.
async fn oldest_primary(connection: &mut ClusterConnection) -> Result<Server, ConnectError> {
    let mut info = redis::cmd("INFO");
    info.arg("server");
    let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
    let replies: HashMap<String, String> =
        redis::from_redis_value(connection.route_command(info, routing).await?)
            .map_err(redis::RedisError::from)?;
    let mut oldest: Option<Server> = None;
    for reply in replies.values() {
        let server = ConnectError::check_version(reply)?;
        if oldest
            .as_ref()
            .is_none_or(|o| server.compatible < o.compatible)
        {
            oldest = Some(server);
        }
    }
    oldest.ok_or(ConnectError::UnknownVersion)
}

/// `(first slot, last slot, "host:port" of the primary)` for every range, from `CLUSTER SLOTS`.
async fn read_topology(
    connection: &mut ClusterConnection,
) -> redis::RedisResult<Vec<(u16, u16, String)>> {
    let ranges: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(connection)
        .await?;
    Ok(ranges
        .into_iter()
        .filter_map(|range| {
            let [start, end, primary, ..] = range.as_slice() else {
                return None;
            };
            let start: u16 = redis::from_redis_value_ref(start).ok()?;
            let end: u16 = redis::from_redis_value_ref(end).ok()?;
            let (host, port): (String, u16) = match primary {
                redis::Value::Array(node) => match node.as_slice() {
                    [host, port, ..] => (
                        redis::from_redis_value_ref(host).ok()?,
                        redis::from_redis_value_ref(port).ok()?,
                    ),
                    _ => return None,
                },
                _ => return None,
            };
            Some((start, end, format!("{host}:{port}")))
        })
        .collect())
}

impl Shared {
    /// Installs a topology read from the cluster, keeping the breaker of every primary that
    /// stays (its state is what the checks learnt about it).
    fn update(&self, ranges: Vec<(u16, u16, String)>) {
        let current = self
            .topology
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let known: HashMap<&str, &Arc<Primary>> = current
            .primaries
            .iter()
            .map(|primary| (primary.address.as_str(), primary))
            .collect();
        let mut topology = SlotMap {
            slots: vec![u16::MAX; SLOTS],
            primaries: Vec::new(),
        };
        for (start, end, address) in ranges {
            let index = match topology.primaries.iter().position(|p| p.address == address) {
                Some(index) => index,
                None => {
                    let primary = match known.get(address.as_str()) {
                        Some(primary) => Arc::clone(primary),
                        None => Arc::new(Primary {
                            address,
                            breaker: Breaker::new(self.breaker),
                        }),
                    };
                    topology.primaries.push(primary);
                    topology.primaries.len() - 1
                }
            };
            let Ok(index) = u16::try_from(index) else {
                continue;
            };
            for slot in usize::from(start)..=usize::from(end).min(SLOTS - 1) {
                topology.slots[slot] = index;
            }
        }
        *self
            .topology
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(topology);
    }
}

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag, or of the whole key when
/// it has none, modulo 16384.
fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = bytes
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let close = bytes[open + 1..].iter().position(|b| *b == b'}')?;
            (close > 0).then(|| &bytes[open + 1..open + 1 + close])
        })
        .unwrap_or(bytes);
    let crc = hashed.iter().fold(0u16, |crc, byte| {
        (0..8).fold(crc ^ (u16::from(*byte) << 8), |crc, _| {
            if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            }
        })
    });
    crc % SLOTS as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_the_ones_redis_computes() {
        // Values from CLUSTER KEYSLOT.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("123456789"), 12739);
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
        assert_eq!(slot("tollgate:{abc}:GET /x"), slot("abc"));
        // An empty tag does not count: the whole key is hashed.
        assert_eq!(slot("a{}b"), 13694);
        assert_eq!(slot("{}"), 15257);
        assert_eq!(slot("x{}{y}"), 14166);
    }

    fn settings() -> BreakerSettings {
        BreakerSettings {
            failures_to_open: 1,
            probe_interval: Duration::from_secs(1),
        }
    }

    fn shared() -> Shared {
        Shared {
            connection: OnceLock::new(),
            topology: RwLock::new(Arc::default()),
            stale: Notify::new(),
            breaker: settings(),
        }
    }

    #[test]
    fn each_slot_maps_to_its_primary_and_breakers_survive_refreshes() {
        let shared = shared();
        assert!(
            shared.primary_of(0).is_none(),
            "unknown before the first read"
        );
        shared.update(vec![
            (0, 5460, "10.0.0.1:6379".into()),
            (5461, 10922, "10.0.0.2:6379".into()),
            (10923, 16383, "10.0.0.3:6379".into()),
        ]);
        assert_eq!(shared.primary_of(0).unwrap().address, "10.0.0.1:6379");
        assert_eq!(shared.primary_of(10922).unwrap().address, "10.0.0.2:6379");
        assert_eq!(shared.primary_of(16383).unwrap().address, "10.0.0.3:6379");

        // The second node's breaker opens.
        let now = Instant::now();
        let second = shared.primary_of(6000).unwrap();
        assert_eq!(
            second.breaker.record(Call::Normal, false, now),
            Some(Transition::Opened)
        );
        assert_eq!(shared.primary_of(6000).unwrap().breaker.admit(now), None);
        assert!(shared.primary_of(0).unwrap().breaker.admit(now).is_some());

        // Still there after a refresh; after a failover its slots have a closed breaker.
        shared.update(vec![
            (0, 5460, "10.0.0.1:6379".into()),
            (5461, 10922, "10.0.0.2:6379".into()),
            (10923, 16383, "10.0.0.3:6379".into()),
        ]);
        assert_eq!(shared.primary_of(6000).unwrap().breaker.admit(now), None);
        shared.update(vec![
            (0, 5460, "10.0.0.1:6379".into()),
            (5461, 10922, "10.0.0.5:6379".into()),
            (10923, 16383, "10.0.0.3:6379".into()),
        ]);
        let promoted = shared.primary_of(6000).unwrap();
        assert_eq!(promoted.address, "10.0.0.5:6379");
        assert_eq!(promoted.breaker.admit(now), Some(Call::Normal));
    }

    #[test]
    fn slots_no_node_serves_have_no_primary() {
        let shared = shared();
        shared.update(vec![(0, 99, "10.0.0.1:6379".into())]);
        assert!(shared.primary_of(99).is_some());
        assert!(shared.primary_of(100).is_none());
    }
}
