//! The bodies of tollgate's fuzz targets: each takes arbitrary bytes and panics when an invariant
//! breaks. `fuzz/` runs them under libFuzzer (`cargo +nightly fuzz run <target>`); `tests/fuzz.rs`
//! runs the same bodies in `cargo test` over proptest inputs and the committed seeds, so CI needs
//! no nightly toolchain.

use envoy_types::ext_authz::v3::pb::{
    CheckRequest as EnvoyCheckRequest, CheckResponse, HttpResponse,
};
use prost::Message;
use std::future::Future;
use std::pin::pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};
use tollgate::api_key::ApiKey;
use tollgate::check::authz::RateLimiter;
use tollgate::check::request::HttpCheck;
use tollgate::check::response::render;
use tollgate::check::verdict::{Subject, Verdict};
use tollgate::config::{Config, DEFAULT_YAML, Overrides};
use tollgate::policy::headers::HeaderStyle;
use tollgate::policy::path::{is_plain, normalize};
use tollgate::policy::routes::MAX_PER_PATH_NAME;
use tollgate::store::MemoryStore;
use tollgate::telemetry::metrics::Metrics;

/// A plan over the contract's table that a request's `x-plan` header picks: shadow mode, two
/// windows, a cost.
const PLAN: &str = r#"
plan_header: x-plan
plans:
  pro:
    mode: shadow
    default_limits: [{ requests: 5, window: 1s }, { requests: 50, window: 1h }]
    routes:
      - { method: GET, path: /campaigns/:id, cost: 2, limits: [{ requests: 4, window: 1s }, { requests: 100, window: 1m }] }
"#;

/// The contract's table with per-path default buckets, so undeclared paths name buckets too, and
/// a plan.
fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let yaml = format!("{DEFAULT_YAML}\ndefault_bucket: per_path\n{PLAN}")
            .replace("default_bucket: shared\n", "");
        Config::from_yaml(&yaml, "fuzz", &Overrides::default()).expect("fuzz configuration")
    })
}

fn limiter() -> &'static RateLimiter<MemoryStore> {
    static LIMITER: OnceLock<RateLimiter<MemoryStore>> = OnceLock::new();
    LIMITER.get_or_init(|| {
        RateLimiter::new(
            config(),
            MemoryStore::new(100_000),
            std::sync::Arc::new(Metrics::new()),
        )
    })
}

/// Polls a future that never waits (the in-memory store's) to completion.
fn ready<T>(future: impl Future<Output = T>) -> T {
    match pin!(future)
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("the in-memory store never waits"),
    }
}

/// CheckRequest bytes → fields → decision → CheckResponse.
pub fn check_request(data: &[u8]) {
    let parsed = HttpCheck::parse(data, "x-api-key");
    // Reading the plan header as well changes nothing else that is read.
    let with_plan = HttpCheck::parse_with_plan(data, "x-api-key", Some("x-plan"));
    match (&parsed, &with_plan) {
        (Ok(check), Ok(planned)) => {
            assert_eq!(
                HttpCheck {
                    plan: None,
                    ..*planned
                },
                *check
            );
            if let Some(plan) = planned.plan {
                assert!(data.as_ptr_range().contains(&plan.as_ptr()));
                assert!(!plan.is_empty() && plan.bytes().all(|b| b.is_ascii_graphic()));
            }
        }
        (parsed, planned) => assert_eq!(parsed.as_ref().err(), planned.as_ref().err()),
    }
    let verdict = ready(limiter().decide(data));
    match parsed {
        Err(e) => assert_eq!(verdict, Verdict::BadRequest(e)),
        Ok(check) => {
            let within =
                |text: &str| data.as_ptr_range().contains(&text.as_ptr()) || text.is_empty();
            assert!(
                within(check.method) && within(check.path),
                "slices of the message"
            );
            if let ApiKey::One(key) = check.api_key {
                assert!(within(key) && !key.is_empty() && !key.contains(','));
                assert_eq!(key.trim_ascii(), key);
            }
            // Where protobuf itself reads the message, both agree on what they both read.
            if let Ok(full) = EnvoyCheckRequest::decode(data) {
                let http = full.attributes.and_then(|a| a.request).and_then(|r| r.http);
                let http = http.expect("tollgate found HTTP attributes, so does protobuf");
                if !http.method.is_empty() {
                    assert_eq!(check.method, http.method);
                }
                if !http.path.is_empty() {
                    assert_eq!(check.path, http.path);
                }
            }
        }
    }
    let rendered = render(
        &verdict,
        Some(&Subject::default()),
        "x-api-key",
        HeaderStyle::Both,
    );
    let response = CheckResponse::decode(rendered.message()).expect("protobuf reads the answer");
    let code = response.status.as_ref().map_or(-1, |s| s.code);
    match response.http_response {
        Some(HttpResponse::OkResponse(_)) => assert_eq!(code, 0),
        Some(HttpResponse::DeniedResponse(denied)) => {
            assert_ne!(code, 0);
            assert!(denied.status.is_some_and(|s| s.code >= 400));
        }
        other => panic!("every verdict is an OK or a denied response: {other:?}"),
    }
}

/// Path text → normalisation → route matching.
pub fn path_and_routes(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    let normal = match normalize(&raw) {
        Ok(normal) => normal,
        Err(_) => {
            assert!(
                !raw.split(['?', '#'])
                    .next()
                    .unwrap_or_default()
                    .starts_with(['/', '\\'])
            );
            return;
        }
    };
    assert_eq!(
        normalize(&normal).as_deref(),
        Ok(normal.as_str()),
        "idempotent"
    );
    assert!(normal.starts_with('/'));
    assert!(normal == "/" || !normal.ends_with('/'));
    assert!(!normal.contains("//"));
    assert!(
        normal
            .bytes()
            .all(|b| b == b'/' || b == b'%' || is_plain(b))
    );
    for method in ["GET", "POST", "DELETE"] {
        if let Some(bucket) = config().routes.bucket(method, &normal) {
            assert!(
                bucket.name.len() <= MAX_PER_PATH_NAME.max(64),
                "{}",
                bucket.name
            );
        }
    }
}

/// YAML text → validated configuration, or every problem named.
pub fn config_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_yaml(text, "fuzz", &Overrides::default()) {
        Ok(config) => {
            assert!(!format!("{config}").is_empty());
        }
        Err(e) => {
            assert!(!e.problems.is_empty());
            assert!(e.problems.iter().all(|p| !p.is_empty()));
        }
    }
}
