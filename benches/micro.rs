//! Micro-benchmarks of the check path's own work, without network or Redis: decoding the
//! `CheckRequest` (envoy-types' whole message against tollgate's walk over it), path normalisation,
//! route matching, key hashing, response rendering, and a whole decision against the in-memory
//! store; and the metrics crates compared on what tollgate records per check (one labelled counter
//! increment and one histogram observation), alone and from two threads at once.
//! `cargo bench --bench micro` prints nanoseconds per operation (median of 7 rounds);
//! `cargo bench --bench micro -- <text>` only the rows whose name contains `<text>`.

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
use tollgate::check::deny_cache::DenyCache;
use tollgate::check::metadata::decision_metadata;
use tollgate::check::request::HttpCheck;
use tollgate::check::response::render;
use tollgate::check::verdict::{Quota, Subject, Verdict};
use tollgate::check::wire::Writer;
use tollgate::config::{Config, DEFAULT_YAML, Overrides};
use tollgate::policy::headers::HeaderStyle;
use tollgate::policy::path::normalize;
use tollgate::store::{BucketRef, MemoryStore, Outcome, WindowOutcome};
use tollgate::telemetry::metrics::Metrics;

/// The rows to run: those whose name contains the first argument that is not a flag (cargo
/// passes `--bench`), or every row.
fn selected(name: &str) -> bool {
    static FILTER: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    FILTER
        .get_or_init(|| std::env::args().skip(1).find(|arg| !arg.starts_with('-')))
        .as_deref()
        .is_none_or(|filter| name.contains(filter))
}

/// Runs `op` in rounds of `iterations` and prints the median time per call.
fn bench(name: &str, iterations: u32, mut op: impl FnMut(u32)) {
    if !selected(name) {
        return;
    }
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
    let rule = table.default_rule();
    let quota = Quota::new(
        rule,
        &Outcome {
            allowed: true,
            now_micros: 1_795_806_616_516_000,
            windows: vec![WindowOutcome {
                remaining: 17,
                reset_micros: 1_795_806_628_516_000,
            }],
        },
        true,
    );
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
    // What a check of a campaign's statistics knows when it renders: its bucket, mode and key.
    let subject = Subject {
        bucket: Some("GET /campaigns/:id/statistics".into()),
        mode: Some(tollgate::policy::limit::Mode::Enforce),
        plan: None,
        key: Some(KeyDigest::of(&keys[0])),
        ..Subject::default()
    };
    bench(
        "decision metadata of an allowed response",
        1_000_000,
        |_| {
            let mut w = Writer::default();
            decision_metadata(
                &mut w,
                black_box(&Verdict::Allowed(quota.clone())),
                black_box(&subject),
            );
            black_box(w.into_bytes());
        },
    );
    bench("render an allowed response", 1_000_000, |_| {
        black_box(render(
            black_box(&Verdict::Allowed(quota.clone())),
            Some(&subject),
            "x-api-key",
            HeaderStyle::XRateLimit,
        ));
    });
    bench("render a 429 response", 1_000_000, |_| {
        black_box(render(
            black_box(&Verdict::Denied(quota.clone())),
            Some(&subject),
            "x-api-key",
            HeaderStyle::XRateLimit,
        ));
    });
    let limiter = RateLimiter::new(
        &config,
        MemoryStore::new(200_000),
        std::sync::Arc::new(Metrics::new()),
    );
    bench("decide a check (memory store)", 200_000, |i| {
        black_box(ready(limiter.decide(&requests[(i % 1024) as usize])));
    });
    deny_cache_full(&config);
    metrics_crates::compare();
}

/// Inserting a denial into the over-limit cache when every shard is full of live entries (the
/// default 100 000 buckets, each denied for a minute), as under a flood of hammered keys.
fn deny_cache_full(config: &Config) {
    let name = "insert a denial into a full over-limit cache (100 000 live buckets)";
    if !selected(name) {
        return;
    }
    let rule = config.routes.default_rule();
    let denied = Quota::new(
        rule,
        &Outcome {
            allowed: false,
            now_micros: 1_795_806_616_516_000,
            windows: vec![WindowOutcome {
                remaining: 0,
                reset_micros: 1_795_806_676_516_000,
            }],
        },
        false,
    );
    let cache = DenyCache::new(config.deny_cache_entries);
    let asked = Instant::now();
    // A bucket never inserted before for every call of every round (seven of 20 000).
    let keys: Vec<KeyDigest> = (0..config.deny_cache_entries + 7 * 20_000)
        .map(|i| KeyDigest::of(&format!("flood-{i}")))
        .collect();
    let bucket = |key| BucketRef {
        key,
        name: "default",
    };
    let (filling, flood) = keys.split_at(config.deny_cache_entries);
    for key in filling {
        cache.insert(bucket(key), rule, &denied, cache.asking(asked));
    }
    let mut flood = flood.iter();
    bench(name, 20_000, |_| {
        if let Some(key) = flood.next() {
            cache.insert(bucket(key), rule, &denied, cache.asking(asked));
        }
    });
}

/// The candidates for tollgate's metrics, each used as tollgate uses its choice: label sets
/// resolved once into handles, so a check increments one counter and observes one histogram.
mod metrics_crates {
    use super::bench;
    use std::hint::black_box;
    use std::sync::Arc;

    /// Check latency buckets, in seconds, as tollgate's.
    const BUCKETS: [f64; 13] = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    ];
    /// Observed values cycle through these, so every bucket search does some work.
    const SAMPLES: [f64; 4] = [0.00004, 0.0003, 0.0021, 0.04];

    /// What one check records, for `bench` and for the two-thread rows.
    trait PerCheck: Send + Sync + 'static {
        fn record(&self, i: u32);
    }

    struct PrometheusClient {
        counter: prometheus_client::metrics::counter::Counter,
        histogram: prometheus_client::metrics::histogram::Histogram,
    }

    impl PerCheck for PrometheusClient {
        fn record(&self, i: u32) {
            black_box(self.counter.inc());
            self.histogram.observe(SAMPLES[(i % 4) as usize]);
        }
    }

    /// prometheus-client without resolving the label set first: a map lookup per check.
    struct PrometheusClientLookup {
        family: prometheus_client::metrics::family::Family<
            Vec<(String, String)>,
            prometheus_client::metrics::counter::Counter,
        >,
        labels: Vec<(String, String)>,
    }

    struct Tikv {
        counter: prometheus::IntCounter,
        histogram: prometheus::Histogram,
    }

    impl PerCheck for Tikv {
        fn record(&self, i: u32) {
            self.counter.inc();
            self.histogram.observe(SAMPLES[(i % 4) as usize]);
        }
    }

    struct MetricsRs {
        counter: metrics::Counter,
        histogram: metrics::Histogram,
    }

    impl PerCheck for MetricsRs {
        fn record(&self, i: u32) {
            self.counter.increment(1);
            self.histogram.record(SAMPLES[(i % 4) as usize]);
        }
    }

    fn labels() -> Vec<(String, String)> {
        vec![
            ("result".to_owned(), "allowed".to_owned()),
            ("route".to_owned(), "GET /campaigns/:id".to_owned()),
        ]
    }

    fn prometheus_client() -> PrometheusClient {
        use prometheus_client::metrics::counter::Counter;
        use prometheus_client::metrics::family::Family;
        use prometheus_client::metrics::histogram::Histogram;
        let mut registry = prometheus_client::registry::Registry::default();
        let family = Family::<Vec<(String, String)>, Counter>::default();
        registry.register("tollgate_checks", "checks", family.clone());
        let histogram = Histogram::new(BUCKETS);
        registry.register(
            "tollgate_check_duration_seconds",
            "latency",
            histogram.clone(),
        );
        PrometheusClient {
            counter: family.get_or_create(&labels()).clone(),
            histogram,
        }
    }

    fn tikv() -> Tikv {
        let counters = prometheus::IntCounterVec::new(
            prometheus::Opts::new("tollgate_checks_total", "checks"),
            &["result", "route"],
        )
        .unwrap();
        let histogram = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new("tollgate_check_duration_seconds", "latency")
                .buckets(BUCKETS.to_vec()),
        )
        .unwrap();
        let registry = prometheus::Registry::new();
        registry.register(Box::new(counters.clone())).unwrap();
        registry.register(Box::new(histogram.clone())).unwrap();
        Tikv {
            counter: counters.with_label_values(&["allowed", "GET /campaigns/:id"]),
            histogram,
        }
    }

    fn metrics_rs() -> MetricsRs {
        use metrics::{Key, Label, Level, Metadata, Recorder};
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .unwrap()
            .build_recorder();
        let metadata = Metadata::new("tollgate", Level::INFO, None);
        let key = Key::from_parts(
            "tollgate_checks_total",
            vec![
                Label::new("result", "allowed"),
                Label::new("route", "GET /campaigns/:id"),
            ],
        );
        let counter = recorder.register_counter(&key, &metadata);
        let histogram = recorder.register_histogram(
            &Key::from_name("tollgate_check_duration_seconds"),
            &metadata,
        );
        // The handles keep the recorder's storage alive; nothing scrapes it here.
        std::mem::forget(recorder);
        MetricsRs { counter, histogram }
    }

    /// ns per check on each of two threads recording into the same series at once (the check
    /// path runs on both of tollgate's runtime workers).
    fn two_threads(name: &str, recorder: Arc<dyn PerCheck>) {
        const ITERATIONS: u32 = 1_000_000;
        if !super::selected(name) {
            return;
        }
        let mut rounds: Vec<f64> = (0..7)
            .map(|_| {
                let threads: Vec<_> = (0..2)
                    .map(|_| {
                        let recorder = recorder.clone();
                        std::thread::spawn(move || {
                            let start = std::time::Instant::now();
                            for i in 0..ITERATIONS {
                                recorder.record(black_box(i));
                            }
                            start.elapsed().as_nanos() as f64 / f64::from(ITERATIONS)
                        })
                    })
                    .collect();
                threads.into_iter().map(|t| t.join().unwrap()).sum::<f64>() / 2.0
            })
            .collect();
        rounds.sort_by(f64::total_cmp);
        println!("| {name} | {:.0} |", rounds[3]);
    }

    pub fn compare() {
        let candidates: [(&str, Arc<dyn PerCheck>); 3] = [
            ("prometheus-client 0.26", Arc::new(prometheus_client())),
            ("prometheus (tikv) 0.14", Arc::new(tikv())),
            (
                "metrics 0.24 + metrics-exporter-prometheus 0.18",
                Arc::new(metrics_rs()),
            ),
        ];
        for (name, recorder) in &candidates {
            bench(
                &format!("{name}: counter increment + histogram observation"),
                2_000_000,
                |i| recorder.record(black_box(i)),
            );
        }
        for (name, recorder) in candidates {
            two_threads(
                &format!("{name}: the same, two threads on one series"),
                recorder,
            );
        }
        let lookup = PrometheusClientLookup {
            family: Default::default(),
            labels: labels(),
        };
        bench(
            "prometheus-client 0.26: counter increment with a label lookup each time",
            2_000_000,
            |_| {
                black_box(lookup.family.get_or_create(black_box(&lookup.labels)).inc());
            },
        );
    }
}
