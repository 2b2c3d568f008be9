//! The embedded store: the same log of admission times as the Redis script, in this process's
//! memory.

use super::{
    BucketRef, Outcome, PlanAssignments, QuotaStore, StoreError, Usage, WindowOutcome, WindowUsage,
};
use crate::api_key::KeyDigest;
use crate::clock::{Clock, SystemClock};
use crate::limit::{MAX_WINDOWS, Mode, Rule};
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
        let retain = rule.retain().as_micros() as u64;
        let capacity = rule.capacity() as usize;
        let cost = rule.cost() as usize;
        let name = log_name(bucket);
        let mut shard = self.shard(&name);
        self.forget(shard.sweep_if_due(now));
        if !shard.logs.contains_key(&name) {
            if self.entries.load(Ordering::Relaxed) >= self.max_entries {
                let swept = shard.sweep_when_full(now);
                self.forget(swept);
                if swept == 0 {
                    return Err(StoreError::Full(self.max_entries));
                }
            }
            self.entries.fetch_add(1, Ordering::Relaxed);
        }
        let log = shard.logs.entry(name).or_insert_with(|| Log {
            times: VecDeque::new(),
            window: retain,
            capacity,
        });
        // Like the Redis ring, the log only ever grows while it lives: one bucket serves every
        // plan's rule for its route, and a rule of fewer or shorter windows must not drop times
        // another one still counts.
        log.window = log.window.max(retain);
        log.capacity = log.capacity.max(capacity);
        while log.times.front().is_some_and(|&t| t + log.window <= now) {
            log.times.pop_front();
        }
        let mut allowed = true;
        let mut room_at = [now; MAX_WINDOWS];
        for (i, limit) in rule.limits().iter().enumerate() {
            let window = limit.window_micros();
            if let Some(blocking) = log.recent(limit.requests.get() as usize - cost)
                && blocking + window > now
            {
                allowed = false;
                room_at[i] = blocking + window;
            }
        }
        let counted = allowed || rule.mode() == Mode::Shadow;
        if counted {
            // Never before the newest time, so the log stays in order if the clock steps back.
            let at = log.times.back().map_or(now, |&newest| newest.max(now));
            for _ in 0..cost {
                if log.times.len() == log.capacity {
                    log.times.pop_front();
                }
                log.times.push_back(at);
            }
        }
        let windows = rule
            .limits()
            .iter()
            .zip(room_at)
            .map(|(limit, room_at)| {
                let requests = limit.requests.get() as usize;
                let window = limit.window_micros();
                let used = log.used(window, now);
                WindowOutcome {
                    remaining: requests.saturating_sub(used) as u32,
                    reset_micros: if counted {
                        log.next_free(requests, window, used, now)
                    } else {
                        room_at
                    },
                }
            })
            .collect();
        Ok(Outcome {
            allowed,
            now_micros: now,
            windows,
        })
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
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::limit::Limit;
    use proptest::prelude::*;
    use std::num::NonZeroU32;

    mod sliding_model {
        include!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/common/sliding_model.rs"
        ));
    }
    use sliding_model::{ModelWindow, SlidingModel};
    use std::time::Duration;

    fn limit(requests: u32, window_ms: u64) -> Rule {
        Rule::single(Limit {
            requests: NonZeroU32::new(requests).unwrap(),
            window: Duration::from_millis(window_ms),
        })
    }

    fn store() -> (MemoryStore, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000_000));
        (MemoryStore::with_clock(clock.clone(), 1_000_000), clock)
    }

    #[test]
    fn a_burst_waits_for_the_oldest_request_to_leave() {
        let (store, clock) = store();
        let key = KeyDigest::of("k");
        let bucket = BucketRef {
            key: &key,
            name: "r",
        };
        let l = limit(3, 1000);
        let start = clock.now_micros();
        for remaining in [2, 1, 0] {
            let o = store.check_now(bucket, &l).unwrap();
            assert!(o.allowed);
            assert_eq!(o.windows[0].remaining, remaining);
            assert_eq!(o.windows[0].reset_micros, start + 1_000_000);
            clock.advance(100_000);
        }
        let denied = store.check_now(bucket, &l).unwrap();
        assert!(!denied.allowed);
        assert_eq!(denied.windows[0].reset_micros, start + 1_000_000);
        clock.advance(1_000_000 - 300_001);
        assert!(
            !store.check_now(bucket, &l).unwrap().allowed,
            "1 µs before the reset"
        );
        clock.advance(1);
        let after = store.check_now(bucket, &l).unwrap();
        assert!(after.allowed, "at the reset");
        assert_eq!(after.windows[0].reset_micros, start + 1_100_000);
    }

    #[test]
    fn a_lowered_limit_resets_when_the_count_falls_below_it() {
        let (store, clock) = store();
        let key = KeyDigest::of("k");
        let bucket = BucketRef {
            key: &key,
            name: "r",
        };
        let start = clock.now_micros();
        for _ in 0..4 {
            store.check_now(bucket, &limit(10, 1000)).unwrap();
            clock.advance(10);
        }
        let denied = store.check_now(bucket, &limit(2, 1000)).unwrap();
        assert!(!denied.allowed);
        // Three of the four must leave before the count is below 2: the third, admitted at +20 µs.
        assert_eq!(denied.windows[0].reset_micros, start + 20 + 1_000_000);
    }

    #[test]
    fn expired_logs_are_dropped() {
        let (store, clock) = store();
        for i in 0..5000 {
            let key = KeyDigest::of(&format!("key-{i}"));
            store
                .check_now(
                    BucketRef {
                        key: &key,
                        name: "r",
                    },
                    &limit(1, 10),
                )
                .unwrap();
        }
        assert_eq!(store.len(), 5000);
        clock.advance(10_000);
        // One live bucket per shard, each checked often enough to make its shard sweep.
        let mut late: Vec<Option<KeyDigest>> = vec![None; SHARDS];
        for i in 0.. {
            let key = KeyDigest::of(&format!("late-{i}"));
            let slot = &mut late[shard_of(&format!("{}|r", key.as_str()))];
            if slot.is_none() {
                *slot = Some(key);
                if late.iter().all(Option::is_some) {
                    break;
                }
            }
        }
        for key in late.iter().flatten() {
            for _ in 0..SWEEP_EVERY {
                store
                    .check_now(BucketRef { key, name: "r" }, &limit(1, 10))
                    .unwrap();
            }
        }
        assert_eq!(store.len(), SHARDS);
    }

    #[test]
    fn a_million_keys_cannot_grow_it_past_its_cap() {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000_000));
        let store = MemoryStore::with_clock(clock.clone(), 10_000);
        let minute = limit(5, 60_000);
        let held = KeyDigest::of("held");
        let held = BucketRef {
            key: &held,
            name: "r",
        };
        assert!(store.check_now(held, &minute).unwrap().allowed);
        let mut refused = 0;
        for i in 0..1_000_000 {
            let key = KeyDigest::of(&format!("flood-{i}"));
            let bucket = BucketRef {
                key: &key,
                name: "r",
            };
            match store.check_now(bucket, &minute) {
                Ok(outcome) => assert!(outcome.allowed),
                Err(StoreError::Full(10_000)) => refused += 1,
                Err(e) => panic!("{e}"),
            }
            if i % 100_000 == 0 {
                assert!(store.len() <= 10_000 + SHARDS, "{} at {i}", store.len());
            }
        }
        assert!(store.len() <= 10_000 + SHARDS, "{}", store.len());
        assert!(refused >= 1_000_000 - 10_000, "{refused}");
        // A bucket it holds is still counted exactly.
        for remaining in [3, 2, 1, 0] {
            assert_eq!(
                store.check_now(held, &minute).unwrap().windows[0].remaining,
                remaining
            );
        }
        assert!(!store.check_now(held, &minute).unwrap().allowed);
        // Once the flood's window has passed, new buckets are taken again.
        clock.advance(60_000_000);
        let late = KeyDigest::of("late");
        let late = BucketRef {
            key: &late,
            name: "r",
        };
        assert!(store.check_now(late, &minute).unwrap().allowed);
    }

    #[test]
    fn reset_forgets_the_bucket_and_only_it() {
        let (store, _clock) = store();
        let (a, b) = (KeyDigest::of("a"), KeyDigest::of("b"));
        let l = limit(2, 60_000);
        for key in [&a, &b] {
            for _ in 0..2 {
                store.check_now(BucketRef { key, name: "r" }, &l).unwrap();
            }
        }
        assert_eq!(store.reset_now(BucketRef { key: &a, name: "r" }, &l), 2);
        assert_eq!(store.reset_now(BucketRef { key: &a, name: "r" }, &l), 0);
        assert_eq!(store.len(), 1);
        assert_eq!(
            store.peek_now(BucketRef { key: &a, name: "r" }, &l).windows[0].used,
            0
        );
        assert_eq!(
            store.peek_now(BucketRef { key: &b, name: "r" }, &l).windows[0].used,
            2
        );
        let again = store
            .check_now(BucketRef { key: &a, name: "r" }, &l)
            .unwrap();
        assert!(again.allowed);
        assert_eq!(again.windows[0].remaining, 1, "a full window");
    }

    proptest! {
        /// A peek changes nothing and tells what the next check will say: admitted with one fewer
        /// remaining, or denied until the same reset; limits may change between checks.
        #[test]
        fn a_peek_predicts_the_next_check(
            steps in prop::collection::vec((0u64..20_000, 1u32..6), 1..100),
        ) {
            let (store, clock) = store();
            let key = KeyDigest::of("k");
            let bucket = BucketRef { key: &key, name: "r" };
            for (gap, n) in steps {
                clock.advance(gap);
                let l = limit(n, 30);
                let usage = store.peek_now(bucket, &l);
                prop_assert_eq!(&store.peek_now(bucket, &l), &usage);
                let (peeked, checked) = (usage.windows[0], store.check_now(bucket, &l).unwrap());
                prop_assert_eq!(peeked.used + peeked.remaining >= n, true);
                prop_assert_eq!(checked.allowed, peeked.remaining > 0);
                let checked = checked.windows[0];
                if peeked.remaining > 0 {
                    prop_assert_eq!(checked.remaining, peeked.remaining - 1);
                    if peeked.used > 0 {
                        prop_assert_eq!(checked.reset_micros, peeked.reset_micros);
                    }
                } else {
                    prop_assert_eq!(checked.reset_micros, peeked.reset_micros);
                }
            }
        }

        /// Against the reference model, for any windows, cost and mode: admitted exactly when
        /// every window has room for the cost, counted in all of them, with each window's
        /// remaining and reset; in enforce mode no trailing window ever holds more than its limit.
        #[test]
        fn matches_the_reference_model(
            windows in prop::collection::btree_map(1u64..50, 1u32..8, 1..4),
            cost_seed in 0u32..8,
            shadow in any::<bool>(),
            gaps_us in prop::collection::vec(0u64..20_000, 1..150),
        ) {
            let (store, clock) = store();
            let key = KeyDigest::of("k");
            let bucket = BucketRef { key: &key, name: "r" };
            let model_windows: Vec<ModelWindow> = windows
                .iter()
                .map(|(&ms, &requests)| ModelWindow { requests, window_micros: ms * 1000 })
                .collect();
            let cost = 1 + cost_seed % model_windows.iter().map(|w| w.requests).min().unwrap();
            let limits = windows
                .iter()
                .map(|(&ms, &n)| Limit {
                    requests: NonZeroU32::new(n).unwrap(),
                    window: Duration::from_millis(ms),
                })
                .collect();
            let mode = if shadow { Mode::Shadow } else { Mode::Enforce };
            let rule = Rule::new(limits, cost, mode).unwrap();
            let mut model = SlidingModel::default();
            for gap in gaps_us {
                clock.advance(gap);
                let expected = model.check(&model_windows, cost, shadow, clock.now_micros());
                let outcome = store.check_now(bucket, &rule).unwrap();
                let got: Vec<(u32, u64)> = outcome
                    .windows
                    .iter()
                    .map(|w| (w.remaining, w.reset_micros))
                    .collect();
                prop_assert_eq!(outcome.allowed, expected.allowed);
                prop_assert_eq!(got, expected.windows);
            }
            if !shadow {
                for w in &model_windows {
                    prop_assert!(model.most_in_any(w.window_micros) <= w.requests as usize);
                }
            }
        }
    }
}
