//! The admin API's optional bearer token, as configured (`admin.token_file`).
//!
//! The presented token is compared in constant time, so that the time an answer takes tells an
//! attacker nothing about how much of a guess was right. Both sides are hashed with SHA-256 first
//! and the digests compared with `subtle`'s `ConstantTimeEq`: comparing the raw bytes would still
//! leak the token's length (a slice comparison ends at once on a length mismatch), and `subtle` is
//! the constant-time primitive the RustCrypto crates rely on, written to keep the compiler from
//! turning the comparison back into an early exit.

use sha2::{Digest, Sha256};
use std::fmt;
use std::path::PathBuf;
use subtle::ConstantTimeEq;

/// A token read from `admin.token_file`; only its digest is kept.
#[derive(Clone)]
pub struct AdminToken {
    /// The file it was read from, for display.
    pub path: PathBuf,
    digest: [u8; 32],
}

/// Same file and same token: a reload that changes either needs a restart. Not a check of a
/// caller's token, so no constant-time comparison is needed.
impl PartialEq for AdminToken {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.digest == other.digest
    }
}

/// Why a token file's content cannot be a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Nothing but whitespace.
    #[error("holds no token")]
    Empty,
    /// A byte that an HTTP header value cannot carry as it is.
    #[error("the token must be printable ASCII without spaces")]
    NotPrintable,
}

impl AdminToken {
    /// A token read from `path`; `token` is the file's text without surrounding whitespace.
    pub fn new(path: PathBuf, token: &str) -> Result<Self, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::NotPrintable);
        }
        Ok(Self {
            path,
            digest: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// Whether `presented` is the token, in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        presented.ct_eq(&self.digest).into()
    }
}

/// The path only: not even the digest belongs in a log line.
impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AdminToken({})", self.path.display())
    }
}
