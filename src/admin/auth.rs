//! The admin API's optional bearer token.
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
use tonic::{Request, Status};

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

/// Refuses admin calls without the configured token with UNAUTHENTICATED; lets every call through
/// when no token is configured.
#[derive(Clone)]
pub struct BearerAuth {
    token: Option<AdminToken>,
}

impl BearerAuth {
    /// Asks for `token`, or for nothing.
    pub fn new(token: Option<AdminToken>) -> Self {
        Self { token }
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.token else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, presented)| presented.trim());
        match presented {
            Some(presented) if token.matches(presented) => Ok(request),
            Some(_) => Err(Status::unauthenticated("wrong admin token")),
            None => Err(Status::unauthenticated(
                "missing admin token: send authorization: Bearer <token>",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    fn call(auth: &mut BearerAuth, header: Option<&str>) -> Result<(), tonic::Code> {
        let mut request = Request::new(());
        if let Some(header) = header {
            request
                .metadata_mut()
                .insert("authorization", header.parse().unwrap());
        }
        auth.call(request).map(drop).map_err(|s| s.code())
    }

    #[test]
    fn only_the_configured_token_passes() {
        let token = AdminToken::new("t".into(), "s3cret-token").unwrap();
        let mut auth = BearerAuth::new(Some(token));
        assert_eq!(call(&mut auth, Some("Bearer s3cret-token")), Ok(()));
        assert_eq!(call(&mut auth, Some("bearer s3cret-token")), Ok(()));
        for wrong in [
            None,
            Some("Bearer s3cret-tokeN"),
            Some("Bearer s3cret-token2"),
            Some("Bearer "),
            Some("Basic s3cret-token"),
            Some("s3cret-token"),
        ] {
            assert_eq!(
                call(&mut auth, wrong),
                Err(tonic::Code::Unauthenticated),
                "{wrong:?}"
            );
        }
        let mut open = BearerAuth::new(None);
        assert_eq!(call(&mut open, None), Ok(()));
    }

    #[test]
    fn tokens_are_checked_and_never_printed() {
        assert_eq!(
            AdminToken::new("t".into(), "").unwrap_err(),
            TokenError::Empty
        );
        assert_eq!(
            AdminToken::new("t".into(), "a b").unwrap_err(),
            TokenError::NotPrintable
        );
        let token = AdminToken::new("/etc/tollgate/admin-token".into(), "s3cret").unwrap();
        let shown = format!("{token:?}");
        assert_eq!(shown, "AdminToken(/etc/tollgate/admin-token)");
    }
}
