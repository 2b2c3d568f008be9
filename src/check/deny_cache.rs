//! The local over-limit cache: once the store says a bucket is full until T, this replica answers
//! further checks of it with 429 until T without asking the store.
//!
//! This is exact for a sliding log: admitted requests only leave the window as time passes, and
//! other replicas can only add to it, so nothing frees a slot before T. The expiry is kept on this
//! process's monotonic clock, measured from the moment *before* the store was asked, so it lands at
//! or before the store's T whatever the skew between the clocks: the cache never denies a request
//! that the store would allow.

use crate::api_key::KeyDigest;
use crate::check::verdict::Quota;
use crate::limit::Limit;
use crate::store::{BucketRef, Outcome};
use std::collections::hash_map::{DefaultHasher, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Independent locks, so concurrent lookups rarely wait for each other.
const SHARDS: usize = 16;

/// Buckets known to be full, with the moment each frees a slot.
pub struct DenyCache {
    shards: [Mutex<HashMap<u64, Entry>>; SHARDS],
    per_shard: usize,
}

struct Entry {
    key: KeyDigest,
    name: Box<str>,
    /// A changed limit makes the entry useless: a larger limit may admit at once.
    limit: Limit,
    /// When one more request will be admitted, on this process's monotonic clock.
    until: Instant,
    /// The same moment as the store reported it, in Unix ms, for `X-RateLimit-Reset`.
    reset_millis: u64,
}

impl DenyCache {
    /// A cache of at most `max_entries` buckets; 0 disables it.
    pub fn new(max_entries: usize) -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::default()),
            per_shard: max_entries.div_ceil(SHARDS),
        }
    }

    /// The 429 for a bucket known to be full at `now`, if any.
    pub fn lookup(&self, bucket: BucketRef<'_>, limit: Limit, now: Instant) -> Option<Quota> {
        if self.per_shard == 0 {
            return None;
        }
        let hash = hash(bucket);
        let mut shard = self.shard(hash);
        let entry = shard.get(&hash)?;
        if entry.key != *bucket.key || &*entry.name != bucket.name {
            return None; // A hash collision: another bucket.
        }
        if entry.until <= now || entry.limit != limit {
            shard.remove(&hash);
            return None;
        }
        let quota = Quota {
            limit,
            remaining: 0,
            reset_millis: entry.reset_millis,
            retry_after_secs: whole_seconds_until(entry.until, now),
        };
        Some(quota)
    }

    /// Remembers a denial. `asked_at` is the instant taken just before the store was asked.
    pub fn insert(
        &self,
        bucket: BucketRef<'_>,
        limit: Limit,
        outcome: &Outcome,
        asked_at: Instant,
    ) {
        if self.per_shard == 0 || outcome.allowed {
            return;
        }
        let wait = Duration::from_micros(outcome.reset_micros.saturating_sub(outcome.now_micros));
        let until = asked_at + wait;
        let hash = hash(bucket);
        let mut shard = self.shard(hash);
        if shard.len() >= self.per_shard && !shard.contains_key(&hash) {
            shard.retain(|_, entry| entry.until > asked_at);
            if shard.len() >= self.per_shard {
                // Full of live entries: skip. The store still answers correctly, only slower.
                return;
            }
        }
        tracing::debug!(key = %bucket.key, bucket = bucket.name, ?wait, "bucket full; answering from memory until it frees a slot");
        shard.insert(
            hash,
            Entry {
                key: *bucket.key,
                name: bucket.name.into(),
                limit,
                until,
                reset_millis: outcome.reset_micros.div_ceil(1000),
            },
        );
    }

    /// Buckets currently held (each shard locked in turn: for a scrape, not for the check path).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        lock(&self.shards[hash as usize % SHARDS])
    }
}

/// A std Mutex: held for a map operation, never across an await. Poisoning only means another
/// check panicked mid-operation; the map itself is still consistent.
fn lock(shard: &Mutex<HashMap<u64, Entry>>) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
    shard.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hashes without allocating; collisions are caught by comparing key and name.
fn hash(bucket: BucketRef<'_>) -> u64 {
    let mut hasher = DefaultHasher::new();
    bucket.key.hash(&mut hasher);
    bucket.name.hash(&mut hasher);
    hasher.finish()
}

fn whole_seconds_until(until: Instant, now: Instant) -> u64 {
    let wait = until.saturating_duration_since(now);
    (wait.as_micros() as u64).div_ceil(1_000_000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(n: u32) -> Limit {
        Limit::per_minute(n)
    }

    fn denied(wait_micros: u64) -> Outcome {
        Outcome {
            allowed: false,
            remaining: 0,
            reset_micros: 1_000_000_000 + wait_micros,
            now_micros: 1_000_000_000,
        }
    }

    #[test]
    fn answers_until_the_store_would_admit_and_not_a_moment_longer() {
        let cache = DenyCache::new(100);
        let key = KeyDigest::of("k");
        let bucket = BucketRef {
            key: &key,
            name: "GET /x",
        };
        let asked = Instant::now();
        cache.insert(bucket, limit(5), &denied(2_500_000), asked);

        let hit = cache
            .lookup(bucket, limit(5), asked + Duration::from_millis(500))
            .unwrap();
        assert_eq!(hit.remaining, 0);
        assert_eq!(hit.reset_millis, 1_002_500);
        assert_eq!(hit.retry_after_secs, 2);
        assert!(
            cache
                .lookup(bucket, limit(5), asked + Duration::from_micros(2_499_999))
                .is_some()
        );
        assert!(
            cache
                .lookup(bucket, limit(5), asked + Duration::from_micros(2_500_000))
                .is_none()
        );
        assert!(cache.is_empty(), "expired entries are dropped on lookup");
    }

    #[test]
    fn another_bucket_key_or_limit_is_not_served() {
        let cache = DenyCache::new(100);
        let (a, b) = (KeyDigest::of("a"), KeyDigest::of("b"));
        let asked = Instant::now();
        cache.insert(
            BucketRef { key: &a, name: "r" },
            limit(5),
            &denied(10_000_000),
            asked,
        );
        assert!(
            cache
                .lookup(BucketRef { key: &b, name: "r" }, limit(5), asked)
                .is_none()
        );
        assert!(
            cache
                .lookup(BucketRef { key: &a, name: "s" }, limit(5), asked)
                .is_none()
        );
        assert!(
            cache
                .lookup(BucketRef { key: &a, name: "r" }, limit(6), asked)
                .is_none(),
            "limit changed"
        );
        assert!(
            cache
                .lookup(BucketRef { key: &a, name: "r" }, limit(5), asked)
                .is_none(),
            "entry dropped"
        );
    }

    #[test]
    fn stays_bounded_and_can_be_disabled() {
        let cache = DenyCache::new(64);
        let asked = Instant::now();
        let keys: Vec<KeyDigest> = (0..1000).map(|i| KeyDigest::of(&i.to_string())).collect();
        for key in &keys {
            cache.insert(
                BucketRef { key, name: "r" },
                limit(1),
                &denied(60_000_000),
                asked,
            );
        }
        assert!(cache.len() <= 64, "{}", cache.len());
        // Expired entries make room for new ones.
        let later = asked + Duration::from_secs(61);
        let fresh = KeyDigest::of("fresh");
        cache.insert(
            BucketRef {
                key: &fresh,
                name: "r",
            },
            limit(1),
            &denied(1_000_000),
            later,
        );
        assert!(
            cache
                .lookup(
                    BucketRef {
                        key: &fresh,
                        name: "r"
                    },
                    limit(1),
                    later
                )
                .is_some()
        );

        let off = DenyCache::new(0);
        off.insert(
            BucketRef {
                key: &fresh,
                name: "r",
            },
            limit(1),
            &denied(1_000_000),
            asked,
        );
        assert!(
            off.lookup(
                BucketRef {
                    key: &fresh,
                    name: "r"
                },
                limit(1),
                asked
            )
            .is_none()
        );
    }
}
