//! Path normalisation: every spelling of one endpoint must land in the same bucket.
//!
//! The rules, applied in this order (the README repeats them for operators):
//! 1. The query string and fragment are dropped (`?` or `#` and everything after).
//! 2. Percent-escapes are decoded once when they stand for an unreserved character
//!    (`A-Z a-z 0-9 - . _ ~`) or for a slash (`%2F`, and `%5C` which many servers treat as one);
//!    every other escape is kept as it is.
//! 3. ASCII letters are lower-cased.
//! 4. Empty segments (`//`, a trailing `/`) and `.` segments are dropped; `..` removes the segment
//!    before it and never climbs above the root.
//!
//! The result always starts with `/` and never ends with one, unless it is `/` itself.

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
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute(raw.to_owned()));
    }
    let decoded = decode_unreserved(path);
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
    Ok(out)
}

/// Steps 2 and 3: decodes escapes of unreserved characters and slashes, lower-cases ASCII letters.
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        let escaped = (byte == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| Some((hex_value(hex[0])? << 4) | hex_value(hex[1])?));
        if let Some(decoded) = escaped {
            match decoded {
                b'/' | b'\\' => out.push(b'/'),
                b if is_unreserved(b) => out.push(b.to_ascii_lowercase()),
                _ => out.extend(bytes[i..i + 3].iter().map(u8::to_ascii_lowercase)),
            }
            i += 3;
            continue;
        }
        out.push(byte.to_ascii_lowercase());
        i += 1;
    }
    // Only ASCII bytes were replaced, by ASCII bytes, so the input's UTF-8 is intact.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).map(|v| v as u8)
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
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
        assert_eq!(norm("/v1/%2e%2e/%2E/admin"), "/admin");
        assert_eq!(norm("/../../x"), "/x");
        assert_eq!(norm("/"), "/");
        assert_eq!(norm("/?"), "/");
        assert_eq!(norm("/v1/a%20b"), "/v1/a%20b");
        assert_eq!(norm("/v1/a%2"), "/v1/a%2");
        assert_eq!(norm("/v1/ü%C3%BC"), "/v1/ü%c3%bc");
    }

    #[test]
    fn non_absolute_targets_are_refused() {
        for raw in ["", "*", "v1/x", "http://h/v1", "?x=/v1"] {
            assert_eq!(normalize(raw), Err(PathError::NotAbsolute(raw.to_owned())));
        }
    }

    /// A path segment: letters of both cases, digits and a few unreserved punctuation marks.
    fn segment() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_~-]{1,8}"
    }

    fn canonical_path() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(segment(), 0..6)
    }

    fn join(segments: &[String]) -> String {
        format!("/{}", segments.join("/"))
    }

    /// Percent-encodes every unreserved character with probability 1/2, in random hex case.
    fn encode_some(text: &str, mask: &[bool]) -> String {
        text.chars()
            .zip(mask.iter().cycle())
            .map(|(c, &encode)| {
                if encode && c.is_ascii_alphanumeric() {
                    if c.is_ascii_digit() {
                        format!("%{:02X}", c as u8)
                    } else {
                        format!("%{:02x}", c as u8)
                    }
                } else {
                    c.to_string()
                }
            })
            .collect()
    }

    proptest! {
        #[test]
        fn idempotent(raw in "/[ -~]{0,40}") {
            let once = norm(&raw);
            prop_assert_eq!(norm(&once), once.clone());
            prop_assert!(once.starts_with('/'));
            prop_assert!(once == "/" || !once.ends_with('/'));
            prop_assert!(!once.contains("//"));
        }

        #[test]
        fn query_and_fragment_never_change_the_path(segs in canonical_path(), query in "[ -~]{0,20}") {
            let path = join(&segs);
            prop_assert_eq!(norm(&format!("{path}?{query}")), norm(&path));
            prop_assert_eq!(norm(&format!("{path}#{query}")), norm(&path));
        }

        #[test]
        fn slashes_dots_case_and_escapes_are_spellings_of_one_path(
            segs in canonical_path(),
            slashes in prop::collection::vec(1usize..4, 6),
            dots in prop::collection::vec(any::<bool>(), 6),
            detours in prop::collection::vec(any::<bool>(), 6),
            upper in prop::collection::vec(any::<bool>(), 6),
            encode in prop::collection::vec(any::<bool>(), 1..16),
            trailing in any::<bool>(),
        ) {
            let canonical = norm(&join(&segs));
            let mut odd = String::new();
            for (i, seg) in segs.iter().enumerate() {
                odd.push_str(&"/".repeat(slashes[i]));
                if dots[i] { odd.push_str("./"); }
                if detours[i] { odd.push_str("detour/../"); }
                let seg = if upper[i] { seg.to_uppercase() } else { seg.to_lowercase() };
                odd.push_str(&encode_some(&seg, &encode));
            }
            if trailing || odd.is_empty() { odd.push('/'); }
            prop_assert_eq!(norm(&odd), canonical);
        }

        #[test]
        fn an_encoded_slash_is_a_slash(segs in prop::collection::vec(segment(), 2..5), lower in any::<bool>()) {
            let escape = if lower { "%2f" } else { "%2F" };
            let encoded = format!("/{}", segs.join(escape));
            prop_assert_eq!(norm(&encoded), norm(&join(&segs)));
        }

        #[test]
        fn dot_dot_never_climbs_above_the_root(ups in 1usize..6, segs in canonical_path()) {
            let raw = format!("{}{}", "/..".repeat(ups), join(&segs));
            prop_assert_eq!(norm(&raw), norm(&join(&segs)));
        }
    }
}
