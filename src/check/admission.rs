//! What the ext_authz listener admits at once, for the whole process: connections, calls in
//! flight, calls still waiting for their message, and the bytes of messages being read.
//!
//! Any workload that can reach the port can open connections and streams; each costs memory
//! whatever it sends. Per-connection limits (HTTP/2's concurrent streams, `max_request_bytes`)
//! multiply with the number of connections, so they bound nothing on their own: these budgets
//! are one per process, and what is past them is refused at once and cheaply (see
//! [`crate::check::service`] for how).
//!
//! A call that waits for its message is what a flood holds, and a healthy Envoy's never does (it
//! writes a check's headers and message together). Calls that wait share a pool of their own; a
//! call that finds it full may wait only [`BUSY_READ_TIMEOUT`], so a flood of stalled streams
//! cannot take the calls budget from the checks that arrive whole.

use crate::telemetry::metrics::{Metrics, Refusal};
use crate::telemetry::throttle::Throttle;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant as TokioInstant;

/// Connections served at once. An idle HTTP/2 connection holds a few tens of KiB of buffers and
/// tables, and each of its 128 streams a few KiB while open (an answer its client never reads
/// keeps its stream open): 512 bound that to about 200 MiB at the very worst. Envoy opens one per
/// worker thread (more when one reaches the stream limit), so a replica behind a gateway or a
/// couple of hundred sidecars stays well within it.
pub const MAX_CONNECTIONS: usize = 512;

/// Connections one peer address may hold at once, so that one workload cannot take them all.
pub const MAX_CONNECTIONS_PER_PEER: usize = 128;

/// Calls being answered at once, from their whole message until their answer is handed to HTTP/2. At the load benchmark's
/// concurrency Envoy holds a few dozen; at 100 000 checks/s each answered within the 50 ms store
/// timeout, 5 000. Calls still waiting for their message are not counted here but in the waiting
/// pools, so a flood of stalled streams never takes this budget from checks that arrive whole.
pub const MAX_CALLS: usize = 8192;

/// Calls that may wait the whole [`READ_TIMEOUT`] for their message at once.
pub const MAX_WAITING: usize = 1024;

/// Calls that may wait [`BUSY_READ_TIMEOUT`] at once, once [`MAX_WAITING`] others wait; past
/// both, a call that has to wait for its message is refused at once.
pub const MAX_BUSY_WAITING: usize = 4096;

/// How long a call may take to deliver its whole message, counted from the stream's opening.
/// Envoy sends a check at once and gives up on it after its own timeout (0.25 s as shipped).
pub const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// The read timeout of a call that waits while [`MAX_WAITING`] others already do: time enough
/// for a message already on its way, too little for a flood to hold memory with.
pub const BUSY_READ_TIMEOUT: Duration = Duration::from_millis(20);

/// Bytes of messages held at once by the calls that have not had to wait (their message was there
/// when they started: every one of Envoy's), reserved as they arrive (never as a gRPC prefix
/// announces them): with `max_request_bytes` at its default of 256 KiB, 128 messages of the
/// largest size, or some 30 000 checks of a typical 1 KiB. Held only while a check is decided.
pub const BUFFER_BUDGET: usize = 32 << 20;

/// Bytes of messages held at once by the calls waiting for the rest of theirs, at least: a budget
/// of their own, so that stalled messages never take the room of those that arrive whole; and
/// never less than two messages of `max_request_bytes`.
pub const WAITING_BUFFER_BUDGET: usize = 16 << 20;

/// How often a refusal is logged: the first at once, then one line per interval with the count.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The process's budgets, shared by every connection and call.
pub struct Admission {
    connections: Arc<Budget>,
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    calls: Arc<Budget>,
    waiting: Arc<Budget>,
    busy: Arc<Budget>,
    bytes: Arc<Budget>,
    waiting_bytes: Arc<Budget>,
    per_peer: usize,
    metrics: Arc<Metrics>,
    log: RefusalLog,
}

/// A connection's share of the budget, and of its peer's: held for as long as it is served.
pub struct ConnectionPermit {
    _share: Share,
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    peer: IpAddr,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = peers.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                peers.remove(&self.peer);
            }
        }
    }
}

/// A call's share: held until its response has been written.
pub type CallPermit = Share;

impl Admission {
    /// The budgets above, refusals counted in `metrics`; `max_request_bytes` sizes the budget of
    /// waiting calls' bytes.
    pub fn new(max_request_bytes: usize, metrics: Arc<Metrics>) -> Self {
        Self::with_limits(
            Limits {
                connections: MAX_CONNECTIONS,
                per_peer: MAX_CONNECTIONS_PER_PEER,
                calls: MAX_CALLS,
                waiting: MAX_WAITING,
                busy: MAX_BUSY_WAITING,
                bytes: BUFFER_BUDGET,
                waiting_bytes: WAITING_BUFFER_BUDGET.max(2 * max_request_bytes),
            },
            metrics,
        )
    }

    /// Budgets of the given sizes (tests use small ones).
    pub fn with_limits(limits: Limits, metrics: Arc<Metrics>) -> Self {
        Self {
            connections: Budget::new(limits.connections),
            peers: Arc::default(),
            calls: Budget::new(limits.calls),
            waiting: Budget::new(limits.waiting),
            busy: Budget::new(limits.busy),
            bytes: Budget::new(limits.bytes),
            waiting_bytes: Budget::new(limits.waiting_bytes),
            per_peer: limits.per_peer,
            metrics,
            log: RefusalLog::new(),
        }
    }

    /// A new connection's share, or `None` (counted and logged) when there are too many, in all
    /// or from `peer`.
    pub fn connection(&self, peer: IpAddr) -> Option<ConnectionPermit> {
        let share = self.admit(&self.connections, 1, Refusal::Connections)?;
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        let count = peers.entry(peer).or_default();
        if *count >= self.per_peer {
            drop(peers);
            self.refused(Refusal::Connections);
            return None;
        }
        *count += 1;
        Some(ConnectionPermit {
            _share: share,
            peers: self.peers.clone(),
            peer,
        })
    }

    /// A new call's share, or `None` (counted and logged) when there are too many.
    pub fn call(&self) -> Option<CallPermit> {
        self.admit(&self.calls, 1, Refusal::Calls)
    }

    /// Until when a call opened at `opened` may wait for the rest of its message, and the share
    /// of a waiting pool it holds meanwhile; `None` (counted and logged) when both pools are full.
    pub(crate) fn wait(&self, opened: TokioInstant) -> Option<(TokioInstant, Share)> {
        if let Some(permit) = Budget::take(&self.waiting, 1) {
            return Some((opened + READ_TIMEOUT, permit));
        }
        let permit = self.admit(&self.busy, 1, Refusal::Waiting)?;
        Some((opened + BUSY_READ_TIMEOUT, permit))
    }

    /// `bytes` more of a message being read, added to `held`: from the budget of calls that wait
    /// when `waiting`, else from the other. `false` (counted and logged) when it cannot take them.
    pub(crate) fn hold_bytes(&self, held: &mut Option<Share>, bytes: usize, waiting: bool) -> bool {
        if bytes == 0 {
            return true;
        }
        let budget = if waiting {
            &self.waiting_bytes
        } else {
            &self.bytes
        };
        let taken = match held {
            Some(held) => held.grow(bytes),
            None => Budget::take(budget, bytes)
                .map(|share| *held = Some(share))
                .is_some(),
        };
        if !taken {
            self.refused(Refusal::Bytes);
        }
        taken
    }

    /// Moves what a call holds to the budget of calls that wait, as it starts to wait: stalled
    /// messages then never take the room of those that arrive whole. `false` (counted and logged)
    /// when that budget cannot take them.
    pub(crate) fn start_waiting(&self, held: &mut Option<Share>) -> bool {
        let Some(share) = held.take() else {
            return true;
        };
        let bytes = share.n;
        drop(share);
        self.hold_bytes(held, bytes, true)
    }

    /// Counts a call that did not deliver its message within its read timeout.
    pub(crate) fn timed_out(&self) {
        self.refused(Refusal::ReadTimeout);
    }

    fn admit(&self, pool: &Arc<Budget>, n: usize, why: Refusal) -> Option<Share> {
        let share = Budget::take(pool, n);
        if share.is_none() {
            self.refused(why);
        }
        share
    }

    fn refused(&self, why: Refusal) {
        self.metrics.refused(why);
        self.log.record(why);
    }
}

/// A count that shares may take from up to a limit, never waiting: one atomic add to take and
/// one to give back. (tokio's `Semaphore` takes a lock on every release, for waiters this never
/// has.)
pub struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    /// `n` of `budget`, or `None` when they would take it past its limit.
    fn take(budget: &Arc<Self>, n: usize) -> Option<Share> {
        budget.reserve(n).then(|| Share {
            budget: budget.clone(),
            n,
        })
    }

    /// Takes `n` if they fit. A compare-and-swap, so that a large request that does not fit never
    /// shows, even for a moment, as taken to the small ones beside it.
    fn reserve(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }
}

/// Part of a [`Budget`], given back when dropped.
pub struct Share {
    budget: Arc<Budget>,
    n: usize,
}

impl Share {
    /// `n` more of the same budget; `false`, and nothing taken, past its limit.
    fn grow(&mut self, n: usize) -> bool {
        let taken = self.budget.reserve(n);
        if taken {
            self.n += n;
        }
        taken
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.n, Ordering::AcqRel);
    }
}

/// The sizes of [`Admission`]'s budgets.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub connections: usize,
    /// Connections one peer address may hold at once.
    pub per_peer: usize,
    /// Calls in flight at once.
    pub calls: usize,
    /// Calls waiting the whole read timeout for their message at once.
    pub waiting: usize,
    /// Calls waiting the short read timeout at once.
    pub busy: usize,
    /// Bytes of messages held at once by calls that have not had to wait.
    pub bytes: usize,
    /// Bytes of messages held at once by calls waiting for the rest of theirs.
    pub waiting_bytes: usize,
}

/// Logs refusals without flooding the log during a flood.
struct RefusalLog(Throttle);

impl RefusalLog {
    fn new() -> Self {
        Self(Throttle::new(LOG_INTERVAL))
    }

    fn record(&self, why: Refusal) {
        if let Some(unlogged) = self.0.event() {
            tracing::warn!(
                reason = why.label(),
                refusals_not_logged = unlogged,
                "ext_authz listener over its budget: refusing {} (see tollgate_refused_total)",
                why.what()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Admission, Budget, Limits};
    use crate::telemetry::metrics::Metrics;
    use std::net::IpAddr;
    use std::sync::Arc;

    #[test]
    fn one_peer_cannot_take_every_connection() {
        let limits = Limits {
            connections: 3,
            per_peer: 2,
            calls: 1,
            waiting: 1,
            busy: 1,
            bytes: 1,
            waiting_bytes: 1,
        };
        let admission = Admission::with_limits(limits, Arc::new(Metrics::new()));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = admission.connection(a).expect("1 of 2 for a");
        let _second = admission.connection(a).expect("2 of 2 for a");
        assert!(admission.connection(a).is_none(), "a has its two");
        let _other = admission.connection(b).expect("b still gets one");
        assert!(admission.connection(b).is_none(), "3 of 3 in all");
        drop(first);
        assert!(admission.connection(a).is_some(), "a's share came back");
    }

    #[test]
    fn a_budget_gives_shares_up_to_its_limit_and_takes_them_back() {
        let budget = Budget::new(10);
        let mut first = Budget::take(&budget, 6).expect("6 of 10");
        assert!(Budget::take(&budget, 5).is_none(), "11 of 10");
        assert!(!first.grow(5), "a share cannot grow past the limit either");
        assert!(first.grow(4));
        assert!(Budget::take(&budget, 1).is_none(), "all 10 are taken");
        drop(first);
        let whole = Budget::take(&budget, 10).expect("given back whole when dropped");
        drop(whole);
        assert_eq!(budget.used.load(std::sync::atomic::Ordering::Relaxed), 0);
    }
}
