//! The local over-limit cache: once the store says a bucket is full until T, this replica answers
//! further checks of it with 429 until T without asking the store.
//!
//! This is exact for a sliding log: admitted requests only leave the window as time passes, and
//! other replicas can only add to it, so nothing frees a slot before T. The expiry is kept on this
//! process's monotonic clock, measured from the moment *before* the store was asked, so it lands at
//! or before the store's T whatever the skew between the clocks: the cache never denies a request
//! that the store would allow.
//!
//! One thing does free slots early: the admin API's `ResetQuota`, served by one replica while the
//! others may hold the bucket here. So an entry is trusted for at most [`TRUST`] after the store
//! was asked; past that the next check of the bucket asks the store again ([`Lookup::Recheck`])
//! and, still denied, renews the entry. A reset is therefore seen by every replica within
//! [`TRUST`], with no message between replicas that could be lost; the replica that served the
//! reset drops its entry at once ([`DenyCache::forget`]). The price is one store call per
//! hammered bucket per replica per [`TRUST`], instead of none until the reset. An entry past its
//! trust still answers while the store cannot ([`DenyCache::stale_denial`]): a bucket known to be
//! full stays 429 through an outage, as it did before, since no reset can reach a store that is
//! down.
//!
//! The serving replica's reset must also win over a check that was in flight when it was served:
//! such a check may bring back the denial the store gave before the reset. Every check takes an
//! [`Asked`] before it asks the store, which carries the count of resets this cache has seen;
//! [`DenyCache::insert`] refuses a denial asked before the latest reset. One count for the whole
//! cache rather than one per bucket: resets are rare operator actions, so the cost is at most one
//! uncached denial per check in flight at a reset, and no state is kept for buckets the cache
//! does not hold.
//!
//! Each shard holds a bounded number of entries, and inserting into a full shard evicts one in
//! constant time: of the [`EVICTION_SAMPLE`] entries under a rotating hand, the first that has
//! expired, else the one that frees soonest (it has the least left to save the store). Scanning
//! the shard for the best victim would hold its lock for time proportional to its size on every
//! insert under a flood; refusing new denials when full would leave the hot buckets of the moment
//! uncached for up to a window behind older ones. An evicted bucket only costs its next check a
//! store call.

use crate::api_key::KeyDigest;
use crate::check::verdict::Quota;
use crate::policy::limit::Rule;
use crate::store::BucketRef;
use indexmap::IndexMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Independent locks, so concurrent lookups rarely wait for each other.
const SHARDS: usize = 16;

/// The longest an entry is trusted after the store was asked: a quota reset on another replica
/// is seen within it.
pub const TRUST: Duration = Duration::from_millis(500);

/// How long the other checks of a bucket keep its 429 while one asks the store again: longer
/// than a store call takes, so that an answer, allowed or not, lands before it ends.
const RECHECK_GRACE: Duration = Duration::from_millis(100);

/// Entries looked at to pick one to evict from a full shard: a constant, so an insert costs the
/// same however large the shard.
const EVICTION_SAMPLE: usize = 4;

/// Buckets known to be full, with the moment each frees a slot.
pub struct DenyCache {
    shards: [Mutex<Shard>; SHARDS],
    per_shard: usize,
    /// Resets seen ([`DenyCache::forget`]); changed under the lock of the reset bucket's shard.
    resets: AtomicU64,
}

/// The moment a check asked the store: on this process's clock, and in resets seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asked {
    /// Just before the store was asked.
    pub at: Instant,
    /// [`DenyCache`]'s count of resets then.
    resets: u64,
}

/// One shard: entries by bucket hash, in an order that lets an entry be found and removed by
/// position in constant time, and the hand that picks where eviction looks next.
#[derive(Default)]
struct Shard {
    entries: IndexMap<u64, Entry>,
    hand: usize,
}

impl Shard {
    /// Drops one entry: of the [`EVICTION_SAMPLE`] under the hand, the first expired at `now`,
    /// else the one that frees soonest. Constant time.
    fn evict(&mut self, now: Instant) {
        let len = self.entries.len();
        if len == 0 {
            return;
        }
        let mut victim = self.hand % len;
        for step in 0..EVICTION_SAMPLE.min(len) {
            let at = (self.hand + step) % len;
            let until = self.entries[at].until;
            if until <= now {
                victim = at;
                break;
            }
            if until < self.entries[victim].until {
                victim = at;
            }
        }
        self.hand = victim + 1;
        // The last entry moves into the victim's place, under the hand's next look.
        self.entries.swap_remove_index(victim);
    }
}

struct Entry {
    key: KeyDigest,
    name: Box<str>,
    /// A changed rule makes the entry useless: a larger limit may admit at once.
    rule: Rule,
    /// When one more request will be admitted, on this process's monotonic clock; `Retry-After`
    /// counts down to it.
    until: Instant,
    /// When the entry stops being trusted: `until`, or [`TRUST`] after the store was asked when
    /// that comes first.
    trusted_until: Instant,
    /// When the store was asked.
    asked_at: Instant,
    /// The store's answer, whose waits count down from `asked_at`.
    quota: Quota,
}

impl DenyCache {
    /// A cache of at most `max_entries` buckets; 0 disables it.
    pub fn new(max_entries: usize) -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::default()),
            per_shard: max_entries.div_ceil(SHARDS),
            resets: AtomicU64::new(0),
        }
    }

    /// Marks the moment a check asks the store, `now`: to be given back to
    /// [`DenyCache::insert`] with the store's denial.
    pub fn asking(&self, now: Instant) -> Asked {
        Asked {
            at: now,
            resets: self.resets.load(Ordering::Acquire),
        }
    }

    /// The 429 for a bucket known to be full at `now`, or whether the store must be asked.
    pub fn lookup(&self, bucket: BucketRef<'_>, rule: &Rule, now: Instant) -> Lookup {
        if self.per_shard == 0 {
            return Lookup::Miss;
        }
        let hash = hash(bucket);
        let mut shard = self.shard(hash);
        let Some(entry) = shard.entries.get_mut(&hash) else {
            return Lookup::Miss;
        };
        if entry.key != *bucket.key || &*entry.name != bucket.name {
            return Lookup::Miss; // A hash collision: another bucket.
        }
        if entry.until <= now || entry.rule != *rule {
            shard.entries.swap_remove(&hash);
            return Lookup::Miss;
        }
        if entry.trusted_until <= now {
            // This check asks the store again; the concurrent ones keep the 429 until its answer
            // replaces the entry (or for RECHECK_GRACE if it never comes), so a hammered bucket
            // costs one store call per TRUST, not one per caller in flight.
            entry.trusted_until = (now + RECHECK_GRACE).min(entry.until);
            return Lookup::Recheck;
        }
        Lookup::Deny(entry.quota(now))
    }

    /// The 429 of an entry past its trust but not its reset, for a check the store could not
    /// answer: the bucket was full when the store last said, and a store that is down cannot have
    /// been reset since.
    pub fn stale_denial(&self, bucket: BucketRef<'_>, rule: &Rule, now: Instant) -> Option<Quota> {
        let hash = hash(bucket);
        let shard = self.shard(hash);
        let entry = shard.entries.get(&hash)?;
        (entry.key == *bucket.key
            && &*entry.name == bucket.name
            && entry.rule == *rule
            && entry.until > now)
            .then(|| entry.quota(now))
    }

    /// Remembers a denial the store gave to a check that asked at `asked`, unless a reset was
    /// served since (the denial may predate it). Constant time: a full shard evicts one entry.
    pub fn insert(&self, bucket: BucketRef<'_>, rule: &Rule, quota: &Quota, asked: Asked) {
        if self.per_shard == 0 {
            return;
        }
        let wait = Duration::from_micros(quota.wait_micros());
        // A reset absurdly far away (a store that answered garbage) is not remembered.
        let Some(until) = asked.at.checked_add(wait) else {
            return;
        };
        let hash = hash(bucket);
        let mut shard = self.shard(hash);
        // Under the shard's lock, as `forget` changes the count: a reset is either seen here, or
        // served after this insert and drops what it inserted.
        if self.resets.load(Ordering::Acquire) != asked.resets {
            return;
        }
        if shard.entries.len() >= self.per_shard && !shard.entries.contains_key(&hash) {
            shard.evict(asked.at);
        }
        tracing::debug!(key = %bucket.key, bucket = bucket.name, ?wait, "bucket full; answering from memory until it frees a slot");
        shard.entries.insert(
            hash,
            Entry {
                key: *bucket.key,
                name: bucket.name.into(),
                rule: rule.clone(),
                until,
                trusted_until: until.min(asked.at + TRUST),
                asked_at: asked.at,
                quota: quota.clone(),
            },
        );
    }

    /// Keeps only the entries for which `keep(bucket name, rule)` holds; a reload drops those
    /// whose bucket's rule changed.
    pub fn retain(&self, keep: impl Fn(&str, &Rule) -> bool) {
        for shard in &self.shards {
            lock(shard)
                .entries
                .retain(|_, entry| keep(&entry.name, &entry.rule));
        }
    }

    /// Drops the entry of `bucket`, after its quota was reset, and counts the reset: a denial
    /// asked before it is not inserted afterwards.
    pub fn forget(&self, bucket: BucketRef<'_>) {
        let hash = hash(bucket);
        let mut shard = self.shard(hash);
        self.resets.fetch_add(1, Ordering::AcqRel);
        if shard
            .entries
            .get(&hash)
            .is_some_and(|entry| entry.key == *bucket.key && &*entry.name == bucket.name)
        {
            shard.entries.swap_remove(&hash);
        }
    }

    /// Buckets currently held (each shard locked in turn: for a scrape, not for the check path).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).entries.len()).sum()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, Shard> {
        lock(&self.shards[hash as usize % SHARDS])
    }
}

/// What the cache knows about a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Full, as the store said less than [`TRUST`] ago: answer this 429 without asking it.
    Deny(Quota),
    /// Full when the store last said, longer than [`TRUST`] ago: ask it again (a reset may have
    /// emptied the bucket), and drop the entry if it admits.
    Recheck,
    /// Nothing known.
    Miss,
}

impl Entry {
    /// The stored 429 as it stands at `now`: the store's clock moved on by the time since it was
    /// asked, so every wait is that much shorter (the windows are shared, not copied).
    fn quota(&self, now: Instant) -> Quota {
        let elapsed = now.saturating_duration_since(self.asked_at).as_micros() as u64;
        Quota {
            now_micros: self.quota.now_micros + elapsed,
            ..self.quota.clone()
        }
    }
}

/// A std Mutex: held for a map operation, never across an await. Poisoning only means another
/// check panicked mid-operation; the map itself is still consistent.
fn lock(shard: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hashes without allocating; collisions are caught by comparing key and name.
fn hash(bucket: BucketRef<'_>) -> u64 {
    let mut hasher = DefaultHasher::new();
    bucket.key.hash(&mut hasher);
    bucket.name.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests;
