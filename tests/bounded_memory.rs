//! Memory per check is bounded by design, not by message size: reading a `CheckRequest` allocates
//! nothing, and a whole decision, and the answer rendered from it with its decision metadata,
//! allocate the same whatever the number of headers.
//!
//! A counting allocator (this test binary's own) measures it; counts are per thread, so the test
//! harness's own allocations on other threads do not leak into them.

mod common;

use common::WireRequest;
use common::poll::ready;
use envoy_types::ext_authz::v3::pb::CheckResponse;
use prost::Message;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use tollgate::api_key::{ApiKey, KeyDigest};
use tollgate::check::authz::RateLimiter;
use tollgate::check::metadata::decision_metadata;
use tollgate::check::request::HttpCheck;
use tollgate::check::verdict::{Subject, Verdict};
use tollgate::check::wire::Writer;
use tollgate::config::{Config, DEFAULT_YAML, Overrides};
use tollgate::policy::limit::Mode;
use tollgate::store::MemoryStore;
use tollgate::telemetry::metrics::Metrics;

struct Counting;

thread_local! {
    /// Bytes allocated by this thread. `const`-initialised, so reading it never allocates.
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is passed on unchanged to the system allocator; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.with(|a| a.set(a.get() + layout.size()));
        // SAFETY: the caller's contract for `alloc` is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes `f` allocates on this thread.
fn allocated_by<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = ALLOCATED.with(Cell::get);
    let value = f();
    (ALLOCATED.with(Cell::get) - before, value)
}

fn flood(empty_headers: usize) -> Vec<u8> {
    WireRequest::new("GET", "/v1/campaigns/7?x=1")
        .empty_headers(empty_headers)
        .header("user-agent", b"curl/8.5.0")
        .header("x-api-key", b"bounded")
        .raw_header("cookie", b"c=1")
        .encode()
}

#[test]
fn reading_a_check_request_allocates_nothing() {
    for headers in [0, 1_000, 1_000_000] {
        let message = flood(headers);
        let (bytes, check) = allocated_by(|| HttpCheck::parse(&message, "x-api-key"));
        let check = check.unwrap();
        assert_eq!(check.api_key, ApiKey::One("bounded"));
        assert_eq!(bytes, 0, "{headers} headers");
    }
}

#[test]
fn a_decision_costs_the_same_whatever_the_header_count() {
    let config = Config::from_yaml(DEFAULT_YAML, "built-in", &Overrides::default()).unwrap();
    let limiter = RateLimiter::new(
        &config,
        MemoryStore::new(1000),
        std::sync::Arc::new(Metrics::new()),
    );
    let small = flood(0);
    // The first decision creates the bucket; the ones after it are the steady state.
    assert!(matches!(ready(limiter.decide(&small)), Verdict::Allowed(_)));
    let (baseline, _) = allocated_by(|| ready(limiter.decide(&small)));
    for headers in [1_000, 1_000_000] {
        let message = flood(headers);
        let (bytes, verdict) = allocated_by(|| ready(limiter.decide(&message)));
        assert!(matches!(verdict, Verdict::Allowed(_)), "{verdict:?}");
        assert_eq!(bytes, baseline, "{headers} headers");
    }
    assert!(baseline < 1024, "a decision allocates {baseline} bytes");
}

#[test]
fn an_answer_with_its_decision_metadata_costs_the_same_whatever_the_header_count() {
    let config = Config::from_yaml(DEFAULT_YAML, "built-in", &Overrides::default()).unwrap();
    let limiter = RateLimiter::new(
        &config,
        MemoryStore::new(1000),
        std::sync::Arc::new(Metrics::new()),
    );
    let small = flood(0);
    let answer = |message: &[u8]| ready(limiter.answer(Ok(message)));
    let first = CheckResponse::decode(answer(&small).message()).unwrap();
    assert!(first.dynamic_metadata.is_some(), "{first:?}");
    let (baseline, _) = allocated_by(|| answer(&small));
    for headers in [1_000, 1_000_000] {
        let message = flood(headers);
        let (bytes, rendered) = allocated_by(|| answer(&message));
        let response = CheckResponse::decode(rendered.message()).unwrap();
        let metadata = response.dynamic_metadata.expect("decision metadata");
        assert_eq!(metadata.fields.len(), 7, "{metadata:?}");
        assert_eq!(bytes, baseline, "{headers} headers");
    }
    // The metadata's own share (measured: see BENCHMARKS.md): the field map and its strings.
    let verdict = ready(limiter.decide(&small));
    let subject = Subject {
        bucket: Some("GET /campaigns/:id".into()),
        mode: Some(Mode::Enforce),
        plan: None,
        key: Some(KeyDigest::of("bounded")),
        ..Subject::default()
    };
    let (metadata, _) = allocated_by(|| {
        let mut w = Writer::default();
        decision_metadata(&mut w, &verdict, &subject);
        w
    });
    let off = Config::from_yaml(
        &format!("{DEFAULT_YAML}\ndecision_metadata: false\n"),
        "built-in",
        &Overrides::default(),
    )
    .unwrap();
    let without = RateLimiter::new(&off, MemoryStore::new(1000), Metrics::new().into());
    let answer_without = |message: &[u8]| ready(without.answer(Ok(message)));
    let response = CheckResponse::decode(answer_without(&small).message()).unwrap();
    assert_eq!(response.dynamic_metadata, None);
    let (bytes_without, _) = allocated_by(|| answer_without(&small));
    eprintln!(
        "an answer allocates {baseline} bytes, {metadata} of them its decision metadata; \
         {bytes_without} with decision_metadata: false"
    );
    assert!(metadata < 1024, "the metadata allocates {metadata} bytes");
    assert!(baseline < 4096, "an answer allocates {baseline} bytes");
}
