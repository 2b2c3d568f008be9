//! Unit tests of `store/memory.rs`.

use super::*;
use crate::clock::ManualClock;
use crate::policy::limit::Limit;
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
