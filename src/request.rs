//! Reading what a rate-limit decision needs out of Envoy's `CheckRequest`, straight off the wire.
//!
//! Envoy's `CheckRequest` carries every request header, both peers' addresses, timestamps and
//! metadata. Decoding all of it into envoy-types' structs builds a `HashMap` of owned strings per
//! check (2.7 µs for a typical request, against 1.0 µs here; BENCHMARKS.md). tollgate needs three
//! values, so it decodes a wire-compatible subset of the message: the same field numbers, every
//! other field skipped, and the bytes it keeps are slices of the received buffer, not copies.
//! Text is checked for UTF-8 only where tollgate reads it, so a stray byte in some other header
//! cannot turn a check into a gRPC error.

use bytes::Bytes;

/// `envoy.service.auth.v3.CheckRequest`, reduced to what tollgate reads (field numbers as in
/// Envoy's `external_auth.proto` and `attribute_context.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckRequest {
    /// `attributes`.
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<AttributeContext>,
}

/// `envoy.service.auth.v3.AttributeContext`, reduced.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeContext {
    /// `request`.
    #[prost(message, optional, tag = "4")]
    pub request: Option<Request>,
}

/// `AttributeContext.Request`, reduced.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    /// `http`.
    #[prost(message, optional, tag = "2")]
    pub http: Option<HttpRequest>,
}

/// `AttributeContext.HttpRequest`, reduced.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpRequest {
    /// `method`.
    #[prost(bytes = "bytes", tag = "2")]
    pub method: Bytes,
    /// `headers`, a `map<string, string>`: on the wire, repeated key/value entries.
    #[prost(message, repeated, tag = "3")]
    pub headers: Vec<Header>,
    /// `path`, query included.
    #[prost(bytes = "bytes", tag = "4")]
    pub path: Bytes,
    /// `header_map`, sent instead of `headers` when the filter sets `encode_raw_headers`.
    #[prost(message, optional, tag = "13")]
    pub header_map: Option<HeaderMap>,
}

/// One entry of the `headers` map.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Header {
    /// Lower-case header name.
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    /// Header value.
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// `envoy.config.core.v3.HeaderMap`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderMap {
    /// `headers`.
    #[prost(message, repeated, tag = "1")]
    pub headers: Vec<HeaderValue>,
}

/// `envoy.config.core.v3.HeaderValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderValue {
    /// `key`.
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    /// `value`.
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
    /// `raw_value`, which Envoy fills instead of `value` with `encode_raw_headers`.
    #[prost(bytes = "bytes", tag = "3")]
    pub raw_value: Bytes,
}

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
    /// The method, the path or the API key is not UTF-8.
    #[error("the HTTP request's method, path or API key is not UTF-8")]
    NotUtf8,
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
            .map(<[u8]>::trim_ascii)
            .filter(|k| !k.is_empty());
        let text = |bytes| std::str::from_utf8(bytes).map_err(|_| RequestError::NotUtf8);
        Ok(Self {
            method: text(method)?,
            path: text(path)?,
            api_key: api_key.map(text).transpose()?,
        })
    }
}

fn non_empty(bytes: &[u8]) -> Option<&[u8]> {
    (!bytes.is_empty()).then_some(bytes)
}

/// A header from the lower-cased `headers` map (the last entry wins, as for any protobuf map) or,
/// when the filter sets `encode_raw_headers`, from `header_map` (where the value may be in
/// `raw_value`).
fn header<'a>(http: &'a HttpRequest, name: &str) -> Option<&'a [u8]> {
    if let Some(entry) = http.headers.iter().rev().find(|h| h.key == name.as_bytes()) {
        return Some(&entry.value);
    }
    http.header_map
        .as_ref()?
        .headers
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name.as_bytes()))
        .and_then(|h| non_empty(&h.value).or_else(|| non_empty(&h.raw_value)))
}

#[cfg(test)]
mod tests {
    use super::{CheckRequest, HttpCheck, RequestError};
    use envoy_types::ext_authz::v3::pb::CheckRequest as EnvoyCheckRequest;
    use envoy_types::pb::envoy::config::core::v3::{
        Address, HeaderMap, HeaderValue, SocketAddress, address,
    };
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer};
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, attribute_context};
    use prost::Message;

    /// Envoy's full message, encoded with envoy-types and decoded as tollgate does.
    fn wire(http: HttpRequest) -> CheckRequest {
        let full = EnvoyCheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    address: Some(Address {
                        address: Some(address::Address::SocketAddress(SocketAddress {
                            address: "10.0.0.7".into(),
                            ..Default::default()
                        })),
                    }),
                    principal: "spiffe://cluster.local/ns/shop/sa/web".into(),
                    ..Default::default()
                }),
                request: Some(attribute_context::Request {
                    time: Some(Default::default()),
                    http: Some(http),
                }),
                context_extensions: [("tenant".to_owned(), "a".to_owned())].into(),
                ..Default::default()
            }),
        };
        CheckRequest::decode(full.encode_to_vec().as_slice()).unwrap()
    }

    /// A `header_map` entry whose value is in `raw_value`, as with `encode_raw_headers`.
    fn raw(key: &str, value: &[u8]) -> HeaderValue {
        HeaderValue {
            key: key.into(),
            raw_value: value.to_vec(),
            ..Default::default()
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn reads_the_fields_envoy_fills_and_skips_the_rest() {
        let req = wire(HttpRequest {
            id: "17".into(),
            method: "GET".into(),
            path: "/v1/users?x=1".into(),
            host: "api.example.com".into(),
            headers: headers(&[
                (":authority", "api.example.com"),
                ("user-agent", "curl/8.5.0"),
                ("x-api-key", " k1 "),
                ("accept", "*/*"),
            ]),
            ..Default::default()
        });
        assert_eq!(
            HttpCheck::from_request(&req, "x-api-key").unwrap(),
            HttpCheck {
                method: "GET",
                path: "/v1/users?x=1",
                api_key: Some("k1")
            }
        );
    }

    #[test]
    fn falls_back_to_pseudo_headers_and_raw_header_map() {
        let pseudo = wire(HttpRequest {
            headers: headers(&[(":method", "PUT"), (":path", "/v1/y")]),
            ..Default::default()
        });
        assert_eq!(
            HttpCheck::from_request(&pseudo, "x-api-key").unwrap(),
            HttpCheck {
                method: "PUT",
                path: "/v1/y",
                api_key: None
            }
        );
        let req = wire(HttpRequest {
            header_map: Some(HeaderMap {
                headers: vec![
                    raw(":method", b"POST"),
                    raw(":path", b"/v1/x"),
                    raw("X-Api-Key", b"k2"),
                ],
            }),
            ..Default::default()
        });
        assert_eq!(
            HttpCheck::from_request(&req, "x-api-key").unwrap(),
            HttpCheck {
                method: "POST",
                path: "/v1/x",
                api_key: Some("k2")
            }
        );
    }

    #[test]
    fn blank_keys_count_as_missing_and_missing_parts_are_named() {
        let blank = wire(HttpRequest {
            method: "GET".into(),
            path: "/v1/x".into(),
            headers: headers(&[("x-api-key", "  ")]),
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
        let no_path = wire(HttpRequest {
            method: "GET".into(),
            ..Default::default()
        });
        assert_eq!(
            HttpCheck::from_request(&no_path, "x-api-key"),
            Err(RequestError::NoPath)
        );
        let no_method = wire(HttpRequest {
            path: "/".into(),
            ..Default::default()
        });
        assert_eq!(
            HttpCheck::from_request(&no_method, "x-api-key"),
            Err(RequestError::NoMethod)
        );
    }

    #[test]
    fn text_is_checked_only_where_it_is_read() {
        // `headers` values are strings in Envoy's proto; a raw header map may carry any byte.
        let stray_byte_elsewhere = wire(HttpRequest {
            method: "GET".into(),
            path: "/v1/x".into(),
            header_map: Some(HeaderMap {
                headers: vec![raw("x-api-key", b"k3"), raw("cookie", b"\xff\xfe")],
            }),
            ..Default::default()
        });
        assert_eq!(
            HttpCheck::from_request(&stray_byte_elsewhere, "x-api-key")
                .unwrap()
                .api_key,
            Some("k3")
        );
        let bad_key = wire(HttpRequest {
            method: "GET".into(),
            path: "/v1/x".into(),
            header_map: Some(HeaderMap {
                headers: vec![raw("x-api-key", b"k\xff")],
            }),
            ..Default::default()
        });
        assert_eq!(
            HttpCheck::from_request(&bad_key, "x-api-key"),
            Err(RequestError::NotUtf8)
        );
    }

    #[test]
    fn the_last_of_repeated_map_entries_wins_as_in_protobuf() {
        let entry = |value: &'static str| super::Header {
            key: "x-api-key".into(),
            value: value.into(),
        };
        let wire = CheckRequest {
            attributes: Some(super::AttributeContext {
                request: Some(super::Request {
                    http: Some(super::HttpRequest {
                        method: "GET".into(),
                        path: "/v1/x".into(),
                        headers: vec![entry("first"), entry("last")],
                        header_map: None,
                    }),
                }),
            }),
        }
        .encode_to_vec();
        let full = EnvoyCheckRequest::decode(wire.as_slice()).unwrap();
        let http = full.attributes.unwrap().request.unwrap().http.unwrap();
        assert_eq!(http.headers["x-api-key"], "last");
        let subset = CheckRequest::decode(wire.as_slice()).unwrap();
        assert_eq!(
            HttpCheck::from_request(&subset, "x-api-key")
                .unwrap()
                .api_key,
            Some("last")
        );
    }
}
