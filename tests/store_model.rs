//! Exactness of the quota stores over random schedules, against the reference model
//! (`tests/common/sliding_model.rs`): for random windows, costs and modes, every check's decision,
//! remaining slots and reset times equal the model's, and in enforce mode no trailing window ever
//! holds more than its limit. The memory store, a real Redis and a real Redis Cluster, each in
//! real time: the model is driven by the clock the store reports, so nothing depends on timing.

mod common;

use common::redis_cluster::RedisCluster;
use common::redis_server::RedisServer;
use common::sliding_model::{ModelWindow, SlidingModel};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::num::NonZeroU32;
use std::time::Duration;
use tollgate::api_key::KeyDigest;
use tollgate::limit::{Limit, Mode, Rule};
use tollgate::store::{BucketRef, MemoryStore, QuotaStore, RedisSettings, RedisStore, Topology};

/// A schedule: windows (ms → requests), a cost seed, shadow or not, and the gaps between checks.
type Schedule = (std::collections::BTreeMap<u64, u32>, u32, bool, Vec<u64>);

/// Small buckets over many gaps: every window fills and drains.
fn schedules() -> BoxedStrategy<Schedule> {
    (
        prop::collection::btree_map(20u64..200, 1u32..6, 1..4),
        0u32..6,
        any::<bool>(),
        prop::collection::vec(0u64..40, 1..30),
    )
        .boxed()
}

/// Large buckets, hammered with costly requests and now and then left idle past their shorter
/// window (not the longest, so the bucket stays): rings of more slots than the script reads in
/// one command (1 022), written round many times, and read right after a write when a window
/// starts empty.
fn large_schedules() -> BoxedStrategy<Schedule> {
    let gap = prop_oneof![40 => 0u64..2, 1 => 30u64..150];
    (
        prop::collection::btree_map(20u64..200, 1000u32..1500, 2..4),
        0u32..60,
        any::<bool>(),
        prop::collection::vec(gap, 150..500),
    )
        .boxed()
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
        .run(&schedules, |(windows, cost_seed, shadow, gaps)| {
            let key = KeyDigest::of(&common::unique_key("model"));
            let bucket = BucketRef {
                key: &key,
                name: "GET /model",
            };
            let model_windows: Vec<ModelWindow> = windows
                .iter()
                .map(|(&ms, &requests)| ModelWindow {
                    requests,
                    window_micros: ms * 1000,
                })
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
            runtime.block_on(async {
                for gap in gaps {
                    tokio::time::sleep(Duration::from_millis(gap)).await;
                    let outcome = store.check(bucket, &rule).await.expect("the store answers");
                    let expected = model.check(&model_windows, cost, shadow, outcome.now_micros);
                    let got: Vec<(u32, u64)> = outcome
                        .windows
                        .iter()
                        .map(|w| (w.remaining, w.reset_micros))
                        .collect();
                    prop_assert_eq!(outcome.allowed, expected.allowed, "{:?}", rule);
                    prop_assert_eq!(got, expected.windows, "{:?}", rule);
                }
                if !shadow {
                    for w in &model_windows {
                        prop_assert!(model.most_in_any(w.window_micros) <= w.requests as usize);
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
    runtime.block_on(store.preload()).expect("redis answers");
    store
}

#[test]
fn the_memory_store_matches_the_model() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = MemoryStore::new(10_000);
    matches_the_model(&runtime, &store, 24, schedules());
    matches_the_model(&runtime, &store, 3, large_schedules());
}

#[test]
fn redis_matches_the_model() {
    let redis = RedisServer::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = redis_store(&runtime, redis.url(), Topology::Standalone);
    matches_the_model(&runtime, &store, 24, schedules());
    matches_the_model(&runtime, &store, 3, large_schedules());
}

#[test]
fn a_redis_cluster_matches_the_model() {
    let cluster = RedisCluster::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = redis_store(&runtime, cluster.url(), Topology::Cluster);
    matches_the_model(&runtime, &store, 16, schedules());
    matches_the_model(&runtime, &store, 2, large_schedules());
}
