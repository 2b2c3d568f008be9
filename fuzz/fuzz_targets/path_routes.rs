#![no_main]

// Each target uses one of the bodies.
#[allow(dead_code)]
#[path = "../../tests/common/fuzz_bodies.rs"]
mod fuzz_bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_bodies::path_and_routes(data));
