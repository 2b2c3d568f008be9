//! The standalone store's connections: a few multiplexed `ConnectionManager`s used round-robin,
//! each replaced by a fresh one when it stops answering.
//!
//! `ConnectionManager` reconnects by itself only after an I/O error. A connection whose packets
//! vanish (a dead NAT entry, a host gone without a RST) produces no error, only timeouts, and
//! would otherwise live until the kernel gives up on it; a reconnect that fails AUTH is never
//! retried at all. Replacing the manager covers both: a new one connects from scratch on first
//! use.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Consecutive failures of one connection, with no success in between, that replace it.
const FAILURES_TO_REPLACE: u32 = 2;

/// The connections of one store.
pub(super) struct Connections {
    client: redis::Client,
    config: ConnectionManagerConfig,
    slots: Vec<Mutex<Slot>>,
    next: AtomicUsize,
}

/// One connection and what is known about it. The generation tells a failure of this connection
/// from a late failure of the one it replaced, so a burst of timeouts replaces it once.
struct Slot {
    generation: u64,
    manager: ConnectionManager,
    failures: u32,
}

/// A connection lent to one call, to be reported back with how the call went.
pub(super) struct Lease {
    index: usize,
    generation: u64,
    /// The connection to send on (a cheap clone of the shared manager).
    pub manager: ConnectionManager,
}

impl Connections {
    /// `count` connections, none connected yet: each connects on its first use.
    pub(super) fn new(
        client: redis::Client,
        config: ConnectionManagerConfig,
        count: usize,
    ) -> redis::RedisResult<Self> {
        let slots = (0..count.max(1))
            .map(|_| {
                Ok(Mutex::new(Slot {
                    generation: 0,
                    manager: ConnectionManager::new_lazy_with_config(
                        client.clone(),
                        config.clone(),
                    )?,
                    failures: 0,
                }))
            })
            .collect::<redis::RedisResult<_>>()?;
        Ok(Self {
            client,
            config,
            slots,
            next: AtomicUsize::new(0),
        })
    }

    /// The next connection, round-robin.
    pub(super) fn lease(&self) -> Lease {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let slot = self.slot(index);
        Lease {
            index,
            generation: slot.generation,
            manager: slot.manager.clone(),
        }
    }

    /// The call on `lease` was answered: its connection works.
    pub(super) fn succeeded(&self, lease: &Lease) {
        let mut slot = self.slot(lease.index);
        if slot.generation == lease.generation {
            slot.failures = 0;
        }
    }

    /// The call on `lease` failed; the connection is replaced after a run of failures.
    pub(super) fn failed(&self, lease: &Lease) {
        let mut slot = self.slot(lease.index);
        if slot.generation != lease.generation {
            return;
        }
        slot.failures += 1;
        if slot.failures >= FAILURES_TO_REPLACE {
            tracing::info!(
                connection = lease.index,
                failures = slot.failures,
                "redis connection failed repeatedly; replacing it with a new one"
            );
            self.renew(&mut slot);
        }
    }

    /// Replaces the connection of `lease` at once, unless that already happened.
    pub(super) fn replace(&self, lease: &Lease) {
        let mut slot = self.slot(lease.index);
        if slot.generation == lease.generation {
            self.renew(&mut slot);
        }
    }

    /// Replaces every connection.
    pub(super) fn replace_all(&self) {
        for index in 0..self.slots.len() {
            self.renew(&mut self.slot(index));
        }
    }

    fn renew(&self, slot: &mut Slot) {
        match ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone()) {
            Ok(manager) => {
                slot.manager = manager;
                slot.generation += 1;
                slot.failures = 0;
            }
            // The same client and configuration succeeded at start-up, and a lazy manager does
            // no I/O; keep the old connection rather than have none.
            Err(e) => tracing::warn!(error = %e, "cannot create a new redis connection"),
        }
    }

    fn slot(&self, index: usize) -> MutexGuard<'_, Slot> {
        // Held for a few instructions, never across an `.await`; the slot stays valid whatever
        // a panicking holder did.
        self.slots[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
