//! The check as a Redis function: `FCALL` where the server has functions (Redis 7, Valkey 8, a
//! cluster's every primary), `EVALSHA` where it has none (Redis 6.2) or refuses the library (an
//! ACL without `FUNCTION`), and a library lost (`FUNCTION FLUSH`) is loaded again by the next
//! check, which keeps counting where the last one left off.

mod common;

use common::redis_server::command_calls;
use common::redis_server::{Flavour, RedisServer};
use common::{RedisCluster, ready_store};
use std::num::NonZeroU32;
use std::time::Duration;
use tollgate::api_key::KeyDigest;
use tollgate::config::Topology;
use tollgate::policy::limit::{Limit, Mode, Rule};
use tollgate::store::{BucketRef, QuotaStore, RedisStore};

fn three_a_minute() -> Rule {
    let limit = Limit {
        requests: NonZeroU32::new(3).unwrap(),
        window: Duration::from_secs(60),
    };
    Rule::new(vec![limit], 1, Mode::Enforce).unwrap()
}

/// The one bucket these tests check, of `key`.
fn bucket_of(key: &KeyDigest) -> BucketRef<'_> {
    BucketRef {
        key,
        name: "GET /x",
    }
}

/// Checks `bucket` `n` times; what each left of the window.
async fn remaining_after(store: &RedisStore, bucket: BucketRef<'_>, n: usize) -> Vec<u32> {
    let mut remaining = Vec::new();
    for _ in 0..n {
        let outcome = store
            .check(bucket, &three_a_minute())
            .await
            .expect("the store answers");
        remaining.push(outcome.windows[0].remaining);
    }
    remaining
}

/// (`FCALL`, `EVALSHA`) calls so far.
fn calls(connection: &mut redis::Connection) -> (u64, u64) {
    (
        command_calls(connection, "fcall"),
        command_calls(connection, "evalsha"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_call_the_function_where_the_server_has_functions() {
    for (flavour, by_function) in [
        (Flavour::Redis7, true),
        (Flavour::Redis62, false),
        (Flavour::Valkey8, true),
    ] {
        let redis = RedisServer::start_flavour(flavour);
        let store = ready_store(&redis.url(), Topology::Standalone, "functions").await;
        let key = KeyDigest::of("functions");
        let bucket = bucket_of(&key);
        let mut connection = redis.connection();
        let before = calls(&mut connection);
        assert_eq!(
            remaining_after(&store, bucket, 4).await,
            [2, 1, 0, 0],
            "{flavour:?}: the same count either way"
        );
        let (fcall, evalsha) = calls(&mut connection);
        let expected = if by_function { (4, 0) } else { (0, 4) };
        assert_eq!(
            (fcall - before.0, evalsha - before.1),
            expected,
            "{flavour:?}: (FCALL, EVALSHA)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_library_is_loaded_again_and_counting_goes_on() {
    let redis = RedisServer::start();
    let store = ready_store(&redis.url(), Topology::Standalone, "flushed").await;
    let key = KeyDigest::of("flushed");
    let bucket = bucket_of(&key);
    assert_eq!(remaining_after(&store, bucket, 1).await, [2]);
    let mut connection = redis.connection();
    let _: () = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query(&mut connection)
        .unwrap();
    assert_eq!(remaining_after(&store, bucket, 2).await, [1, 0]);
    let libraries: Vec<redis::Value> = redis::cmd("FUNCTION")
        .arg("LIST")
        .query(&mut connection)
        .unwrap();
    assert_eq!(libraries.len(), 1, "loaded again: {libraries:?}");
    let (fcall, evalsha) = calls(&mut connection);
    assert_eq!(evalsha, 0, "never fell back to the script");
    // The call that found the function missing, and the same call again after the load.
    assert_eq!(fcall, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_may_not_load_functions_checks_by_script() {
    let redis = RedisServer::start();
    let mut connection = redis.connection();
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "scripts-only",
            "on",
            ">pw",
            "~*",
            "+@all",
            "-function",
        ])
        .query(&mut connection)
        .unwrap();
    let url = format!("redis://scripts-only:pw@127.0.0.1:{}", redis.port);
    let store = ready_store(&url, Topology::Standalone, "acl").await;
    let key = KeyDigest::of("acl");
    let bucket = bucket_of(&key);
    assert_eq!(remaining_after(&store, bucket, 4).await, [2, 1, 0, 0]);
    assert_eq!(calls(&mut connection), (0, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_calls_the_function_on_the_keys_primary_and_reloads_it_there() {
    let cluster = RedisCluster::start();
    let store = ready_store(&cluster.url(), Topology::Cluster, "cluster").await;
    let key = KeyDigest::of("cluster");
    let bucket = bucket_of(&key);
    let port = cluster.primary_of_slot(cluster.slot_of(&store.key_name(bucket)));
    let mut primary = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_connection()
        .unwrap();
    assert_eq!(remaining_after(&store, bucket, 2).await, [2, 1]);
    assert_eq!(calls(&mut primary), (2, 0));
    let _: () = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query(&mut primary)
        .unwrap();
    assert_eq!(remaining_after(&store, bucket, 2).await, [0, 0]);
    assert_eq!(calls(&mut primary), (5, 0), "one call found it missing");
}
