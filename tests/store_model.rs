//! Exactness of the quota stores over random schedules, against the reference model
//! (`tests/common/sliding_model.rs`): for random windows, costs and modes, every check's decision,
//! remaining slots and reset times equal the model's, and in enforce mode no trailing window ever
//! holds more than its limit; and so under several rules in turn over one bucket, as a key that
//! changes plan is checked. The memory store, a real Redis (7.x, 6.2 and Valkey 8) and a real
//! Redis Cluster, each in real time: the model is driven by the clock the store reports, so
//! nothing depends on timing.

mod common;

use common::redis_cluster::RedisCluster;
use common::redis_server::{Flavour, RedisServer};
use common::sliding_model::{ModelWindow, SlidingModel};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;
use tollgate::api_key::KeyDigest;
use tollgate::config::{RedisSettings, Topology};
use tollgate::policy::limit::{Limit, Mode, Rule};
use tollgate::store::{BucketRef, MemoryStore, QuotaStore, RedisStore};

/// One rule as drawn: windows (ms → requests), a cost seed and shadow or not.
type Drawn = (BTreeMap<u64, u32>, u32, bool);

/// A schedule: the rules one bucket is checked under (as a key's plans are), and the checks:
/// which rule, after what gap in ms.
type Schedule = (Vec<Drawn>, Vec<(usize, u64)>);

fn rules(
    requests: std::ops::Range<u32>,
    windows: std::ops::Range<usize>,
    cost_seeds: u32,
) -> impl Strategy<Value = Drawn> {
    (
        prop::collection::btree_map(20u64..200, requests, windows),
        0..cost_seeds,
        any::<bool>(),
    )
}

/// Small buckets over many gaps, under one rule: every window fills and drains.
fn schedules() -> BoxedStrategy<Schedule> {
    (
        prop::collection::vec(rules(1..6, 1..4, 6), 1),
        prop::collection::vec((Just(0), 0u64..40), 1..30),
    )
        .boxed()
}

/// Small buckets checked under two or three rules in turn, as a key that changes plan (or a
/// reload) does: what one rule counted, the others count too.
fn switching_schedules() -> BoxedStrategy<Schedule> {
    prop::collection::vec(rules(1..6, 1..4, 6), 2..4)
        .prop_flat_map(|rules| {
            let count = rules.len();
            (
                Just(rules),
                prop::collection::vec((0..count, 0u64..40), 1..40),
            )
        })
        .boxed()
}

/// Large buckets, hammered with costly requests and now and then left idle past their shorter
/// window (not the longest, so the bucket stays): rings of more slots than the script reads in
/// one read (a block of 127), written round many times, and read right after a write when a window
/// starts empty.
fn large_schedules() -> BoxedStrategy<Schedule> {
    let gap = prop_oneof![40 => 0u64..2, 1 => 30u64..150];
    (
        prop::collection::vec(rules(1000..1500, 2..4, 60), 1),
        prop::collection::vec((Just(0), gap), 150..500),
    )
        .boxed()
}

/// The rule and the model's windows of each drawn rule, over one bucket that serves them all.
fn resolve(drawn: &[Drawn]) -> Vec<(Rule, Vec<ModelWindow>)> {
    let rules: Vec<(Rule, Vec<ModelWindow>)> = drawn
        .iter()
        .map(|(windows, cost_seed, shadow)| {
            let model: Vec<ModelWindow> = windows
                .iter()
                .map(|(&ms, &requests)| ModelWindow {
                    requests,
                    window_micros: ms * 1000,
                })
                .collect();
            let cost = 1 + cost_seed % model.iter().map(|w| w.requests).min().unwrap();
            let limits = windows
                .iter()
                .map(|(&ms, &n)| Limit {
                    requests: NonZeroU32::new(n).unwrap(),
                    window: Duration::from_millis(ms),
                })
                .collect();
            let mode = if *shadow { Mode::Shadow } else { Mode::Enforce };
            (Rule::new(limits, cost, mode).unwrap(), model)
        })
        .collect();
    let capacity = rules.iter().map(|(r, _)| r.capacity()).max().unwrap();
    let retain = rules.iter().map(|(r, _)| r.longest_window()).max().unwrap();
    rules
        .into_iter()
        .map(|(rule, model)| (rule.sharing(capacity, retain), model))
        .collect()
}

/// Runs `cases` random schedules against `store` on `runtime` (the one its connections were
/// made on), each on a bucket of its own.
fn matches_the_model<S: QuotaStore>(
    runtime: &tokio::runtime::Runtime,
    store: &S,
    cases: u32,
    schedules: BoxedStrategy<Schedule>,
) {
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&schedules, |(drawn, steps)| {
            let key = KeyDigest::of(&common::unique_key("model"));
            let bucket = BucketRef {
                key: &key,
                name: "GET /model",
            };
            let rules = resolve(&drawn);
            let mut model = SlidingModel::default();
            runtime.block_on(async {
                for (which, gap) in steps {
                    tokio::time::sleep(Duration::from_millis(gap)).await;
                    let (rule, windows) = &rules[which];
                    let outcome = store.check(bucket, rule).await.expect("the store answers");
                    let shadow = rule.mode() == Mode::Shadow;
                    let expected = model.check(windows, rule.cost(), shadow, outcome.now_micros);
                    let got: Vec<(u32, u64)> = outcome
                        .windows
                        .iter()
                        .map(|w| (w.remaining, w.reset_micros))
                        .collect();
                    prop_assert_eq!(outcome.allowed, expected.allowed, "{:?}", rule);
                    prop_assert_eq!(got, expected.windows, "{:?}", rule);
                }
                // Under one enforced rule, no window ever holds more than its limit. (Under
                // several, a window may hold what a larger rule admitted; each decision still
                // equals the model's, checked above.)
                if let [(rule, _)] = &rules[..]
                    && rule.mode() == Mode::Enforce
                {
                    for (_, windows) in &rules {
                        for w in windows {
                            prop_assert!(model.most_in_any(w.window_micros) <= w.requests as usize);
                        }
                    }
                }
                Ok::<(), TestCaseError>(())
            })
        })
        .unwrap();
}

fn redis_settings(url: String) -> RedisSettings {
    RedisSettings {
        url,
        timeout: Duration::from_secs(2),
        connections: 1,
        key_prefix: "model".into(),
        tls_ca: None,
    }
}

/// A Redis store on `url`, connected on `runtime`.
fn redis_store(runtime: &tokio::runtime::Runtime, url: String, topology: Topology) -> RedisStore {
    let store = {
        let _entered = runtime.enter();
        RedisStore::new(&redis_settings(url), topology).unwrap()
    };
    let ready = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), store.readiness().wait()).await
    });
    assert!(ready.expect("redis answers"));
    store
}

#[test]
fn the_memory_store_matches_the_model() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = MemoryStore::new(10_000);
    matches_the_model(&runtime, &store, 24, schedules());
    matches_the_model(&runtime, &store, 16, switching_schedules());
    matches_the_model(&runtime, &store, 3, large_schedules());
}

#[test]
fn redis_matches_the_model() {
    let redis = RedisServer::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = redis_store(&runtime, redis.url(), Topology::Standalone);
    matches_the_model(&runtime, &store, 24, schedules());
    matches_the_model(&runtime, &store, 16, switching_schedules());
    matches_the_model(&runtime, &store, 3, large_schedules());
}

/// Redis 6.2 and Valkey 8 run the same script, so they must give the same answers: fewer cases
/// (each waits in real time), enough to take every path of the script, the large rings' included.
fn other_server_matches_the_model(flavour: Flavour) {
    let redis = RedisServer::start_flavour(flavour);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = redis_store(&runtime, redis.url(), Topology::Standalone);
    matches_the_model(&runtime, &store, 12, schedules());
    matches_the_model(&runtime, &store, 8, switching_schedules());
    matches_the_model(&runtime, &store, 2, large_schedules());
}

#[test]
fn redis_6_2_matches_the_model() {
    other_server_matches_the_model(Flavour::Redis62);
}

#[test]
fn valkey_8_matches_the_model() {
    other_server_matches_the_model(Flavour::Valkey8);
}

#[test]
fn a_redis_cluster_matches_the_model() {
    let cluster = RedisCluster::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = redis_store(&runtime, cluster.url(), Topology::Cluster);
    matches_the_model(&runtime, &store, 16, schedules());
    matches_the_model(&runtime, &store, 8, switching_schedules());
    matches_the_model(&runtime, &store, 2, large_schedules());
}
