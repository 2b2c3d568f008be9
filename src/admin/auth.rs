//! The admin API's bearer-token check: every call must carry the configured token
//! ([`AdminToken`], compared in constant time), or none is asked for.

use crate::config::AdminToken;
use tonic::{Request, Status};

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
    use crate::config::TokenError;
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
