//! Temporary files and directories of the tests and benches, through `tempfile`: unique names,
//! and removed when dropped, also when a test panics.
//!
//! Standalone (it needs only `tempfile`), so a test or bench that needs nothing else of
//! `tests/common` can include it with `#[path]`.

use std::io::Write;
use tempfile::{NamedTempFile, TempDir};

/// A file ending in `.yaml` (Envoy picks the format by the extension) holding `text`.
pub fn yaml_file(text: &str) -> NamedTempFile {
    let mut file = tempfile::Builder::new()
        .prefix("tollgate-")
        .suffix(".yaml")
        .tempfile()
        .expect("create a temporary file");
    file.write_all(text.as_bytes())
        .expect("write a temporary file");
    file.flush().expect("write a temporary file");
    file
}

/// An empty directory.
pub fn dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("tollgate-")
        .tempdir()
        .expect("create a temporary directory")
}
