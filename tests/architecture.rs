//! The shape of `src/`, read from the source itself, so that it cannot drift:
//!
//! - **Layers point one way.** Every `crate::<module>` path in a module names a module at its own
//!   layer or below it, in the order `docs/architecture.md` declares (and [`LAYERS`] repeats).
//! - **Small pieces.** No source file over [`MAX_FILE_LINES`] lines, no function over
//!   [`MAX_FUNCTION_LINES`].
//!
//! A failure names the file and line, and what to do about it.

use std::path::{Path, PathBuf};

/// The top-level modules, from the top layer down; modules on one line are one layer. A module
/// may use the modules of its own layer and of the layers below it, never those above.
const LAYERS: &[&[&str]] = &[
    &["main", "cli"],
    &["server"],
    &["admin"],
    &["check"],
    &["telemetry"],
    &["store"],
    &["config"],
    &["policy"],
    &["api_key", "clock"],
];

/// Longest source file, tests included (they may move to a sibling file or to `tests/`).
const MAX_FILE_LINES: usize = 500;

/// Longest function, from its `fn` line to its closing brace.
const MAX_FUNCTION_LINES: usize = 60;

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The top-level module a file of `src/` belongs to: `src/check/service.rs` -> `check`,
/// `src/clock.rs` -> `clock`; `None` for `lib.rs`, the module map.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib").then(|| name.to_string())
}

/// The modules named by `crate::<module>` paths on `line`.
fn crate_paths(line: &str) -> Vec<&str> {
    line.match_indices("crate::")
        .filter(|(at, _)| {
            // `tollgate::` or `$crate::` are other paths.
            !line[..*at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$')
        })
        .filter_map(|(at, _)| {
            let rest = &line[at + "crate::".len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (end > 0).then(|| &rest[..end])
        })
        .collect()
}

#[test]
fn every_layer_uses_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut problems = Vec::new();
    for file in sources(&src) {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        let Some(own) = layer_of(&module) else {
            problems.push(format!(
                "{}: module `{module}` is in no layer; add it to docs/architecture.md and LAYERS",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for (number, line) in text.lines().enumerate() {
            if line.contains("crate::{") {
                problems.push(format!(
                    "{}:{}: a grouped `crate::{{...}}` path hides which modules it uses; write one path per module",
                    file.display(),
                    number + 1
                ));
            }
            for used in crate_paths(line) {
                match layer_of(used) {
                    Some(layer) if layer < own => problems.push(format!(
                        "{}:{}: `{module}` uses `crate::{used}`, a layer above it; move what it needs down to `{module}` or below",
                        file.display(),
                        number + 1
                    )),
                    Some(_) => {}
                    None => problems.push(format!(
                        "{}:{}: `crate::{used}` is in no layer",
                        file.display(),
                        number + 1
                    )),
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `(line, name, length)` of every function in `text` whose body spans more than
/// [`MAX_FUNCTION_LINES`] lines (declarations without a body have none). rustfmt puts a function's closing brace alone on a line at the
/// indentation of its `fn`, which is how its end is found.
fn long_functions(text: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut long = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let signature = [
            "pub(crate) ",
            "pub(super) ",
            "pub ",
            "const ",
            "async ",
            "unsafe ",
        ]
        .iter()
        .fold(trimmed, |rest, word| {
            rest.strip_prefix(word).unwrap_or(rest)
        });
        let Some(name) = signature.strip_prefix("fn ") else {
            continue;
        };
        let name: String = name
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // A declaration without a body (a trait's required method) ends its signature with `;`.
        let signature_end = lines[start..]
            .iter()
            .find(|l| l.ends_with('{') || l.ends_with(';'));
        if signature_end.is_some_and(|l| l.ends_with(';')) {
            continue;
        }
        let closing = format!("{indent}}}");
        if let Some(end) = lines[start..].iter().position(|l| *l == closing) {
            let length = end + 1;
            if length > MAX_FUNCTION_LINES {
                long.push((start + 1, name, length));
            }
        }
    }
    long
}

#[test]
fn files_and_functions_stay_small() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut problems = Vec::new();
    for file in sources(&src) {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines = text.lines().count();
        if lines > MAX_FILE_LINES {
            problems.push(format!(
                "{}: {lines} lines (at most {MAX_FILE_LINES}); split it by concern, or move its tests to a sibling file",
                file.display()
            ));
        }
        for (line, name, length) in long_functions(&text) {
            problems.push(format!(
                "{}:{line}: fn {name} has {length} lines (at most {MAX_FUNCTION_LINES}); name its steps",
                file.display()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checks_see_what_they_must() {
    assert_eq!(
        crate_paths("use crate::check::authz::{Policy, RateLimiter};"),
        ["check"]
    );
    assert_eq!(
        crate_paths("/// see [`crate::store`] and crate::config::Config"),
        ["store", "config"]
    );
    assert!(crate_paths("tollgate::check::x; $crate::common::Backend; my_crate::x").is_empty());
    let function = |body: usize| {
        format!(
            "    pub async fn f() {{\n{}    }}\n",
            "        x();\n".repeat(body)
        )
    };
    assert!(long_functions(&function(MAX_FUNCTION_LINES - 2)).is_empty());
    assert_eq!(
        long_functions(&function(MAX_FUNCTION_LINES - 1)),
        [(1, "f".to_string(), MAX_FUNCTION_LINES + 1)]
    );
    assert_eq!(layer_of("cli"), Some(0));
    assert!(layer_of("check") < layer_of("store"));
}
