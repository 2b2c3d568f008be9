//! Rendering a [`Verdict`] as the `CheckResponse` that makes Envoy send the right headers, and
//! log the decision (its dynamic metadata), encoded as it is written ([`crate::check::wire`]).

use crate::check::metadata::decision_metadata;
use crate::check::report::QuotaReport;
use crate::check::verdict::{Quota, Subject, Verdict, WindowQuota};
use crate::check::wire::Writer;
use crate::policy::headers::HeaderStyle;
use crate::policy::limit::window_name;
use envoy_types::ext_authz::v3::pb::{HeaderAppendAction, HttpStatusCode};
use std::fmt::{self, Display};

/// gRPC status codes carried in `CheckResponse.status`; Envoy only distinguishes zero from not.
mod code {
    pub const OK: i32 = 0;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// Field numbers, from `envoy/service/auth/v3/external_auth.proto` and the messages it uses.
mod tag {
    /// `CheckResponse`: `status` (`google.rpc.Status`, whose `code` is 1), `denied_response`,
    /// `ok_response`, `dynamic_metadata`.
    pub const STATUS: u32 = 1;
    pub const DENIED: u32 = 2;
    pub const OK: u32 = 3;
    pub const DYNAMIC_METADATA: u32 = 4;
    /// `DeniedHttpResponse`: `status` (`HttpStatus`, whose `code` is 1), `headers`, `body`.
    pub const DENIED_STATUS: u32 = 1;
    pub const DENIED_HEADERS: u32 = 2;
    pub const DENIED_BODY: u32 = 3;
    /// `OkHttpResponse.response_headers_to_add`.
    pub const OK_RESPONSE_HEADERS: u32 = 6;
    /// `HeaderValueOption`: `header` (`HeaderValue`: `key` 1, `value` 2), `append_action`.
    pub const HEADER: u32 = 1;
    pub const APPEND_ACTION: u32 = 3;
    /// The code of a `google.rpc.Status`, a `HttpStatus`; the key of a `HeaderValue`.
    pub const FIRST: u32 = 1;
    /// The value of a `HeaderValue`.
    pub const VALUE: u32 = 2;
}

/// The gRPC message prefix: a compression flag and a big-endian `u32` length.
pub const PREFIX_LEN: usize = 5;

/// An encoded `CheckResponse`, in its gRPC message frame.
#[derive(Debug)]
pub struct Rendered(Vec<u8>);

impl Rendered {
    /// The gRPC message: the prefix (uncompressed, and the length), then the `CheckResponse`.
    pub fn into_frame(self) -> Vec<u8> {
        self.0
    }

    /// The `CheckResponse` alone.
    pub fn message(&self) -> &[u8] {
        &self.0[PREFIX_LEN..]
    }
}

/// Renders the answer for Envoy, with the decision and `subject` as its dynamic metadata (for
/// Envoy's access log; none without a subject: `decision_metadata: false`). `api_key_header`
/// names the header in the 401 body.
pub fn render(
    verdict: &Verdict,
    subject: Option<&Subject>,
    api_key_header: &str,
    style: HeaderStyle,
) -> Rendered {
    // Room for an allowed answer with its metadata; a 429 or a report grows it once.
    let mut w = Writer::after(&[0; PREFIX_LEN], 512);
    answer(&mut w, verdict, api_key_header, style);
    if let Some(subject) = subject {
        w.message(tag::DYNAMIC_METADATA, |w| {
            decision_metadata(w, verdict, subject);
        });
    }
    let mut frame = w.into_bytes();
    let len = (frame.len() - PREFIX_LEN) as u32;
    frame[1..PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
    Rendered(frame)
}

/// The status, headers and body Envoy answers or forwards with.
fn answer(w: &mut Writer, verdict: &Verdict, api_key_header: &str, style: HeaderStyle) {
    let no_headers = |_: &mut Writer, _: u32| {};
    match verdict {
        Verdict::NotLimited | Verdict::FailedOpen => ok(w, |_| {}),
        Verdict::Allowed(quota) | Verdict::ShadowDenied(quota) => ok(w, |w| {
            rate_limit_headers(w, tag::OK_RESPONSE_HEADERS, quota, style, false);
        }),
        Verdict::Denied(quota) => denied(
            w,
            (code::RESOURCE_EXHAUSTED, HttpStatusCode::TooManyRequests),
            |w, field| rate_limit_headers(w, field, quota, style, true),
            format_args!(
                r#"{{"error":"rate_limited","message":"Rate limit of {} exceeded; retry after {} s.","limit":{},"window_ms":{},"retry_after_seconds":{},"reset_ms":{}}}"#,
                quota.limit,
                quota.retry_after_secs(),
                quota.limit.requests,
                quota.limit.window.as_millis(),
                quota.retry_after_secs(),
                quota.reset_millis(),
            ),
        ),
        Verdict::Unauthenticated => denied(
            w,
            (code::UNAUTHENTICATED, HttpStatusCode::Unauthorized),
            no_headers,
            format_args!(
                r#"{{"error":"missing_api_key","message":"Send your API key in the {api_key_header} header."}}"#
            ),
        ),
        Verdict::AmbiguousKey => denied(
            w,
            (code::INVALID_ARGUMENT, HttpStatusCode::BadRequest),
            no_headers,
            format_args!(
                r#"{{"error":"ambiguous_api_key","message":"Send exactly one {api_key_header} header, without commas."}}"#
            ),
        ),
        Verdict::BadRequest(error) => denied(
            w,
            (code::INVALID_ARGUMENT, HttpStatusCode::BadRequest),
            no_headers,
            format_args!(
                r#"{{"error":"bad_request","message":"{}"}}"#,
                error.client_message()
            ),
        ),
        Verdict::Reported(report) => reported(w, report, style),
        Verdict::FailedClosed => denied(
            w,
            (code::UNAVAILABLE, HttpStatusCode::ServiceUnavailable),
            no_headers,
            r#"{"error":"rate_limit_unavailable","message":"The rate-limit backend is unavailable; retry later."}"#,
        ),
    }
}

/// The quota endpoint's 200. Envoy answers the request itself for any non-zero code, whatever
/// the HTTP status, so it never reaches the upstream (Envoy counts it as a denial).
fn reported(w: &mut Writer, report: &QuotaReport, style: HeaderStyle) {
    denied(
        w,
        (code::PERMISSION_DENIED, HttpStatusCode::Ok),
        |w, field| {
            rate_limit_headers(w, field, &report.own, style, false);
            header(w, field, "cache-control", "no-store");
        },
        report.body(),
    );
}

/// An OK answer: status code 0 (an empty `Status`, as prost writes it) and the headers `headers`
/// writes into `ok_response`.
fn ok(w: &mut Writer, headers: impl FnOnce(&mut Writer)) {
    w.message(tag::STATUS, |w| w.int32(tag::FIRST, code::OK));
    w.message(tag::OK, headers);
}

/// A denied answer: the gRPC code and HTTP status, the headers `headers` writes (given the field
/// they go in), a JSON content type and `body`.
fn denied(
    w: &mut Writer,
    (grpc_code, status): (i32, HttpStatusCode),
    headers: impl FnOnce(&mut Writer, u32),
    body: impl Display,
) {
    w.message(tag::STATUS, |w| w.int32(tag::FIRST, grpc_code));
    w.message(tag::DENIED, |w| {
        w.message(tag::DENIED_STATUS, |w| w.int32(tag::FIRST, status as i32));
        headers(w, tag::DENIED_HEADERS);
        header(w, tag::DENIED_HEADERS, "content-type", "application/json");
        w.display(tag::DENIED_BODY, body);
    });
}

/// The rate-limit headers of `quota`, as options in `field`.
fn rate_limit_headers(
    w: &mut Writer,
    field: u32,
    quota: &Quota,
    style: HeaderStyle,
    with_retry_after: bool,
) {
    if style.x_ratelimit() {
        let decimal = |value: u64| move |w: &mut Writer| w.decimal(tag::VALUE, value);
        let limit = quota.limit.requests.get().into();
        header_with(w, field, "x-ratelimit-limit", decimal(limit));
        header_with(
            w,
            field,
            "x-ratelimit-remaining",
            decimal(quota.remaining.into()),
        );
        header_with(w, field, "x-ratelimit-reset", decimal(quota.reset_millis()));
    }
    if style.ietf() {
        // draft-ietf-httpapi-ratelimit-headers: one list member per window, named by its length;
        // q and r count slots, w and t are seconds (t rounded up, so never early).
        let windows = &quota.windows[..];
        let policy = fmt::from_fn(|f| {
            members(f, windows, |f, window| {
                let seconds = window.limit.window.as_millis().div_ceil(1000);
                write!(f, "q={};w={seconds}", window.limit.requests)
            })
        });
        header(w, field, "ratelimit-policy", policy);
        let state = fmt::from_fn(|f| {
            members(f, windows, |f, window| {
                let seconds = quota.wait_until(window.reset_micros).div_ceil(1_000_000);
                write!(f, "r={};t={seconds}", window.remaining)
            })
        });
        header(w, field, "ratelimit", state);
    }
    if with_retry_after {
        let seconds = quota.retry_after_secs();
        header_with(w, field, "retry-after", |w| w.decimal(tag::VALUE, seconds));
    }
}

/// A structured-field list of one member per window, named by its length, with the parameters
/// `params` writes: `"1s";q=5;w=1, "1m";q=30;w=60`.
fn members(
    f: &mut fmt::Formatter<'_>,
    windows: &[WindowQuota],
    params: impl Fn(&mut fmt::Formatter<'_>, &WindowQuota) -> fmt::Result,
) -> fmt::Result {
    for (i, window) in windows.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "\"{}\";", window_name(window.limit.window))?;
        params(f, window)?;
    }
    Ok(())
}

/// A header that replaces any of the same name, with `value` as its text.
fn header(w: &mut Writer, field: u32, key: &str, value: impl Display) {
    header_with(w, field, key, |w| w.display(tag::VALUE, value));
}

/// A header that replaces any of the same name: an upstream's own `x-ratelimit-limit` must not
/// end up beside ours. `append` stays unset (deprecated); see the Envoy notes. `value` writes the
/// value's field.
fn header_with(w: &mut Writer, field: u32, key: &str, value: impl FnOnce(&mut Writer)) {
    w.message(field, |w| {
        w.message(tag::HEADER, |w| {
            w.string(tag::FIRST, key);
            value(w);
        });
        w.int32(
            tag::APPEND_ACTION,
            HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        );
    });
}

#[cfg(test)]
mod tests;
