//! Unit tests of `check/deny_cache.rs`.

use super::*;
use crate::policy::limit::Limit;
use crate::store::{Outcome, WindowOutcome};

fn limit(n: u32) -> Rule {
    Rule::single(Limit::per_minute(n))
}

/// The 429 the cache answers, if it answers one.
fn answered(cache: &DenyCache, bucket: BucketRef<'_>, rule: Rule, now: Instant) -> Option<Quota> {
    match cache.lookup(bucket, &rule, now) {
        Lookup::Deny(quota) => Some(quota),
        Lookup::Recheck | Lookup::Miss => None,
    }
}

/// The 429 of a store that answered with `wait_micros` until the bucket has room.
fn denied(wait_micros: u64) -> Quota {
    let outcome = Outcome {
        allowed: false,
        now_micros: 1_000_000_000,
        windows: vec![WindowOutcome {
            remaining: 0,
            reset_micros: 1_000_000_000 + wait_micros,
        }],
    };
    Quota::new(&limit(5), &outcome, false)
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
    cache.insert(bucket, &limit(5), &denied(250_000), cache.asking(asked));

    let hit = answered(&cache, bucket, limit(5), asked + Duration::from_millis(100)).unwrap();
    assert_eq!(hit.remaining, 0);
    assert_eq!(hit.reset_millis(), 1_000_250);
    assert_eq!(hit.retry_after_secs(), 1);
    assert!(
        answered(
            &cache,
            bucket,
            limit(5),
            asked + Duration::from_micros(249_999)
        )
        .is_some()
    );
    assert!(
        answered(
            &cache,
            bucket,
            limit(5),
            asked + Duration::from_micros(250_000)
        )
        .is_none()
    );
    assert!(cache.is_empty(), "expired entries are dropped on lookup");
}

#[test]
fn a_reload_drops_the_buckets_whose_limit_changed() {
    let cache = DenyCache::new(100);
    let key = KeyDigest::of("k");
    let asked = Instant::now();
    for name in ["kept", "changed", "gone"] {
        let bucket = BucketRef { key: &key, name };
        cache.insert(bucket, &limit(5), &denied(10_000_000), cache.asking(asked));
    }
    cache.retain(|name, old| match name {
        "kept" => *old == limit(5),
        "changed" => *old == limit(50),
        _ => false,
    });
    assert_eq!(cache.len(), 1);
    let kept = BucketRef {
        key: &key,
        name: "kept",
    };
    assert!(answered(&cache, kept, limit(5), asked).is_some());
}

#[test]
fn a_long_wait_is_trusted_for_half_a_second_only() {
    let cache = DenyCache::new(100);
    let key = KeyDigest::of("k");
    let bucket = BucketRef {
        key: &key,
        name: "GET /x",
    };
    let asked = Instant::now();
    cache.insert(bucket, &limit(5), &denied(30_000_000), cache.asking(asked));
    let hit = answered(&cache, bucket, limit(5), asked + Duration::from_millis(400)).unwrap();
    assert_eq!(
        hit.reset_millis(),
        1_030_000,
        "the store's reset, not the trust"
    );
    assert_eq!(
        hit.retry_after_secs(),
        30,
        "counted down to the store's reset"
    );
    assert!(
        answered(
            &cache,
            bucket,
            limit(5),
            asked + TRUST - Duration::from_micros(1)
        )
        .is_some()
    );
    assert_eq!(
        cache.lookup(bucket, &limit(5), asked + TRUST),
        Lookup::Recheck,
        "asks the store again, which knows of a reset"
    );
    let stale = cache
        .stale_denial(bucket, &limit(5), asked + Duration::from_secs(29))
        .expect("still a 429 when the store cannot answer");
    assert_eq!(
        (stale.reset_millis(), stale.retry_after_secs()),
        (1_030_000, 1)
    );
    assert!(
        cache
            .stale_denial(bucket, &limit(5), asked + Duration::from_secs(30))
            .is_none(),
        "never past the store's reset"
    );
    assert_eq!(
        cache.lookup(bucket, &limit(5), asked + Duration::from_secs(30)),
        Lookup::Miss
    );
    assert!(cache.is_empty());
}

#[test]
fn one_check_at_a_time_asks_the_store_again() {
    let cache = DenyCache::new(100);
    let key = KeyDigest::of("k");
    let bucket = BucketRef {
        key: &key,
        name: "GET /x",
    };
    let asked = Instant::now();
    cache.insert(bucket, &limit(5), &denied(30_000_000), cache.asking(asked));
    let expired = asked + TRUST;
    assert_eq!(cache.lookup(bucket, &limit(5), expired), Lookup::Recheck);
    // The checks in flight meanwhile are answered from memory...
    for ms in [0, 1, 99] {
        let at = expired + Duration::from_millis(ms);
        assert!(
            matches!(cache.lookup(bucket, &limit(5), at), Lookup::Deny(_)),
            "{ms} ms"
        );
    }
    // ...until the recheck's answer comes, or it never does.
    assert_eq!(
        cache.lookup(bucket, &limit(5), expired + RECHECK_GRACE),
        Lookup::Recheck
    );
}

#[test]
fn forget_drops_only_its_bucket() {
    let cache = DenyCache::new(100);
    let (a, b) = (KeyDigest::of("a"), KeyDigest::of("b"));
    let asked = Instant::now();
    for key in [&a, &b] {
        cache.insert(
            BucketRef { key, name: "r" },
            &limit(5),
            &denied(10_000_000),
            cache.asking(asked),
        );
    }
    cache.forget(BucketRef { key: &a, name: "r" });
    cache.forget(BucketRef { key: &b, name: "s" });
    assert!(answered(&cache, BucketRef { key: &a, name: "r" }, limit(5), asked).is_none());
    assert!(answered(&cache, BucketRef { key: &b, name: "r" }, limit(5), asked).is_some());
}

#[test]
fn another_bucket_key_or_limit_is_not_served() {
    let cache = DenyCache::new(100);
    let (a, b) = (KeyDigest::of("a"), KeyDigest::of("b"));
    let asked = Instant::now();
    cache.insert(
        BucketRef { key: &a, name: "r" },
        &limit(5),
        &denied(10_000_000),
        cache.asking(asked),
    );
    assert!(answered(&cache, BucketRef { key: &b, name: "r" }, limit(5), asked).is_none());
    assert!(answered(&cache, BucketRef { key: &a, name: "s" }, limit(5), asked).is_none());
    assert!(
        answered(&cache, BucketRef { key: &a, name: "r" }, limit(6), asked).is_none(),
        "limit changed"
    );
    assert!(
        answered(&cache, BucketRef { key: &a, name: "r" }, limit(5), asked).is_none(),
        "entry dropped"
    );
}

#[test]
fn a_denial_asked_before_a_reset_is_not_cached_after_it() {
    let cache = DenyCache::new(100);
    let key = KeyDigest::of("k");
    let bucket = BucketRef {
        key: &key,
        name: "GET /x",
    };
    let now = Instant::now();
    // A check asks the store; the reset is served while its answer is on the way.
    let in_flight = cache.asking(now);
    cache.forget(bucket);
    cache.insert(bucket, &limit(5), &denied(30_000_000), in_flight);
    assert_eq!(cache.lookup(bucket, &limit(5), now), Lookup::Miss);
    assert!(cache.is_empty());
    // A check that asks after the reset is cached as usual.
    cache.insert(bucket, &limit(5), &denied(30_000_000), cache.asking(now));
    assert!(answered(&cache, bucket, limit(5), now).is_some());
    // Inserted before the reset's forget: the reset drops it.
    let other = KeyDigest::of("other");
    let other = BucketRef {
        key: &other,
        name: "GET /x",
    };
    cache.insert(other, &limit(5), &denied(30_000_000), cache.asking(now));
    cache.forget(other);
    assert!(answered(&cache, other, limit(5), now).is_none());
}

#[test]
fn a_full_shard_evicts_one_entry_per_insert() {
    // One entry per shard: every insert of a new bucket lands in a full shard.
    let cache = DenyCache::new(SHARDS);
    let asked = Instant::now();
    let keys: Vec<KeyDigest> = (0..1000).map(|i| KeyDigest::of(&i.to_string())).collect();
    for key in &keys {
        let bucket = BucketRef { key, name: "r" };
        cache.insert(bucket, &limit(1), &denied(60_000_000), cache.asking(asked));
        assert!(
            answered(&cache, bucket, limit(1), asked).is_some(),
            "the newest denial is cached, the cache full of live ones"
        );
        assert!(cache.len() <= SHARDS, "{}", cache.len());
    }
    // The one that frees soonest goes first.
    let mut shard = Shard::default();
    for (i, secs) in [30, 10, 20].into_iter().enumerate() {
        let key = KeyDigest::of(&i.to_string());
        shard.entries.insert(
            i as u64,
            Entry {
                key,
                name: "r".into(),
                rule: limit(1),
                until: asked + Duration::from_secs(secs),
                trusted_until: asked,
                asked_at: asked,
                quota: denied(1),
            },
        );
    }
    shard.evict(asked);
    let mut left: Vec<u64> = shard.entries.keys().copied().collect();
    left.sort_unstable();
    assert_eq!(left, [0, 2]);
}

#[test]
fn stays_bounded() {
    let cache = DenyCache::new(64);
    let asked = Instant::now();
    let keys: Vec<KeyDigest> = (0..1000).map(|i| KeyDigest::of(&i.to_string())).collect();
    for key in &keys {
        cache.insert(
            BucketRef { key, name: "r" },
            &limit(1),
            &denied(60_000_000),
            cache.asking(asked),
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
        &limit(1),
        &denied(1_000_000),
        cache.asking(later),
    );
    assert!(
        answered(
            &cache,
            BucketRef {
                key: &fresh,
                name: "r"
            },
            limit(1),
            later
        )
        .is_some()
    );
}

#[test]
fn can_be_disabled() {
    let asked = Instant::now();
    let fresh = KeyDigest::of("fresh");
    let off = DenyCache::new(0);
    off.insert(
        BucketRef {
            key: &fresh,
            name: "r",
        },
        &limit(1),
        &denied(1_000_000),
        off.asking(asked),
    );
    assert!(
        answered(
            &off,
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
