//! The standalone store's connections: a few multiplexed connections used round-robin, each made
//! in the background and used only once it is ready.
//!
//! A connection is ready when TCP, TLS, AUTH, `INFO server` (a supported version) and the
//! check's load (the script, and the function where the server has them) have all completed
//! within [`CONNECT_TIMEOUT`], outside any check: made inside a
//! check, a connection slower than the check's timeout would be cancelled again and again. A check
//! takes the next ready connection and skips those still being made, so one connection that is
//! down never fails a check open while another can answer; with none ready it fails at once.
//!
//! A connection is made again from scratch, in the background, after an error that says it is
//! dead (reset, refused, closed) and after a run of failures without one (a dead NAT entry or a
//! host gone without a RST gives only timeouts; a reconnect that fails AUTH is an error of its
//! own). Attempts start every [`RETRY`] and overlap, so an attempt stuck on a black-holed socket
//! does not delay the first one that can succeed.

use super::function::CheckCode;
use super::readiness::{ConnectError, Reporter};
use super::{AbortOnDrop, StoreError};
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::task::JoinSet;

/// Time allowed for one connection to become ready: TCP, TLS, AUTH, `INFO`, `SCRIPT LOAD` and
/// `FUNCTION LOAD`.
/// Longer than any check's timeout, which need not cover a TLS handshake.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Time between the starts of two attempts to make a connection.
const RETRY: Duration = Duration::from_millis(500);

/// Consecutive failures of one connection, with no success in between, that replace it.
const FAILURES_TO_REPLACE: u32 = 2;

/// The connections of one store.
pub(super) struct Connections {
    shared: Arc<Shared>,
    next: AtomicUsize,
}

/// What the background tasks share with the checks.
struct Shared {
    client: redis::Client,
    config: AsyncConnectionConfig,
    code: Arc<CheckCode>,
    reporter: Arc<Reporter>,
    slots: Vec<Mutex<Slot>>,
}

/// One connection and what is known about it. The generation tells a failure of this connection
/// from a late failure of the one it replaced, so a burst of timeouts replaces it once.
struct Slot {
    generation: u64,
    /// `None` while the connection is being made.
    connection: Option<MultiplexedConnection>,
    failures: u32,
    /// The task making the connection, stopped when the slot is renewed again or dropped.
    making: Option<AbortOnDrop>,
}

/// A connection lent to one call, to be reported back with how the call went.
pub(super) struct Lease {
    index: usize,
    generation: u64,
    /// The connection to send on (a cheap clone of the shared one).
    pub connection: MultiplexedConnection,
}

impl Connections {
    /// `count` connections, each made in the background (so this must run inside the tokio
    /// runtime); `reporter` hears of every attempt.
    pub(super) fn start(
        client: redis::Client,
        config: AsyncConnectionConfig,
        code: Arc<CheckCode>,
        reporter: Arc<Reporter>,
        count: usize,
    ) -> Self {
        let slots = (0..count.max(1))
            .map(|_| {
                Mutex::new(Slot {
                    generation: 0,
                    connection: None,
                    failures: 0,
                    making: None,
                })
            })
            .collect();
        let shared = Arc::new(Shared {
            client,
            config,
            code,
            reporter,
            slots,
        });
        for index in 0..shared.slots.len() {
            shared.renew(index, &mut shared.slot(index));
        }
        Self {
            shared,
            next: AtomicUsize::new(0),
        }
    }

    /// The next ready connection, round-robin; [`StoreError::NotConnected`] when none is.
    pub(super) fn lease(&self) -> Result<Lease, StoreError> {
        let count = self.shared.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..count)
            .find_map(|offset| {
                let index = (start + offset) % count;
                let slot = self.shared.slot(index);
                Some(Lease {
                    index,
                    generation: slot.generation,
                    connection: slot.connection.clone()?,
                })
            })
            .ok_or(StoreError::NotConnected)
    }

    /// The call on `lease` was answered: its connection works.
    pub(super) fn succeeded(&self, lease: &Lease) {
        let mut slot = self.shared.slot(lease.index);
        if slot.generation == lease.generation {
            slot.failures = 0;
        }
    }

    /// The call on `lease` failed with `error`: a dead connection is made again at once, one that
    /// only fails (timeouts, errors that do not close it) after a run of failures.
    pub(super) fn failed(&self, lease: &Lease, error: &StoreError) {
        let mut slot = self.shared.slot(lease.index);
        if slot.generation != lease.generation {
            return;
        }
        slot.failures += 1;
        // A timeout (ours or the connection's) leaves the connection open: it may only be slow.
        let dead = matches!(error, StoreError::Redis(e)
            if !e.is_timeout() && (e.is_unrecoverable_error() || e.is_connection_dropped()));
        if dead || slot.failures >= FAILURES_TO_REPLACE {
            tracing::debug!(
                connection = lease.index,
                failures = slot.failures,
                %error,
                "redis connection failed; making a new one in the background"
            );
            self.shared.renew(lease.index, &mut slot);
        }
    }

    /// Makes the connection of `lease` again at once, unless that already happened.
    pub(super) fn replace(&self, lease: &Lease) {
        let mut slot = self.shared.slot(lease.index);
        if slot.generation == lease.generation {
            self.shared.renew(lease.index, &mut slot);
        }
    }

    /// Makes every connection again.
    pub(super) fn replace_all(&self) {
        for index in 0..self.shared.slots.len() {
            self.shared.renew(index, &mut self.shared.slot(index));
        }
    }
}

impl Shared {
    /// Takes the slot's connection out of use and starts making a new one.
    fn renew(self: &Arc<Self>, index: usize, slot: &mut Slot) {
        slot.generation += 1;
        slot.connection = None;
        slot.failures = 0;
        // The task holds the shared state only weakly: a dropped store stops it too.
        let task = tokio::spawn(make(Arc::downgrade(self), index, slot.generation));
        // Replacing the handle aborts the task making the connection it replaces.
        slot.making = Some(AbortOnDrop(task.abort_handle()));
    }

    fn slot(&self, index: usize) -> MutexGuard<'_, Slot> {
        // Held for a few instructions, never across an `.await`; the slot stays valid whatever
        // a panicking holder did.
        self.slots[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Makes slot `index`'s connection of `generation`: an attempt every [`RETRY`], each with
/// [`CONNECT_TIMEOUT`], until one succeeds; then puts it in the slot.
async fn make(shared: std::sync::Weak<Shared>, index: usize, generation: u64) {
    let Some((client, config, code, reporter)) = shared.upgrade().map(|s| {
        (
            s.client.clone(),
            s.config.clone(),
            s.code.clone(),
            s.reporter.clone(),
        )
    }) else {
        return;
    };
    let mut attempts = JoinSet::new();
    let mut retry = tokio::time::interval(RETRY);
    let (connection, server) = loop {
        tokio::select! {
            _ = retry.tick() => {
                let (client, config, code) = (client.clone(), config.clone(), code.clone());
                attempts.spawn(async move {
                    tokio::time::timeout(CONNECT_TIMEOUT, connect(&client, &config, &code))
                        .await
                        .map_err(|_| ConnectError::Timeout(CONNECT_TIMEOUT))?
                });
            }
            Some(attempt) = attempts.join_next() => match attempt {
                Ok(Ok(made)) => break made,
                Ok(Err(error)) => reporter.failed(&error),
                // Attempts are not aborted while the set lives; a panic is a bug in redis-rs.
                Err(error) => tracing::error!(%error, "a redis connection attempt failed"),
            },
        }
    };
    // Dropping the set aborts the attempts still running.
    drop(attempts);
    if let Some(shared) = shared.upgrade() {
        let mut slot = shared.slot(index);
        if slot.generation == generation {
            slot.connection = Some(connection);
        }
    }
    // Only now: a check that follows the readiness it reports finds the connection in its slot.
    reporter.connected(&server);
}

/// One attempt: connects, checks the version and loads the check's code.
async fn connect(
    client: &redis::Client,
    config: &AsyncConnectionConfig,
    code: &CheckCode,
) -> Result<(MultiplexedConnection, super::version::Server), ConnectError> {
    let mut connection = client
        .get_multiplexed_async_connection_with_config(config)
        .await?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut connection)
        .await?;
    let server = ConnectError::check_version(&info)?;
    code.load(&mut connection, &server).await?;
    Ok((connection, server))
}
