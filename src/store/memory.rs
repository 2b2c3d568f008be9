//! The embedded store: the same log of admission times as the Redis script, in this process's
//! memory.

use super::{
    BucketRef, Outcome, PlanAssignments, QuotaRead, QuotaStore, StoreError, Usage, WindowOutcome,
    WindowUsage,
};
use crate::api_key::KeyDigest;
use crate::clock::{Clock, SystemClock};
use crate::policy::limit::{MAX_WINDOWS, Mode, Rule};
use std::collections::VecDeque;
use std::collections::hash_map::{DefaultHasher, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Independent locks, so concurrent checks of different buckets rarely wait for each other.
const SHARDS: usize = 16;

/// Checks a shard makes between sweeps for expired logs.
const SWEEP_EVERY: u32 = 1024;

/// While the store is full, a shard sweeps for expired logs at most this often (µs), so that a
/// flood of new buckets cannot make every check walk a whole shard.
const FULL_SWEEP_INTERVAL: u64 = 1_000_000;

/// Sliding-log quotas held in memory. Exact for one process; replicas do not share it.
///
/// At most about `max_entries` buckets are held (concurrent checks of different shards may each
/// add one past it). When the store is full of live buckets, a check of a bucket it does not hold
/// fails with [`StoreError::Full`], which tollgate answers like any store failure; buckets it
/// holds keep being counted exactly.
#[derive(Clone)]
pub struct MemoryStore {
    shards: Arc<[Mutex<Shard>; SHARDS]>,
    clock: Arc<dyn Clock>,
    max_entries: usize,
    entries: Arc<AtomicUsize>,
    plans: Arc<Mutex<PlanAssignments>>,
}

#[derive(Default)]
struct Shard {
    logs: HashMap<String, Log>,
    checks_since_sweep: u32,
    /// When this shard last swept because the store was full (µs on the store's clock).
    last_full_sweep: Option<u64>,
}

/// The admission times of one bucket's last slots, oldest first, in Unix µs; at most
/// `capacity`.
struct Log {
    times: VecDeque<u64>,
    /// The longest retention of any rule that checked it, to tell when the whole log has expired.
    window: u64,
    /// The largest capacity of any rule that checked it.
    capacity: usize,
}

impl Log {
    /// One check of `rule` at `now`, as the Redis script does it (`check.lua`).
    fn check(&mut self, rule: &Rule, now: u64) -> Outcome {
        let cost = rule.cost() as usize;
        // Like the Redis ring, the log only ever grows while it lives: one bucket serves every
        // plan's rule for its route, and a rule of fewer or shorter windows must not drop times
        // another one still counts.
        self.window = self.window.max(rule.retain().as_micros() as u64);
        self.capacity = self.capacity.max(rule.capacity() as usize);
        while self.times.front().is_some_and(|&t| t + self.window <= now) {
            self.times.pop_front();
        }
        let mut allowed = true;
        let mut room_at = [now; MAX_WINDOWS];
        for (i, limit) in rule.limits().iter().enumerate() {
            let window = limit.window_micros();
            if let Some(blocking) = self.recent(limit.requests.get() as usize - cost)
                && blocking + window > now
            {
                allowed = false;
                room_at[i] = blocking + window;
            }
        }
        let counted = allowed || rule.mode() == Mode::Shadow;
        if counted {
            self.count(cost, now);
        }
        let windows = rule
            .limits()
            .iter()
            .zip(room_at)
            .map(|(limit, room_at)| {
                let requests = limit.requests.get() as usize;
                let window = limit.window_micros();
                let used = self.used(window, now);
                WindowOutcome {
                    remaining: requests.saturating_sub(used) as u32,
                    reset_micros: if counted {
                        self.next_free(requests, window, used, now)
                    } else {
                        room_at
                    },
                }
            })
            .collect();
        Outcome {
            allowed,
            now_micros: now,
            windows,
        }
    }

    /// Counts `cost` admissions at `now`, never before the newest time, so the log stays in order
    /// if the clock steps back.
    fn count(&mut self, cost: usize, now: u64) {
        let at = self.times.back().map_or(now, |&newest| newest.max(now));
        for _ in 0..cost {
            if self.times.len() == self.capacity {
                self.times.pop_front();
            }
            self.times.push_back(at);
        }
    }

    /// The `k`-th most recent time (0: the newest), if the log holds that many.
    fn recent(&self, k: usize) -> Option<u64> {
        let index = self.times.len().checked_sub(k + 1)?;
        Some(self.times[index])
    }

    /// How many times lie in the trailing `window` at `now`.
    fn used(&self, window: u64, now: u64) -> usize {
        self.times.len() - self.times.partition_point(|&t| t + window <= now)
    }

    /// When a window of `requests` with `used` times in it frees one more slot: its oldest
    /// counted time leaves it (after a lowered limit, the one whose departure brings the count
    /// below the limit); `now` when nothing is counted.
    fn next_free(&self, requests: usize, window: u64, used: usize, now: u64) -> u64 {
        if used == 0 {
            return now;
        }
        self.recent(used.min(requests) - 1)
            .map_or(now, |t| t + window)
    }
}

impl MemoryStore {
    /// A store on the system clock holding at most about `max_entries` buckets.
    pub fn new(max_entries: usize) -> Self {
        Self::with_clock(Arc::new(SystemClock), max_entries)
    }

    /// A store on the given clock.
    pub fn with_clock(clock: Arc<dyn Clock>, max_entries: usize) -> Self {
        Self {
            shards: Arc::new(std::array::from_fn(|_| Mutex::default())),
            clock,
            max_entries,
            entries: Arc::new(AtomicUsize::new(0)),
            plans: Arc::default(),
        }
    }

    /// Buckets currently held, expired or not; for tests of the memory bound.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).logs.len())
            .sum()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check_now(&self, bucket: BucketRef<'_>, rule: &Rule) -> Result<Outcome, StoreError> {
        let now = self.clock.now_micros();
        let name = log_name(bucket);
        let mut shard = self.shard(&name);
        self.forget(shard.sweep_if_due(now));
        if !shard.logs.contains_key(&name) {
            self.make_room(&mut shard, now)?;
        }
        let log = shard.logs.entry(name).or_insert_with(|| Log {
            times: VecDeque::new(),
            window: rule.retain().as_micros() as u64,
            capacity: rule.capacity() as usize,
        });
        Ok(log.check(rule, now))
    }

    /// Counts one more bucket, after sweeping `shard` when the store is full; `Full` when even
    /// then there is no room.
    fn make_room(&self, shard: &mut Shard, now: u64) -> Result<(), StoreError> {
        if self.entries.load(Ordering::Relaxed) >= self.max_entries {
            let swept = shard.sweep_when_full(now);
            self.forget(swept);
            if swept == 0 {
                return Err(StoreError::Full(self.max_entries));
            }
        }
        self.entries.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The bucket as it stands; expired times are skipped, not removed, so nothing changes.
    fn peek_now(&self, bucket: BucketRef<'_>, rule: &Rule) -> Usage {
        let now = self.clock.now_micros();
        let name = log_name(bucket);
        let shard = self.shard(&name);
        let empty = Log {
            times: VecDeque::new(),
            window: 0,
            capacity: 0,
        };
        let log = shard.logs.get(&name).unwrap_or(&empty);
        let windows = rule
            .limits()
            .iter()
            .map(|limit| {
                let requests = limit.requests.get() as usize;
                let window = limit.window_micros();
                let used = log.used(window, now);
                WindowUsage {
                    used: used as u32,
                    remaining: requests.saturating_sub(used) as u32,
                    reset_micros: log.next_free(requests, window, used, now),
                }
            })
            .collect();
        Usage {
            now_micros: now,
            windows,
        }
    }

    /// Drops the bucket's log; returns how many of its times lay in the rule's retention.
    fn reset_now(&self, bucket: BucketRef<'_>, rule: &Rule) -> u32 {
        let now = self.clock.now_micros();
        let name = log_name(bucket);
        let mut shard = self.shard(&name);
        let Some(log) = shard.logs.remove(&name) else {
            return 0;
        };
        self.forget(1);
        log.used(rule.retain().as_micros() as u64, now) as u32
    }

    /// The shard holding `name`. A std Mutex: the critical section is short and never awaits. A
    /// poisoned lock only means another check panicked mid-update; the log is still a valid list
    /// of times.
    fn shard(&self, name: &str) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[shard_of(name)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Accounts for `swept` logs dropped by a sweep.
    fn forget(&self, swept: usize) {
        if swept > 0 {
            self.entries.fetch_sub(swept, Ordering::Relaxed);
        }
    }
}

/// The map key of a bucket's log.
fn log_name(bucket: BucketRef<'_>) -> String {
    let mut name = String::with_capacity(bucket.key.as_str().len() + 1 + bucket.name.len());
    name.push_str(bucket.key.as_str());
    name.push('|');
    name.push_str(bucket.name);
    name
}

fn shard_of(name: &str) -> usize {
    let mut hasher = DefaultHasher::new();
    name.hash(&mut hasher);
    hasher.finish() as usize % SHARDS
}

impl Shard {
    /// Every [`SWEEP_EVERY`] checks, drops the logs whose newest request has left its window.
    /// Returns how many were dropped.
    fn sweep_if_due(&mut self, now: u64) -> usize {
        self.checks_since_sweep += 1;
        if self.checks_since_sweep < SWEEP_EVERY {
            return 0;
        }
        self.checks_since_sweep = 0;
        self.sweep(now)
    }

    /// Sweeps a full store's shard, at most once per [`FULL_SWEEP_INTERVAL`].
    fn sweep_when_full(&mut self, now: u64) -> usize {
        if self
            .last_full_sweep
            .is_some_and(|last| now < last + FULL_SWEEP_INTERVAL)
        {
            return 0;
        }
        self.last_full_sweep = Some(now);
        self.sweep(now)
    }

    fn sweep(&mut self, now: u64) -> usize {
        let before = self.logs.len();
        self.logs
            .retain(|_, log| log.times.back().is_some_and(|&t| t + log.window > now));
        before - self.logs.len()
    }
}

impl QuotaStore for MemoryStore {
    async fn check(&self, bucket: BucketRef<'_>, rule: &Rule) -> Result<Outcome, StoreError> {
        self.check_now(bucket, rule)
    }

    async fn peek(&self, bucket: BucketRef<'_>, rule: &Rule) -> Result<Usage, StoreError> {
        Ok(self.peek_now(bucket, rule))
    }

    async fn read_quotas(
        &self,
        own: BucketRef<'_>,
        own_rule: &Rule,
        buckets: &[(&str, &Rule)],
    ) -> Result<QuotaRead, StoreError> {
        let admitted = self.check_now(own, own_rule)?;
        let buckets = if admitted.allowed {
            buckets
                .iter()
                .map(|&(name, rule)| self.peek_now(BucketRef { key: own.key, name }, rule))
                .collect()
        } else {
            Vec::new()
        };
        Ok(QuotaRead { admitted, buckets })
    }

    async fn reset(&self, bucket: BucketRef<'_>, rule: &Rule) -> Result<u32, StoreError> {
        Ok(self.reset_now(bucket, rule))
    }

    async fn set_plan(&self, key: &KeyDigest, plan: Option<&str>) -> Result<(), StoreError> {
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        match plan {
            Some(plan) => plans.plans.insert(*key, plan.into()),
            None => plans.plans.remove(key),
        };
        let count = plans
            .version
            .as_deref()
            .map_or(0, |v| v.parse().unwrap_or(0))
            + 1u64;
        plans.version = Some(count.to_string());
        Ok(())
    }

    /// The memory store never loses its assignments while the process runs; written only when
    /// none was ever set, like Redis's hash without a mark.
    async fn restore_plans(
        &self,
        restored: &HashMap<KeyDigest, Arc<str>>,
    ) -> Result<bool, StoreError> {
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if plans.version.is_some() {
            return Ok(false);
        }
        plans.plans.clone_from(restored);
        plans.version = Some("1".into());
        Ok(true)
    }

    async fn get_plan(&self, key: &KeyDigest) -> Result<Option<String>, StoreError> {
        let plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        Ok(plans.plans.get(key).map(|plan| plan.to_string()))
    }

    async fn plans_since(
        &self,
        known: Option<&str>,
    ) -> Result<Option<PlanAssignments>, StoreError> {
        let plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        Ok((plans.version.as_deref() != known).then(|| plans.clone()))
    }
}

#[cfg(test)]
mod tests;
