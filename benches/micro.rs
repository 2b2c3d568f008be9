//! Micro-benchmarks of the check path's own work, without network or Redis: decoding the
//! `CheckRequest` (envoy-types' whole message against tollgate's walk over it), path normalisation,
//! route matching, key hashing, response rendering, and a whole decision against the in-memory
//! store. `cargo bench --bench micro` prints nanoseconds per operation (median of 7 rounds).

#[path = "../tests/common/check_request.rs"]
mod check_request;
#[path = "../tests/common/poll.rs"]
mod poll;

use check_request::envoy_request;
use envoy_types::ext_authz::v3::pb::CheckRequest as EnvoyCheckRequest;
use poll::ready;
use prost::Message;
use std::hint::black_box;
use std::time::Instant;
use tollgate::api_key::KeyDigest;
use tollgate::check::authz::RateLimiter;
use tollgate::check::path::normalize;
use tollgate::check::request::HttpCheck;
use tollgate::check::response::render;
use tollgate::check::verdict::{Quota, Verdict};
use tollgate::config::{Config, DEFAULT_YAML, Overrides};
use tollgate::store::MemoryStore;

/// Runs `op` in rounds of `iterations` and prints the median time per call.
fn bench(name: &str, iterations: u32, mut op: impl FnMut(u32)) {
    let mut rounds: Vec<f64> = (0..7)
        .map(|_| {
            let start = Instant::now();
            for i in 0..iterations {
                op(i);
            }
            start.elapsed().as_nanos() as f64 / f64::from(iterations)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    println!("| {name} | {:.0} |", rounds[3]);
}

fn main() {
    let config = Config::from_yaml(DEFAULT_YAML, "built-in", &Overrides::default()).unwrap();
    let table = config.routes.clone();
    let quota = Quota {
        limit: table.default_limit(),
        remaining: 17,
        reset_millis: 1_795_806_628_516,
        retry_after_secs: 12,
    };
    let keys: Vec<String> = (0..1024).map(|i| format!("bench-key-{i}")).collect();
    let requests: Vec<Vec<u8>> = (0..1024)
        .map(|i| {
            let path = format!("/v1/campaigns/{i}/statistics?from=2026-01-01");
            envoy_request("GET", &path, Some(&keys[i])).encode_to_vec()
        })
        .collect();
    let wire = bytes::Bytes::from(
        envoy_request(
            "GET",
            "/v1/campaigns/123/statistics?from=2026-01-01",
            Some(&keys[0]),
        )
        .encode_to_vec(),
    );

    println!("| operation | ns per call |");
    println!("|---|---|");
    bench(
        &format!(
            "decode a {}-byte CheckRequest, whole (envoy-types)",
            wire.len()
        ),
        200_000,
        |_| {
            black_box(EnvoyCheckRequest::decode(black_box(wire.clone())).unwrap());
        },
    );
    bench(
        &format!(
            "read method, path and key from a {}-byte CheckRequest (tollgate)",
            wire.len()
        ),
        200_000,
        |_| {
            black_box(HttpCheck::parse(black_box(&wire), "x-api-key").unwrap());
        },
    );
    bench("normalize a path with a query", 1_000_000, |_| {
        black_box(normalize(black_box("/v1/campaigns/12345/statistics?from=2026-01-01")).unwrap());
    });
    bench("match a route (10 routes)", 1_000_000, |_| {
        black_box(table.bucket(
            black_box("GET"),
            black_box("/v1/campaigns/12345/statistics"),
        ));
    });
    bench("digest an API key (SHA-256)", 1_000_000, |i| {
        black_box(KeyDigest::of(black_box(&keys[(i % 1024) as usize])));
    });
    bench("render an allowed response", 1_000_000, |_| {
        black_box(render(black_box(&Verdict::Allowed(quota)), "x-api-key"));
    });
    bench("render a 429 response", 1_000_000, |_| {
        black_box(render(black_box(&Verdict::RateLimited(quota)), "x-api-key"));
    });
    let limiter = RateLimiter::new(&config, MemoryStore::new(config.memory_store_entries));
    bench("decide a check (memory store)", 200_000, |i| {
        black_box(ready(limiter.decide(&requests[(i % 1024) as usize])));
    });
}
