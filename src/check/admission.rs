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
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::time::Instant as TokioInstant;

/// Connections served at once. An idle HTTP/2 connection holds a few tens of KiB of buffers and
/// tables; Envoy opens one per worker thread (more when one reaches the stream limit), so a
/// replica behind a few hundred sidecars stays well within it.
pub const MAX_CONNECTIONS: usize = 1024;

/// Calls being answered at once, from their whole message until their response has been
/// written (a response a client does not read keeps its call). At the load benchmark's
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

/// Bytes of messages held at once by every call together, reserved as they arrive (never as a
/// gRPC prefix announces them): with `max_request_bytes` at its default of 256 KiB, 128 messages
/// of the largest size, or some 30 000 checks of a typical 1 KiB.
pub const BUFFER_BUDGET: usize = 32 << 20;

/// How often a refusal is logged: the first at once, then one line per interval with the count.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The process's budgets, shared by every connection and call.
pub struct Admission {
    connections: Arc<Budget>,
    calls: Arc<Budget>,
    waiting: Arc<Budget>,
    busy: Arc<Budget>,
    bytes: Arc<Budget>,
    metrics: Arc<Metrics>,
    log: RefusalLog,
}

/// A connection's share: held for as long as the connection is served.
pub type ConnectionPermit = Share;

/// A call's share: held until its response has been written.
pub type CallPermit = Share;

impl Admission {
    /// The budgets above, refusals counted in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self::with_limits(
            Limits {
                connections: MAX_CONNECTIONS,
                calls: MAX_CALLS,
                waiting: MAX_WAITING,
                busy: MAX_BUSY_WAITING,
                bytes: BUFFER_BUDGET,
            },
            metrics,
        )
    }

    /// Budgets of the given sizes (tests use small ones).
    pub fn with_limits(limits: Limits, metrics: Arc<Metrics>) -> Self {
        Self {
            connections: Budget::new(limits.connections),
            calls: Budget::new(limits.calls),
            waiting: Budget::new(limits.waiting),
            busy: Budget::new(limits.busy),
            bytes: Budget::new(limits.bytes),
            metrics,
            log: RefusalLog::new(),
        }
    }

    /// A new connection's share, or `None` (counted and logged) when there are too many.
    pub fn connection(&self) -> Option<ConnectionPermit> {
        self.admit(&self.connections, 1, Refusal::Connections)
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

    /// `bytes` more of a message being read, added to `held`; `false` (counted and logged) when
    /// the budget cannot take them.
    pub(crate) fn hold_bytes(&self, held: &mut Option<Share>, bytes: usize) -> bool {
        if bytes == 0 {
            return true;
        }
        let taken = match held {
            Some(held) => held.grow(bytes),
            None => Budget::take(&self.bytes, bytes)
                .map(|share| *held = Some(share))
                .is_some(),
        };
        if !taken {
            self.refused(Refusal::Bytes);
        }
        taken
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

    fn reserve(&self, n: usize) -> bool {
        let before = self.used.fetch_add(n, Ordering::AcqRel);
        if before.saturating_add(n) <= self.limit {
            return true;
        }
        self.used.fetch_sub(n, Ordering::AcqRel);
        false
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
    /// Calls in flight at once.
    pub calls: usize,
    /// Calls waiting the whole read timeout for their message at once.
    pub waiting: usize,
    /// Calls waiting the short read timeout at once.
    pub busy: usize,
    /// Bytes of messages held at once.
    pub bytes: usize,
}

/// Logs refusals without flooding the log during a flood: the first at once, then at most one
/// line per [`LOG_INTERVAL`] with the count of those not logged.
struct RefusalLog {
    started: Instant,
    /// Milliseconds since `started` of the last line, plus one (0: never logged).
    last_logged: AtomicU64,
    unlogged: AtomicU64,
}

impl RefusalLog {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last_logged: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
        }
    }

    fn record(&self, why: Refusal) {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.last_logged.load(Ordering::Relaxed);
        let due = last == 0 || now >= last + LOG_INTERVAL.as_millis() as u64;
        if due
            && self
                .last_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let unlogged = self.unlogged.swap(0, Ordering::Relaxed);
            tracing::warn!(
                reason = why.label(),
                refusals_not_logged = unlogged,
                "ext_authz listener over its budget: refusing {} (see tollgate_refused_total)",
                why.what()
            );
        } else {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Budget;

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
