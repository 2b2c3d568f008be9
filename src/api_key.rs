//! API keys: read once, hashed at once, never stored or printed.
//!
//! A key is read in one place, [`ApiKey::read`], by checks and by the admin API alike: a key the
//! admin API accepts is counted in exactly the bucket a check with that header would use, and a
//! key a check would refuse is refused there too.

use sha2::{Digest, Sha256};
use std::fmt;

/// Bytes of the SHA-256 digest kept in bucket names: 128 bits make accidental collisions between
/// keys practically impossible while keeping Redis key names short.
const DIGEST_BYTES: usize = 16;

/// Hex characters of the digest shown in logs: enough to tell keys apart in an incident, far too
/// few to be useful to anyone who reads the log.
const FINGERPRINT_CHARS: usize = 8;

/// The value of the API key header, as a check reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKey<'a> {
    /// No such header, or only blanks.
    Missing,
    /// Exactly one value, trimmed: printable ASCII without spaces.
    One(&'a str),
    /// More than one value: two headers, or one value with a comma, which is how Envoy joins
    /// repeated headers in the `headers` map. Which one an upstream reads is its choice, so no
    /// bucket may be picked for it.
    Several,
    /// One value holding a byte other than printable ASCII (after trimming ASCII whitespace).
    /// An upstream may trim it with Unicode's rules (a no-break space, an ideographic space) and
    /// see a valid key, while each spelling would be a fresh bucket here: it is refused instead.
    Invalid,
}

impl<'a> ApiKey<'a> {
    /// Reads one value of the key header: ASCII whitespace around it is trimmed (HTTP's optional
    /// whitespace, a trailing newline pasted with the key), and what is left must be printable
    /// ASCII without a comma.
    pub fn read(value: &'a [u8]) -> Self {
        match value.trim_ascii() {
            [] => Self::Missing,
            key if key.contains(&b',') => Self::Several,
            key if key.iter().all(u8::is_ascii_graphic) => {
                // Printable ASCII is UTF-8: the fallback is never taken.
                std::str::from_utf8(key).map_or(Self::Invalid, Self::One)
            }
            _ => Self::Invalid,
        }
    }
}

/// A truncated SHA-256 digest of an API key, in lower-case hex. This is what bucket names and logs
/// carry in place of the key itself.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest([u8; DIGEST_BYTES * 2]);

impl KeyDigest {
    /// Digests a raw API key.
    pub fn of(api_key: &str) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let hash = Sha256::digest(api_key.as_bytes());
        let mut hex = [0u8; DIGEST_BYTES * 2];
        for (i, byte) in hash.iter().take(DIGEST_BYTES).enumerate() {
            hex[2 * i] = HEX[usize::from(byte >> 4)];
            hex[2 * i + 1] = HEX[usize::from(byte & 0x0f)];
        }
        Self(hex)
    }

    /// A digest as [`KeyDigest::as_str`] writes it, read back (from the store's plan
    /// assignments); `None` for anything else.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let bytes: [u8; DIGEST_BYTES * 2] = hex.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            .then_some(Self(bytes))
    }

    /// The full digest, for bucket names.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written into the array.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The short prefix that logs show.
    pub fn fingerprint(&self) -> &str {
        &self.as_str()[..FINGERPRINT_CHARS]
    }
}

/// Only the fingerprint: a digest in a debug print should not be enough to correlate across logs
/// and Redis dumps by accident.
impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyDigest({})", self.fingerprint())
    }
}

impl fmt::Display for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.fingerprint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_trimmed_and_must_be_one_printable_ascii_value() {
        for (value, read) in [
            (&b"K"[..], ApiKey::One("K")),
            (b" \tK\r\n", ApiKey::One("K")),
            (b"", ApiKey::Missing),
            (b" \n\t", ApiKey::Missing),
            (b"K,L", ApiKey::Several),
            (b"K L", ApiKey::Invalid),
            (b"K\x0bL", ApiKey::Invalid),
            (b"K\xc2\xa0", ApiKey::Invalid),
            (b"K\xff", ApiKey::Invalid),
        ] {
            assert_eq!(ApiKey::read(value), read, "{value:?}");
        }
    }

    #[test]
    fn digest_is_the_sha256_prefix_in_hex() {
        // sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        let digest = KeyDigest::of("abc");
        assert_eq!(digest.as_str(), "ba7816bf8f01cfea414140de5dae2223");
        assert_eq!(digest.fingerprint(), "ba7816bf");
    }

    #[test]
    fn a_digest_reads_back_from_its_hex_and_nothing_else_does() {
        let digest = KeyDigest::of("abc");
        assert_eq!(KeyDigest::from_hex(digest.as_str()), Some(digest));
        for bad in ["", "abc", "BA7816BF8F01CFEA414140DE5DAE2223", "#version"] {
            assert_eq!(KeyDigest::from_hex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn printing_never_shows_the_key_or_the_full_digest() {
        let digest = KeyDigest::of("secret-key-123");
        let shown = format!("{digest} {digest:?}");
        assert!(!shown.contains("secret-key-123"));
        assert!(!shown.contains(digest.as_str()));
        assert!(shown.contains(digest.fingerprint()));
    }
}
