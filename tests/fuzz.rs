//! The fuzz targets' bodies (`tests/common/fuzz_bodies.rs`, run by libFuzzer from `fuzz/`) in
//! `cargo test`: every committed seed and regression input, then proptest's random and mutated
//! inputs. No nightly toolchain needed.

mod common;

use common::fuzz_bodies;
use proptest::prelude::*;
use std::path::Path;

type Body = fn(&[u8]);

const TARGETS: [(&str, Body); 3] = [
    ("check_request", fuzz_bodies::check_request),
    ("path_routes", fuzz_bodies::path_and_routes),
    ("config", fuzz_bodies::config_text),
];

/// The files of `fuzz/<dir>/<target>/`, if any.
fn inputs(dir: &str, target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(dir)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect()
}

#[test]
fn seeds_and_regressions_replay() {
    for (target, body) in TARGETS {
        let seeds = inputs("seeds", target);
        assert!(
            !seeds.is_empty(),
            "fuzz/seeds/{target} holds the starting corpus"
        );
        for input in seeds.iter().chain(&inputs("regressions", target)) {
            body(input);
        }
    }
}

/// A seed with a few bytes replaced, inserted or removed: inputs near valid ones reach deeper.
fn mutated(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let seeds = inputs("seeds", target);
    (
        0..seeds.len(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    )
        .prop_map(move |(seed, edits)| {
            let mut data = seeds[seed].clone();
            for (at, byte, kind) in edits {
                match kind {
                    0 if !data.is_empty() => {
                        let i = at.index(data.len());
                        data[i] = byte;
                    }
                    1 => {
                        let i = at.index(data.len() + 1);
                        data.insert(i, byte);
                    }
                    _ if !data.is_empty() => {
                        data.remove(at.index(data.len()));
                    }
                    _ => {}
                }
            }
            data
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn check_request_on_random_bytes(data in prop::collection::vec(any::<u8>(), 0..256)) {
        fuzz_bodies::check_request(&data);
    }

    #[test]
    fn check_request_on_mutated_seeds(data in mutated("check_request")) {
        fuzz_bodies::check_request(&data);
    }

    #[test]
    fn path_routes_on_path_like_text(text in "[/\\\\%;?#.a-fA-F0-9:vV1 ü~-]{0,48}") {
        fuzz_bodies::path_and_routes(text.as_bytes());
    }

    #[test]
    fn path_routes_on_mutated_seeds(data in mutated("path_routes")) {
        fuzz_bodies::path_and_routes(&data);
    }

    #[test]
    fn config_on_mutated_seeds(data in mutated("config")) {
        fuzz_bodies::config_text(&data);
    }
}
