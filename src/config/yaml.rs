//! Walking a YAML document while collecting problems instead of stopping at the first.

use serde_yaml::{Mapping, Value};
use std::borrow::Cow;
use std::ops::RangeInclusive;

/// Problems found so far, one sentence each, prefixed with where they are.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<String>);

impl Problems {
    pub(super) fn add(&mut self, at: &str, message: impl std::fmt::Display) {
        self.0.push(format!("{at}: {message}"));
    }
}

/// Reports every key of `map` that is not in `known`, so typos fail loudly.
pub(super) fn check_keys(map: &Mapping, at: &str, known: &[&str], problems: &mut Problems) {
    for key in map.keys() {
        match key.as_str() {
            Some(name) if known.contains(&name) => {}
            _ => problems.add(
                at,
                format!(
                    "unknown key {}; expected one of: {}",
                    render(key),
                    known.join(", ")
                ),
            ),
        }
    }
}

/// A section of settings: its mapping with every key checked against `known`, an empty one when
/// it is absent, or `None` (and a problem) when it is not a mapping.
pub(super) fn section<'a>(
    value: Option<&'a Value>,
    at: &str,
    known: &[&str],
    problems: &mut Problems,
) -> Option<Cow<'a, Mapping>> {
    let map = match value {
        None | Some(Value::Null) => Cow::Owned(Mapping::new()),
        Some(Value::Mapping(map)) => Cow::Borrowed(map),
        Some(_) => {
            problems.add(
                at,
                format!("must be a mapping with keys from: {}", known.join(", ")),
            );
            return None;
        }
    };
    check_keys(&map, at, known, problems);
    Some(map)
}

/// A string setting; numbers and booleans are refused rather than coerced.
pub(super) fn string<'a>(
    map: &'a Mapping,
    key: &str,
    at: &str,
    problems: &mut Problems,
) -> Option<&'a str> {
    match map.get(key)? {
        Value::String(s) => Some(s),
        Value::Null => None,
        other => {
            problems.add(at, format!("{key} must be a string, not {}", render(other)));
            None
        }
    }
}

pub(super) fn render(value: &Value) -> String {
    serde_yaml::to_string(value).map_or_else(|_| "?".to_owned(), |s| s.trim_end().to_owned())
}

/// A whole-number setting in `range`, `default` when absent.
pub(super) fn whole_number(
    map: &Mapping,
    key: &str,
    at: &str,
    range: RangeInclusive<u64>,
    default: u64,
    problems: &mut Problems,
) -> Option<u64> {
    let Some(value) = map.get(key) else {
        return Some(default);
    };
    match value.as_u64() {
        Some(n) if range.contains(&n) => Some(n),
        _ => {
            problems.add(
                at,
                format!(
                    "must be a whole number from {} to {}, not {}",
                    range.start(),
                    range.end(),
                    render(value)
                ),
            );
            None
        }
    }
}
