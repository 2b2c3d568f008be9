//! Micro-benchmarks of the check path's own work, without network or Redis: path normalisation,
//! route matching, key hashing, response rendering, and a whole decision against the in-memory
//! store. `cargo bench --bench micro` prints nanoseconds per operation (median of 7 rounds).

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;
use tollgate::api_key::KeyDigest;
use tollgate::authz::RateLimiter;
use tollgate::config::{Config, DEFAULT_YAML, Overrides};
use tollgate::path::normalize;
use tollgate::response::render;
use tollgate::store::MemoryStore;
use tollgate::verdict::{Quota, Verdict};

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

/// Polls a future that never waits (the in-memory store's) to completion.
fn ready<T>(future: impl Future<Output = T>) -> T {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("the in-memory store never waits"),
    }
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
    let requests: Vec<_> = (0..1024)
        .map(|i| {
            tollgate_bench_request(
                &format!("/v1/campaigns/{i}/statistics?from=2026-01-01"),
                &keys[i],
            )
        })
        .collect();

    println!("| operation | ns per call |");
    println!("|---|---|");
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
    let limiter = RateLimiter::new(&config, MemoryStore::new());
    bench("decide a check (memory store)", 200_000, |i| {
        black_box(ready(limiter.decide(&requests[(i % 1024) as usize])));
    });
}

fn tollgate_bench_request(path: &str, key: &str) -> envoy_types::ext_authz::v3::pb::CheckRequest {
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, attribute_context};
    let headers = [
        (":method", "GET"),
        (":path", path),
        (":authority", "api.example.com"),
        ("x-api-key", key),
        ("user-agent", "curl/8.5.0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    envoy_types::ext_authz::v3::pb::CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: "GET".into(),
                    path: path.into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}
