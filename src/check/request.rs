//! Reading what a rate-limit decision needs out of Envoy's `CheckRequest`, straight off the wire.
//!
//! Envoy's `CheckRequest` carries every request header, both peers' addresses, timestamps and
//! metadata. tollgate needs three values, so it walks the protobuf encoding once and keeps slices
//! of the received buffer for the fields it reads; everything else is skipped without being
//! looked at. Nothing is collected per header: the API key is looked for while walking, so the
//! memory a check costs is the received message and a few pointers, whatever the header count
//! (a message of a million empty header entries costs no more than its own bytes).
//!
//! Field numbers are those of Envoy's `external_auth.proto` and `attribute_context.proto`:
//! `CheckRequest.attributes` = 1 → `AttributeContext.request` = 4 → `Request.http` = 2 →
//! `HttpRequest.{method = 2, headers = 3, path = 4, header_map = 13}`, where `headers` is a
//! `map<string, string>` (entries with `key = 1`, `value = 2`) and `header_map` is an
//! `envoy.config.core.v3.HeaderMap` (`headers = 1` of `HeaderValue{key = 1, value = 2,
//! raw_value = 3}`). As in protobuf, a singular message field sent twice is merged and a scalar
//! sent twice keeps its last value. Text is checked for UTF-8 only where tollgate reads it, so a
//! stray byte in some other header cannot turn a check into an error.

use crate::api_key::ApiKey;

/// The parts of an HTTP request that decide its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpCheck<'a> {
    /// Request method as sent (Envoy sends it upper-case).
    pub method: &'a str,
    /// Raw request target, query included.
    pub path: &'a str,
    /// What the API key header holds.
    pub api_key: ApiKey<'a>,
    /// Whether the request carries `access-control-request-method`: with `OPTIONS`, a CORS
    /// preflight, which is never counted.
    pub preflight: bool,
    /// The plan header's value when it is given once, as printable ASCII.
    pub plan: Option<&'a str>,
}

/// Why a `CheckRequest` cannot be evaluated. Each one is answered with a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not a `CheckRequest` in protobuf's wire format (truncated, garbage).
    #[error("the message is not a valid CheckRequest")]
    Malformed,
    /// Larger than the configured limit; refused without being read.
    #[error("the message has {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The size announced by the gRPC frame.
        size: usize,
        /// `max_request_bytes`.
        limit: usize,
    },
    /// Compressed with a `grpc-encoding`, which tollgate never offers.
    #[error("the message is compressed")]
    Compressed,
    /// No `attributes.request.http`.
    #[error("the check request carries no HTTP request attributes")]
    NoHttpAttributes,
    /// Neither `method` nor a `:method` header.
    #[error("the HTTP request has no method")]
    NoMethod,
    /// Neither `path` nor a `:path` header.
    #[error("the HTTP request has no path")]
    NoPath,
    /// The method or the path is not UTF-8.
    #[error("the HTTP request's method or path is not UTF-8")]
    NotUtf8,
    /// The API key holds a byte other than printable ASCII ([`ApiKey::Invalid`]).
    #[error("the API key is not printable ASCII")]
    InvalidApiKey,
    /// The messages being read at once hold the whole bytes budget; answered 503, like an
    /// unavailable store (failing open would let a client whose headers make Envoy's messages
    /// large skip its limits).
    #[error("the messages being read hold the whole read buffer budget")]
    Overloaded,
    /// The request target is not an absolute path (`*`, an absolute URI).
    #[error("the request target is not an absolute path")]
    PathNotAbsolute,
}

impl<'a> HttpCheck<'a> {
    /// Reads method, path and API key out of an encoded `CheckRequest`. `api_key_header` must be
    /// lower-case.
    pub fn parse(message: &'a [u8], api_key_header: &str) -> Result<Self, RequestError> {
        Self::parse_with_plan(message, api_key_header, None)
    }

    /// Reads method, path, API key and the value of `plan_header` (lower-case) when it is given.
    pub fn parse_with_plan(
        message: &'a [u8],
        api_key_header: &str,
        plan_header: Option<&str>,
    ) -> Result<Self, RequestError> {
        let mut seen = Seen::default();
        let names = Names {
            key: api_key_header.as_bytes(),
            plan: plan_header.map(str::as_bytes),
        };
        for_each(message, ATTRIBUTES, |attributes| {
            for_each(attributes, REQUEST, |request| {
                for_each(request, HTTP, |http| {
                    seen.http = true;
                    read_http(http, &names, &mut seen)
                })
            })
        })?;
        if !seen.http {
            return Err(RequestError::NoHttpAttributes);
        }
        let method = non_empty(seen.method)
            .or(seen.pseudo_method.get())
            .ok_or(RequestError::NoMethod)?;
        let path = non_empty(seen.path)
            .or(seen.pseudo_path.get())
            .ok_or(RequestError::NoPath)?;
        let text = |bytes| std::str::from_utf8(bytes).map_err(|_| RequestError::NotUtf8);
        let api_key = match seen.api_key {
            Occurrences::None => ApiKey::Missing,
            Occurrences::Several => ApiKey::Several,
            Occurrences::One(value) => ApiKey::read(value),
        };
        // Set by Envoy from a trusted source: anything but one printable value means no plan.
        let plan = match seen.plan {
            Occurrences::One(value)
                if !value.is_empty() && value.iter().all(u8::is_ascii_graphic) =>
            {
                std::str::from_utf8(value).ok()
            }
            _ => None,
        };
        Ok(Self {
            method: text(method)?,
            path: text(path)?,
            api_key,
            preflight: seen.preflight,
            plan,
        })
    }
}

const ATTRIBUTES: u32 = 1;
const REQUEST: u32 = 4;
const HTTP: u32 = 2;
const HTTP_METHOD: u32 = 2;
const HTTP_HEADERS: u32 = 3;
const HTTP_PATH: u32 = 4;
const HTTP_HEADER_MAP: u32 = 13;

/// The header that makes an `OPTIONS` request a CORS preflight.
const PREFLIGHT: &[u8] = b"access-control-request-method";

/// What the walk has found so far; slices of the message.
#[derive(Default)]
struct Seen<'a> {
    http: bool,
    method: &'a [u8],
    path: &'a [u8],
    pseudo_method: Pseudo<'a>,
    pseudo_path: Pseudo<'a>,
    api_key: Occurrences<'a>,
    preflight: bool,
    plan: Occurrences<'a>,
}

/// The header names the walk looks for, lower-case.
struct Names<'n> {
    key: &'n [u8],
    plan: Option<&'n [u8]>,
}

/// A pseudo-header, the fallback when `method` or `path` is empty. The `headers` map wins over
/// `header_map`, as Envoy fills one or the other.
#[derive(Default)]
struct Pseudo<'a> {
    from_headers: Option<&'a [u8]>,
    from_header_map: Option<&'a [u8]>,
}

impl<'a> Pseudo<'a> {
    fn get(&self) -> Option<&'a [u8]> {
        self.from_headers
            .or(self.from_header_map)
            .and_then(non_empty)
    }
}

/// How often a header was seen, with its value when once.
#[derive(Default)]
enum Occurrences<'a> {
    #[default]
    None,
    One(&'a [u8]),
    Several,
}

impl<'a> Occurrences<'a> {
    fn add(&mut self, value: &'a [u8]) {
        *self = match self {
            Self::None => Self::One(value),
            Self::One(_) | Self::Several => Self::Several,
        };
    }
}

fn read_http<'a>(http: &'a [u8], names: &Names<'_>, seen: &mut Seen<'a>) -> Result<(), Malformed> {
    for field in Fields(http) {
        let (number, value) = field?;
        match number {
            HTTP_METHOD => seen.method = value.bytes()?,
            HTTP_PATH => seen.path = value.bytes()?,
            HTTP_HEADERS => {
                // A map entry: key = 1, value = 2, either may be absent (empty).
                let (mut name, mut text): (&[u8], &[u8]) = (b"", b"");
                for field in Fields(value.bytes()?) {
                    match field? {
                        (1, value) => name = value.bytes()?,
                        (2, value) => text = value.bytes()?,
                        _ => {}
                    }
                }
                // Envoy lower-cases the keys of this map.
                if name == names.key {
                    seen.api_key.add(text);
                } else if names.plan == Some(name) {
                    seen.plan.add(text);
                } else if name == b":method" {
                    seen.pseudo_method.from_headers = Some(text);
                } else if name == b":path" {
                    seen.pseudo_path.from_headers = Some(text);
                } else if name == PREFLIGHT {
                    seen.preflight = true;
                }
            }
            HTTP_HEADER_MAP => for_each(value.bytes()?, 1, |header| {
                let (mut name, mut text, mut raw): (&[u8], &[u8], &[u8]) = (b"", b"", b"");
                for field in Fields(header) {
                    match field? {
                        (1, value) => name = value.bytes()?,
                        (2, value) => text = value.bytes()?,
                        (3, value) => raw = value.bytes()?,
                        _ => {}
                    }
                }
                // With `encode_raw_headers` the value is in `raw_value`; names keep their case.
                let text = if text.is_empty() { raw } else { text };
                if name.eq_ignore_ascii_case(names.key) {
                    seen.api_key.add(text);
                } else if names
                    .plan
                    .is_some_and(|plan| name.eq_ignore_ascii_case(plan))
                {
                    seen.plan.add(text);
                } else if name.eq_ignore_ascii_case(b":method") {
                    seen.pseudo_method.from_header_map.get_or_insert(text);
                } else if name.eq_ignore_ascii_case(b":path") {
                    seen.pseudo_path.from_header_map.get_or_insert(text);
                } else if name.eq_ignore_ascii_case(PREFLIGHT) {
                    seen.preflight = true;
                }
                Ok(())
            })?,
            _ => {}
        }
    }
    Ok(())
}

fn non_empty(bytes: &[u8]) -> Option<&[u8]> {
    (!bytes.is_empty()).then_some(bytes)
}

/// The wire format is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Malformed;

impl From<Malformed> for RequestError {
    fn from(Malformed: Malformed) -> Self {
        RequestError::Malformed
    }
}

/// Calls `f` with the contents of every occurrence of the length-delimited field `number`,
/// checking that every other field is well-formed too.
fn for_each<'a>(
    message: &'a [u8],
    number: u32,
    mut f: impl FnMut(&'a [u8]) -> Result<(), Malformed>,
) -> Result<(), Malformed> {
    for field in Fields(message) {
        let (n, value) = field?;
        if n == number {
            f(value.bytes()?)?;
        }
    }
    Ok(())
}

/// A field's value; only length-delimited contents are kept.
enum Value<'a> {
    Scalar,
    Bytes(&'a [u8]),
}

impl<'a> Value<'a> {
    /// The contents of a field that must be length-delimited (a string, bytes or a message).
    fn bytes(self) -> Result<&'a [u8], Malformed> {
        match self {
            Value::Bytes(bytes) => Ok(bytes),
            Value::Scalar => Err(Malformed),
        }
    }
}

/// The fields of one encoded message, in order. Groups (wire types 3 and 4, absent from proto3)
/// are refused rather than skipped, so nesting never costs recursion.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let field = self.field();
        if field.is_err() {
            // Stop after the first error.
            self.0 = &[];
        }
        Some(field)
    }
}

impl<'a> Fields<'a> {
    fn field(&mut self) -> Result<(u32, Value<'a>), Malformed> {
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| Malformed)?;
        if number == 0 {
            return Err(Malformed);
        }
        let value = match key & 7 {
            0 => self.varint().map(|_| Value::Scalar)?,
            1 => self.take(8).map(|_| Value::Scalar)?,
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| Malformed)?;
                Value::Bytes(self.take(len)?)
            }
            5 => self.take(4).map(|_| Value::Scalar)?,
            _ => return Err(Malformed),
        };
        Ok((number, value))
    }

    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut value = 0u64;
        for (i, &byte) in self.0.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.0 = &self.0[i + 1..];
                return Ok(value);
            }
        }
        Err(Malformed)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], Malformed> {
        if len > self.0.len() {
            return Err(Malformed);
        }
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::{HttpCheck, RequestError};
    use crate::api_key::ApiKey;
    use envoy_types::ext_authz::v3::pb::CheckRequest;
    use envoy_types::pb::envoy::config::core::v3::{
        Address, HeaderMap, HeaderValue, SocketAddress, address,
    };
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer};
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, attribute_context};
    use prost::Message;

    /// Envoy's full message, encoded with envoy-types.
    fn wire(http: HttpRequest) -> Vec<u8> {
        CheckRequest {
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
        }
        .encode_to_vec()
    }

    fn parse(wire: &[u8]) -> Result<HttpCheck<'_>, RequestError> {
        HttpCheck::parse(wire, "x-api-key")
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

    fn get(path: &str, header_map: Vec<HeaderValue>) -> Vec<u8> {
        wire(HttpRequest {
            method: "GET".into(),
            path: path.into(),
            header_map: Some(HeaderMap {
                headers: header_map,
            }),
            ..Default::default()
        })
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
            parse(&req).unwrap(),
            HttpCheck {
                method: "GET",
                path: "/v1/users?x=1",
                api_key: ApiKey::One("k1"),
                preflight: false,
                plan: None,
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
            parse(&pseudo).unwrap(),
            HttpCheck {
                method: "PUT",
                path: "/v1/y",
                api_key: ApiKey::Missing,
                preflight: false,
                plan: None,
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
            parse(&req).unwrap(),
            HttpCheck {
                method: "POST",
                path: "/v1/x",
                api_key: ApiKey::One("k2"),
                preflight: false,
                plan: None,
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
        assert_eq!(parse(&blank).unwrap().api_key, ApiKey::Missing);
        assert_eq!(parse(&[]), Err(RequestError::NoHttpAttributes));
        let no_path = wire(HttpRequest {
            method: "GET".into(),
            ..Default::default()
        });
        assert_eq!(parse(&no_path), Err(RequestError::NoPath));
        let no_method = wire(HttpRequest {
            path: "/".into(),
            ..Default::default()
        });
        assert_eq!(parse(&no_method), Err(RequestError::NoMethod));
    }

    #[test]
    fn text_is_checked_only_where_it_is_read() {
        // `headers` values are strings in Envoy's proto; a raw header map may carry any byte.
        let stray_byte_elsewhere = get(
            "/v1/x",
            vec![raw("x-api-key", b"k3"), raw("cookie", b"\xff\xfe")],
        );
        assert_eq!(
            parse(&stray_byte_elsewhere).unwrap().api_key,
            ApiKey::One("k3")
        );
        let bad_key = get("/v1/x", vec![raw("x-api-key", b"k\xff")]);
        assert_eq!(parse(&bad_key).unwrap().api_key, ApiKey::Invalid);
    }

    #[test]
    fn a_key_is_printable_ascii_or_invalid() {
        // Spaces and tabs around it are trimmed; anything an upstream might trim with Unicode's
        // rules, or any control, makes it invalid rather than a fresh bucket.
        assert_eq!(
            parse(&get("/v1", vec![raw("x-api-key", b" \tK \t")]))
                .unwrap()
                .api_key,
            ApiKey::One("K")
        );
        for odd in [
            &b"K\xc2\xa0"[..], // no-break space
            b"K\xe3\x80\x80",  // ideographic space
            b"K\x0bX",         // vertical tab inside
            b"K X",            // a space inside
            b"K\x1f",
            b"\xe2\x80\x8bK", // zero-width space
        ] {
            assert_eq!(
                parse(&get("/v1", vec![raw("x-api-key", odd)]))
                    .unwrap()
                    .api_key,
                ApiKey::Invalid,
                "{odd:?}"
            );
        }
    }

    #[test]
    fn the_plan_header_is_read_only_when_named_and_given_once() {
        let message = get("/v1/x", vec![raw("X-Plan", b"pro"), raw("x-api-key", b"k")]);
        let read = |plan_header| {
            HttpCheck::parse_with_plan(&message, "x-api-key", plan_header)
                .unwrap()
                .plan
        };
        assert_eq!(read(Some("x-plan")), Some("pro"));
        assert_eq!(read(None), None, "not configured: never read");
        let twice = get("/v1/x", vec![raw("x-plan", b"pro"), raw("x-plan", b"free")]);
        let parsed = HttpCheck::parse_with_plan(&twice, "x-api-key", Some("x-plan")).unwrap();
        assert_eq!(parsed.plan, None, "two values: no plan");
        let empty = get("/v1/x", vec![raw("x-plan", b"")]);
        let parsed = HttpCheck::parse_with_plan(&empty, "x-api-key", Some("x-plan")).unwrap();
        assert_eq!(parsed.plan, None, "empty: no plan");
        let spaced = get("/v1/x", vec![raw("x-plan", b"pro plus")]);
        let parsed = HttpCheck::parse_with_plan(&spaced, "x-api-key", Some("x-plan")).unwrap();
        assert_eq!(parsed.plan, None, "not one printable token: no plan");
    }

    #[test]
    fn a_preflight_is_told_by_its_header() {
        let preflight = get("/v1/x", vec![raw("Access-Control-Request-Method", b"POST")]);
        assert!(parse(&preflight).unwrap().preflight);
        assert!(!parse(&get("/v1/x", vec![])).unwrap().preflight);
        let in_headers = wire(HttpRequest {
            method: "OPTIONS".into(),
            path: "/v1/x".into(),
            headers: headers(&[("access-control-request-method", "GET")]),
            ..Default::default()
        });
        assert!(parse(&in_headers).unwrap().preflight);
    }

    #[test]
    fn a_key_sent_twice_is_ambiguous_in_both_encodings() {
        // Envoy joins repeated headers with a comma in the `headers` map.
        let joined = wire(HttpRequest {
            method: "GET".into(),
            path: "/v1/x".into(),
            headers: headers(&[("x-api-key", "K,other")]),
            ..Default::default()
        });
        assert_eq!(parse(&joined).unwrap().api_key, ApiKey::Several);
        let twice = get(
            "/v1/x",
            vec![raw("x-api-key", b"K"), raw("X-API-KEY", b"other")],
        );
        assert_eq!(parse(&twice).unwrap().api_key, ApiKey::Several);
        let same_twice = get(
            "/v1/x",
            vec![raw("x-api-key", b"K"), raw("x-api-key", b"K")],
        );
        assert_eq!(parse(&same_twice).unwrap().api_key, ApiKey::Several);
        let one_blank = get("/v1/x", vec![raw("x-api-key", b"K"), raw("x-api-key", b"")]);
        assert_eq!(parse(&one_blank).unwrap().api_key, ApiKey::Several);
    }

    #[test]
    fn repeated_map_entries_of_the_key_are_ambiguous() {
        // Two entries of one map key never come from Envoy; protobuf would keep the last, an
        // upstream might read the first. tollgate counts neither.
        let mut http = Vec::new();
        for value in ["first", "last"] {
            let mut entry = Vec::new();
            prost::encoding::string::encode(1, &"x-api-key".to_owned(), &mut entry);
            prost::encoding::string::encode(2, &value.to_owned(), &mut entry);
            prost::encoding::bytes::encode(3, &entry, &mut http);
        }
        prost::encoding::string::encode(2, &"GET".to_owned(), &mut http);
        prost::encoding::string::encode(4, &"/v1/x".to_owned(), &mut http);
        let mut request = Vec::new();
        prost::encoding::bytes::encode(2, &http, &mut request);
        let mut attributes = Vec::new();
        prost::encoding::bytes::encode(4, &request, &mut attributes);
        let mut message = Vec::new();
        prost::encoding::bytes::encode(1, &attributes, &mut message);
        let full = CheckRequest::decode(message.as_slice()).unwrap();
        let http = full.attributes.unwrap().request.unwrap().http.unwrap();
        assert_eq!(http.headers["x-api-key"], "last", "protobuf's own reading");
        assert_eq!(parse(&message).unwrap().api_key, ApiKey::Several);
    }

    #[test]
    fn singular_messages_sent_twice_are_merged_as_protobuf_does() {
        let first = wire(HttpRequest {
            method: "GET".into(),
            headers: headers(&[("x-api-key", "k")]),
            ..Default::default()
        });
        let second = wire(HttpRequest {
            path: "/v1/x".into(),
            ..Default::default()
        });
        let merged = [first, second].concat();
        let full = CheckRequest::decode(merged.as_slice()).unwrap();
        let http = full.attributes.unwrap().request.unwrap().http.unwrap();
        assert_eq!((http.method.as_str(), http.path.as_str()), ("GET", "/v1/x"));
        assert_eq!(
            parse(&merged).unwrap(),
            HttpCheck {
                method: "GET",
                path: "/v1/x",
                api_key: ApiKey::One("k"),
                preflight: false,
                plan: None,
            }
        );
    }

    #[test]
    fn broken_wire_format_is_malformed() {
        let good = wire(HttpRequest {
            method: "GET".into(),
            path: "/v1/x".into(),
            ..Default::default()
        });
        for cut in 1..good.len() {
            let truncated = &good[..cut];
            // Every strict prefix cuts a length-delimited field short.
            assert_eq!(parse(truncated), Err(RequestError::Malformed), "{cut}");
        }
        for garbage in [
            &[0xff][..],
            &[0x0a, 0x80], // length varint never ends
            &[0x00, 0x00], // field number 0
            &[0x0b, 0x0c], // a group
            &[0x08, 0x01], // `attributes` as a varint
            &[
                0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
            ], // 11-byte varint
        ] {
            assert_eq!(parse(garbage), Err(RequestError::Malformed), "{garbage:?}");
        }
    }
}
