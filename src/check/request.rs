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
    /// W3C `traceparent` when it is given once and was asked for (traces are on); its syntax is
    /// checked by whoever reads it.
    pub traceparent: Option<&'a [u8]>,
}

/// Why a `CheckRequest` cannot be evaluated: answered 400 with [`RequestError::client_message`],
/// except the one that [`fails_closed`](RequestError::fails_closed) (503).
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

impl RequestError {
    /// Whether the check is refused whatever `failure_mode` says (503, `failed_closed`) rather
    /// than answered 400: only [`Overloaded`](Self::Overloaded), which is not the client's
    /// fault, and which failing open would let a flood of large messages use to skip limits.
    pub fn fails_closed(&self) -> bool {
        matches!(self, Self::Overloaded)
    }

    /// The sentence a client reads in a 400's body. It names what is wrong, never what was sent.
    pub fn client_message(&self) -> &'static str {
        match self {
            RequestError::Malformed => "The check request is not a valid CheckRequest message.",
            RequestError::TooLarge { .. } => "The check request is larger than tollgate accepts.",
            RequestError::Compressed => "The check request is compressed; send it uncompressed.",
            RequestError::NoHttpAttributes => "The check request has no HTTP attributes.",
            RequestError::NoMethod => "The request has no method.",
            RequestError::NoPath => "The request has no path.",
            RequestError::NotUtf8 => "The request's method or path is not UTF-8.",
            RequestError::InvalidApiKey => "The API key must be printable ASCII without spaces.",
            RequestError::Overloaded => "tollgate is reading too many large check requests.",
            RequestError::PathNotAbsolute => "The request path is not an absolute path.",
        }
    }
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
        Self::parse_traced(message, api_key_header, plan_header, false)
    }

    /// As [`HttpCheck::parse_with_plan`], and `traceparent` too when `traced`.
    pub fn parse_traced(
        message: &'a [u8],
        api_key_header: &str,
        plan_header: Option<&str>,
        traced: bool,
    ) -> Result<Self, RequestError> {
        let mut seen = Seen::default();
        let names = Names {
            key: api_key_header.as_bytes(),
            plan: plan_header.map(str::as_bytes),
            trace: traced.then_some(TRACEPARENT),
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
        let traceparent = match seen.traceparent {
            Occurrences::One(value) => Some(value),
            _ => None,
        };
        Ok(Self {
            method: text(method)?,
            path: text(path)?,
            api_key,
            preflight: seen.preflight,
            plan,
            traceparent,
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
const PREFLIGHT: &[u8] = FIXED_HEADERS[0].as_bytes();

/// The W3C trace context header.
const TRACEPARENT: &[u8] = FIXED_HEADERS[1].as_bytes();

/// The request headers read besides the configured `api_key_header` and `plan_header`: a proxy
/// that sends the check only some headers (Envoy's `allowed_headers`) must send these too.
pub const FIXED_HEADERS: [&str; 2] = ["access-control-request-method", "traceparent"];

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
    traceparent: Occurrences<'a>,
}

/// The header names the walk looks for, lower-case.
struct Names<'n> {
    key: &'n [u8],
    plan: Option<&'n [u8]>,
    trace: Option<&'n [u8]>,
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
            HTTP_HEADERS => read_header(value.bytes()?, names, seen)?,
            HTTP_HEADER_MAP => for_each(value.bytes()?, 1, |header| {
                read_header_map_entry(header, names, seen)
            })?,
            _ => {}
        }
    }
    Ok(())
}

/// One entry of `headers`, a map: key = 1, value = 2, either may be absent (empty). Envoy
/// lower-cases the keys of this map.
fn read_header<'a>(
    entry: &'a [u8],
    names: &Names<'_>,
    seen: &mut Seen<'a>,
) -> Result<(), Malformed> {
    let (mut name, mut text): (&[u8], &[u8]) = (b"", b"");
    for field in Fields(entry) {
        match field? {
            (1, value) => name = value.bytes()?,
            (2, value) => text = value.bytes()?,
            _ => {}
        }
    }
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
    } else if names.trace == Some(name) {
        seen.traceparent.add(text);
    }
    Ok(())
}

/// One `HeaderValue` of `header_map`: with `encode_raw_headers` the value is in `raw_value`, and
/// names keep their case.
fn read_header_map_entry<'a>(
    header: &'a [u8],
    names: &Names<'_>,
    seen: &mut Seen<'a>,
) -> Result<(), Malformed> {
    let (mut name, mut text, mut raw): (&[u8], &[u8], &[u8]) = (b"", b"", b"");
    for field in Fields(header) {
        match field? {
            (1, value) => name = value.bytes()?,
            (2, value) => text = value.bytes()?,
            (3, value) => raw = value.bytes()?,
            _ => {}
        }
    }
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
    } else if names
        .trace
        .is_some_and(|trace| name.eq_ignore_ascii_case(trace))
    {
        seen.traceparent.add(text);
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

    #[inline]
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
    #[inline]
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

    #[inline]
    fn varint(&mut self) -> Result<u64, Malformed> {
        // One byte: every tag, and every length under 128, of a CheckRequest.
        if let Some((&byte, rest)) = self.0.split_first()
            && byte & 0x80 == 0
        {
            self.0 = rest;
            return Ok(u64::from(byte));
        }
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
mod tests;
