//! Path normalisation: every spelling that an upstream may route to one handler must land in
//! the same bucket.
//!
//! The rules, applied in this order (docs/checks.md repeats them for operators):
//! 1. The query string and fragment are dropped (`?` or `#` and everything after).
//! 2. A raw backslash and the escapes `%2F` and `%5C` are slashes (many servers treat a backslash
//!    as one; the shipped Envoy configuration decodes escaped slashes before the upstream sees
//!    them).
//! 3. Path parameters are dropped: in each segment, `;` and everything after it, as servlet
//!    containers and Spring do before routing (`/v1;x/analytics` is `/v1/analytics`). An escaped
//!    `%3B` is data, not a parameter, and stays.
//! 4. Percent-escapes of printable ASCII are decoded once, except those of `%`, `?`, `#` and `;`,
//!    which would change the path's structure. Escapes of anything else (space, controls, bytes
//!    above ASCII) are kept, and such raw bytes are escaped, so `ü` and `%C3%BC` are one spelling.
//! 5. ASCII letters are lower-cased (the hex digits of kept escapes too).
//! 6. Empty segments (`//`, a trailing `/`) and `.` segments are dropped; `..` removes the segment
//!    before it and never climbs above the root.
//!
//! The result always starts with `/` and never ends with one, unless it is `/` itself. Route
//! templates may only contain what such a path can: printable ASCII except `/ \ ? # % ; *`.

/// Why a path cannot be normalised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The request target is not an absolute path (`*`, an absolute URI, or empty).
    #[error("request path {0:?} is not an absolute path")]
    NotAbsolute(String),
}

/// Normalises a raw request target as Envoy reports it (query included, not percent-decoded).
pub fn normalize(raw: &str) -> Result<String, PathError> {
    let path = raw.split(['?', '#']).next().unwrap_or_default();
    if !path.starts_with(['/', '\\']) {
        return Err(PathError::NotAbsolute(raw.to_owned()));
    }
    if is_normal(path) {
        return Ok(path.to_owned());
    }
    Ok(by_the_steps(path))
}

/// Steps 2 to 6 for an absolute path without query or fragment.
fn by_the_steps(path: &str) -> String {
    let mut decoded = String::with_capacity(path.len());
    for segment in slashes_unified(path).split('/') {
        // Step 3: the segment up to its first `;`.
        let segment = segment.split(';').next().unwrap_or_default();
        decode_segment(segment, &mut decoded);
        decoded.push('/');
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                let parent = out.rfind('/').unwrap_or(0);
                out.truncate(parent);
            }
            _ => {
                out.push('/');
                out.push_str(segment);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Whether `path` (after step 1) is already what the steps make of it: the common case, a path
/// of lower-case plain segments, taken without a copy per step.
fn is_normal(path: &str) -> bool {
    if path == "/" {
        return true;
    }
    path.strip_prefix('/').is_some_and(|rest| {
        rest.split('/').all(|segment| {
            !matches!(segment, "" | "." | "..")
                && segment
                    .bytes()
                    .all(|b| is_plain(b) && !b.is_ascii_uppercase())
        })
    })
}

/// Whether a byte may appear as itself in a normalised segment: printable ASCII, except what
/// separates segments, starts a query, fragment or parameter, or starts an escape.
pub fn is_plain(byte: u8) -> bool {
    byte.is_ascii_graphic() && !matches!(byte, b'/' | b'\\' | b'?' | b'#' | b'%' | b';')
}

/// Step 2: every raw backslash and escaped slash or backslash becomes `/`.
fn slashes_unified(path: &str) -> std::borrow::Cow<'_, str> {
    let bytes = path.as_bytes();
    let is_slash_escape = |i: usize| {
        bytes[i] == b'%'
            && matches!(
                bytes.get(i + 1..i + 3),
                Some([b'2', b'f' | b'F'] | [b'5', b'c' | b'C'])
            )
    };
    if !(0..bytes.len()).any(|i| bytes[i] == b'\\' || is_slash_escape(i)) {
        return path.into();
    }
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if is_slash_escape(i) {
            out.push('/');
            i += 3;
            continue;
        }
        let next = path[i..].chars().next().unwrap_or_default();
        out.push(if next == '\\' { '/' } else { next });
        i += next.len_utf8();
    }
    out.into()
}

/// Steps 4 and 5 for one segment.
fn decode_segment(segment: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let escape = |byte: u8, out: &mut String| {
        out.push('%');
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    };
    let bytes = segment.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        let escaped = (byte == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| Some((hex_value(hex[0])? << 4) | hex_value(hex[1])?));
        match escaped {
            Some(b) if is_plain(b) => out.push(char::from(b.to_ascii_lowercase())),
            Some(b) => escape(b, out),
            None if is_plain(byte) => out.push(char::from(byte.to_ascii_lowercase())),
            // A `%` that starts no escape is data: spelled as its own escape.
            None => escape(byte, out),
        }
        i += if escaped.is_some() { 3 } else { 1 };
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).map(|v| v as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn norm(raw: &str) -> String {
        normalize(raw).expect(raw)
    }

    #[test]
    fn examples() {
        assert_eq!(norm("/v1/campaigns/42?x=1"), "/v1/campaigns/42");
        assert_eq!(norm("//v1///campaigns//42/"), "/v1/campaigns/42");
        assert_eq!(norm("/V1/Campaigns/42"), "/v1/campaigns/42");
        assert_eq!(norm("/v1/./campaigns/x/../42"), "/v1/campaigns/42");
        assert_eq!(norm("/v1/%61nalytics"), "/v1/analytics");
        assert_eq!(norm("/v1/analytics%2Fdaily"), "/v1/analytics/daily");
        assert_eq!(norm("/v1/analytics%5cdaily"), "/v1/analytics/daily");
        assert_eq!(norm("/v1\\analytics\\daily"), "/v1/analytics/daily");
        assert_eq!(norm("/v1/%2e%2e/%2E/admin"), "/admin");
        assert_eq!(norm("/../../x"), "/x");
        assert_eq!(norm("/"), "/");
        assert_eq!(norm("/?"), "/");
        assert_eq!(norm("/;x"), "/");
        assert_eq!(norm("/v1/a%20b"), "/v1/a%20b");
        assert_eq!(norm("/v1/a b"), "/v1/a%20b");
        assert_eq!(norm("/v1/a%2"), "/v1/a%252");
        assert_eq!(norm("/v1/100%"), "/v1/100%25");
        assert_eq!(norm("/v1/ü%C3%BC"), "/v1/%c3%bc%c3%bc");
        // Path parameters, as servlet containers strip them.
        assert_eq!(norm("/v1;x/analytics"), "/v1/analytics");
        assert_eq!(
            norm("/v1/campaigns/1/statistics;jsessionid=a/"),
            "/v1/campaigns/1/statistics"
        );
        assert_eq!(norm("/v1/..;/admin"), "/admin");
        assert_eq!(
            norm("/v1/a;x%2Fy/b"),
            "/v1/a/y/b",
            "an escaped slash ends the parameter"
        );
        // Escapes of characters a template may hold are decoded; structural ones are kept.
        assert_eq!(norm("/v1/items%3Asearch"), "/v1/items:search");
        assert_eq!(
            norm("/v1/a%3Bb/c%3fd/e%23f/g%25h"),
            "/v1/a%3bb/c%3fd/e%23f/g%25h"
        );
    }

    #[test]
    fn non_absolute_targets_are_refused() {
        for raw in ["", "*", "v1/x", "http://h/v1", "?x=/v1"] {
            assert_eq!(normalize(raw), Err(PathError::NotAbsolute(raw.to_owned())));
        }
    }

    /// Every character a normalised segment holds as itself.
    const PLAIN: &str =
        "!\"$&'()*+,-.0123456789:<=>@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmnopqrstuvwxyz{|}~";

    /// A segment of plain characters, or of any text (space, `ü`, `%`...), never `.` or `..`.
    fn segment() -> impl Strategy<Value = String> {
        let plain = prop::collection::vec(prop::sample::select(PLAIN.as_bytes()), 1..8)
            .prop_map(|b| String::from_utf8(b).unwrap());
        prop_oneof![4 => plain, 1 => "[a-z ü%€]{1,6}"]
            .prop_filter("not a dot segment", |s| s != "." && s != "..")
    }

    fn canonical_path() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(segment(), 0..6)
    }

    /// The path whose segments are these texts: `%` as data is written `%25`.
    fn join(segments: &[String]) -> String {
        let segments: Vec<String> = segments.iter().map(|s| s.replace('%', "%25")).collect();
        format!("/{}", segments.join("/"))
    }

    /// One spelling of a segment: each byte as itself (letters in either case) or escaped (hex in
    /// either case), as chosen by `mask`. Escaping `%` itself is the only way to write it as data.
    fn respell(segment: &str, mask: &[u8]) -> String {
        let mut out = String::new();
        for (i, c) in segment.chars().enumerate() {
            let choice = mask[i % mask.len()];
            let mut utf8 = [0; 4];
            let bytes = c.encode_utf8(&mut utf8).as_bytes();
            let escape = c == '%' || choice.is_multiple_of(3);
            if escape {
                for b in bytes {
                    out.push_str(&if choice.is_multiple_of(2) {
                        format!("%{b:02X}")
                    } else {
                        format!("%{b:02x}")
                    });
                }
            } else if c.is_ascii_alphabetic() && choice.is_multiple_of(2) {
                out.push(c.to_ascii_uppercase());
            } else {
                out.push(c);
            }
        }
        out
    }

    /// What may separate segments: a slash, a backslash, either escaped, or several.
    fn separator() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec!["/", "\\", "%2F", "%2f", "%5C", "%5c"]),
            1..3,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        /// A path the shortcut takes is one the steps leave as it is (some they leave as they are
        /// go the long way, `/%25` for one), so normalising with it is normalising without it.
        #[test]
        fn the_shortcut_takes_only_normal_paths(path in "/[a-zA-Z0-9./;%\\\\_-]{0,12}") {
            prop_assert!(!is_normal(&path) || by_the_steps(&path) == path);
            prop_assert_eq!(normalize(&path).unwrap(), by_the_steps(&path));
        }

        #[test]
        fn lower_case_plain_paths_take_the_shortcut(path in "(/[a-z0-9_-]{1,6}){1,4}") {
            prop_assert!(is_normal(&path));
        }
    }

    proptest! {
        #[test]
        fn idempotent(raw in "/[ -~üß]{0,40}") {
            let once = norm(&raw);
            prop_assert_eq!(norm(&once), once.clone());
            prop_assert!(once.starts_with('/'));
            prop_assert!(once == "/" || !once.ends_with('/'));
            prop_assert!(!once.contains("//"));
            prop_assert!(once.bytes().all(|b| b == b'/' || is_plain(b) || b == b'%' || b == b';'));
        }

        #[test]
        fn query_and_fragment_never_change_the_path(segs in canonical_path(), query in "[ -~]{0,20}") {
            let path = join(&segs);
            prop_assert_eq!(norm(&format!("{path}?{query}")), norm(&path));
            prop_assert_eq!(norm(&format!("{path}#{query}")), norm(&path));
        }

        #[test]
        fn every_spelling_of_a_path_is_one_path(
            segs in canonical_path(),
            separators in prop::collection::vec(separator(), 6),
            dots in prop::collection::vec(any::<bool>(), 6),
            detours in prop::collection::vec(any::<bool>(), 6),
            params in prop::collection::vec(prop::option::of("[!-.0-~&&[^/\\\\?#]]{0,6}"), 6),
            masks in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..8), 6),
            trailing in any::<bool>(),
        ) {
            let canonical = norm(&join(&segs));
            // A request target starts with a real slash; any separator may follow.
            let mut odd = String::from("/");
            for (i, seg) in segs.iter().enumerate() {
                odd.push_str(&separators[i]);
                if dots[i] { odd.push_str("./"); }
                if detours[i] { odd.push_str("detour;p=1/../"); }
                odd.push_str(&respell(seg, &masks[i]));
                if let Some(param) = &params[i] {
                    odd.push(';');
                    odd.push_str(param);
                }
            }
            if trailing { odd.push('/'); }
            prop_assert_eq!(norm(&odd), canonical);
        }

        #[test]
        fn dot_dot_never_climbs_above_the_root(ups in 1usize..6, segs in canonical_path()) {
            let raw = format!("{}{}", "/..".repeat(ups), join(&segs));
            prop_assert_eq!(norm(&raw), norm(&join(&segs)));
        }
    }
}
