//! Reading what a rate-limit decision needs out of Envoy's `CheckRequest`.

use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;

/// The parts of an HTTP request that decide its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpCheck<'a> {
    /// Request method as sent (Envoy sends it upper-case).
    pub method: &'a str,
    /// Raw request target, query included.
    pub path: &'a str,
    /// The API key header's value, if present and not blank.
    pub api_key: Option<&'a str>,
}

/// Why a `CheckRequest` cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No `attributes.request.http`.
    #[error("the check request carries no HTTP request attributes")]
    NoHttpAttributes,
    /// Neither `method` nor a `:method` header.
    #[error("the HTTP request has no method")]
    NoMethod,
    /// Neither `path` nor a `:path` header.
    #[error("the HTTP request has no path")]
    NoPath,
}

impl<'a> HttpCheck<'a> {
    /// Extracts method, path and API key. `api_key_header` must be lower-case.
    pub fn from_request(
        request: &'a CheckRequest,
        api_key_header: &str,
    ) -> Result<Self, RequestError> {
        let http = request
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .ok_or(RequestError::NoHttpAttributes)?;
        let method = non_empty(&http.method)
            .or_else(|| header(http, ":method"))
            .ok_or(RequestError::NoMethod)?;
        let path = non_empty(&http.path)
            .or_else(|| header(http, ":path"))
            .ok_or(RequestError::NoPath)?;
        let api_key = header(http, api_key_header)
            .map(str::trim)
            .filter(|k| !k.is_empty());
        Ok(Self {
            method,
            path,
            api_key,
        })
    }
}

fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

/// A header from the lower-cased `headers` map or, when the filter sets `encode_raw_headers`, from
/// `header_map` (where the value may be in `raw_value`).
fn header<'a>(http: &'a HttpRequest, name: &str) -> Option<&'a str> {
    if let Some(value) = http.headers.get(name) {
        return Some(value);
    }
    http.header_map
        .as_ref()?
        .headers
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))
        .and_then(|h| non_empty(&h.value).or_else(|| std::str::from_utf8(&h.raw_value).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, attribute_context};

    fn request(http: HttpRequest) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(attribute_context::Request {
                    http: Some(http),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn reads_the_fields_envoy_fills() {
        let req = request(HttpRequest {
            method: "GET".into(),
            path: "/v1/users?x=1".into(),
            headers: [("x-api-key".to_owned(), " k1 ".to_owned())].into(),
            ..Default::default()
        });
        let check = HttpCheck::from_request(&req, "x-api-key").unwrap();
        assert_eq!(
            check,
            HttpCheck {
                method: "GET",
                path: "/v1/users?x=1",
                api_key: Some("k1")
            }
        );
    }

    #[test]
    fn falls_back_to_pseudo_headers_and_raw_header_map() {
        let req = request(HttpRequest {
            header_map: Some(HeaderMap {
                headers: vec![
                    HeaderValue {
                        key: ":method".into(),
                        raw_value: b"POST".to_vec(),
                        ..Default::default()
                    },
                    HeaderValue {
                        key: ":path".into(),
                        raw_value: b"/v1/x".to_vec(),
                        ..Default::default()
                    },
                    HeaderValue {
                        key: "X-Api-Key".into(),
                        raw_value: b"k2".to_vec(),
                        ..Default::default()
                    },
                ],
            }),
            ..Default::default()
        });
        let check = HttpCheck::from_request(&req, "x-api-key").unwrap();
        assert_eq!(
            check,
            HttpCheck {
                method: "POST",
                path: "/v1/x",
                api_key: Some("k2")
            }
        );
    }

    #[test]
    fn blank_keys_count_as_missing_and_missing_parts_are_named() {
        let blank = request(HttpRequest {
            method: "GET".into(),
            path: "/v1/x".into(),
            headers: [("x-api-key".to_owned(), "  ".to_owned())].into(),
            ..Default::default()
        });
        assert_eq!(
            HttpCheck::from_request(&blank, "x-api-key")
                .unwrap()
                .api_key,
            None
        );
        assert_eq!(
            HttpCheck::from_request(&CheckRequest::default(), "x-api-key"),
            Err(RequestError::NoHttpAttributes)
        );
        let no_path = request(HttpRequest {
            method: "GET".into(),
            ..Default::default()
        });
        assert_eq!(
            HttpCheck::from_request(&no_path, "x-api-key"),
            Err(RequestError::NoPath)
        );
        let no_method = request(HttpRequest {
            path: "/".into(),
            ..Default::default()
        });
        assert_eq!(
            HttpCheck::from_request(&no_method, "x-api-key"),
            Err(RequestError::NoMethod)
        );
    }
}
