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
const PREFIX_LEN: usize = 5;

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
mod tests {
    use super::*;
    use crate::check::request::RequestError;
    use crate::policy::limit::Limit;
    use envoy_types::ext_authz::v3::pb::{CheckResponse, HeaderValueOption, HttpResponse};
    use prost::Message;
    use std::num::NonZeroU32;
    use std::time::Duration;

    fn quota(remaining: u32) -> Quota {
        let limit = Limit {
            requests: NonZeroU32::new(30).unwrap(),
            window: Duration::from_secs(60),
        };
        // Reset at 1 700 000 060 000 ms, 41.5 s from now: Retry-After 42.
        let reset_micros = 1_700_000_060_000_000;
        let now_micros = reset_micros - 41_500_000;
        Quota {
            limit,
            remaining,
            reset_micros,
            now_micros,
            windows: [
                WindowQuota {
                    limit: Limit {
                        requests: NonZeroU32::new(5).unwrap(),
                        window: Duration::from_secs(1),
                    },
                    remaining: 4,
                    reset_micros: now_micros,
                },
                WindowQuota {
                    limit,
                    remaining,
                    reset_micros,
                },
            ]
            .into(),
        }
    }

    /// The answer as Envoy reads it, after checking its gRPC frame.
    fn render(
        verdict: &Verdict,
        subject: Option<&Subject>,
        api_key_header: &str,
        style: HeaderStyle,
    ) -> CheckResponse {
        let rendered = super::render(verdict, subject, api_key_header, style);
        let message = rendered.message().to_vec();
        let frame = rendered.into_frame();
        assert_eq!(frame[0], 0, "uncompressed");
        assert_eq!(frame[1..5], (message.len() as u32).to_be_bytes());
        CheckResponse::decode(&message[..]).expect("a CheckResponse")
    }

    fn headers(options: &[HeaderValueOption]) -> Vec<(String, String, i32)> {
        options
            .iter()
            .map(|o| {
                let h = o.header.as_ref().unwrap();
                #[allow(deprecated)] // Checking that the deprecated field stays unset.
                let append = o.append;
                assert_eq!(append, None, "append is deprecated and must stay unset");
                (h.key.clone(), h.value.clone(), o.append_action)
            })
            .collect()
    }

    #[test]
    fn allowed_adds_three_overwriting_response_headers() {
        let response = render(
            &Verdict::Allowed(quota(7)),
            Some(&Subject::default()),
            "x-api-key",
            HeaderStyle::XRateLimit,
        );
        assert_eq!(response.status.unwrap().code, 0);
        let Some(HttpResponse::OkResponse(ok)) = response.http_response else {
            panic!()
        };
        let overwrite = HeaderAppendAction::OverwriteIfExistsOrAdd as i32;
        assert_eq!(
            headers(&ok.response_headers_to_add),
            vec![
                ("x-ratelimit-limit".into(), "30".into(), overwrite),
                ("x-ratelimit-remaining".into(), "7".into(), overwrite),
                (
                    "x-ratelimit-reset".into(),
                    "1700000060000".into(),
                    overwrite
                ),
            ]
        );
        assert!(
            ok.headers.is_empty(),
            "nothing is added to the upstream request"
        );
    }

    #[test]
    fn rate_limited_is_a_429_with_retry_after_and_a_json_body() {
        let response = render(
            &Verdict::Denied(quota(0)),
            Some(&Subject::default()),
            "x-api-key",
            HeaderStyle::XRateLimit,
        );
        assert_ne!(response.status.unwrap().code, 0);
        let Some(HttpResponse::DeniedResponse(denied)) = response.http_response else {
            panic!()
        };
        assert_eq!(denied.status.unwrap().code, 429);
        let names: Vec<_> = headers(&denied.headers)
            .into_iter()
            .map(|h| (h.0, h.1))
            .collect();
        assert_eq!(
            names,
            vec![
                ("x-ratelimit-limit".into(), "30".into()),
                ("x-ratelimit-remaining".into(), "0".into()),
                ("x-ratelimit-reset".into(), "1700000060000".into()),
                ("retry-after".into(), "42".into()),
                ("content-type".into(), "application/json".into()),
            ]
        );
        assert_eq!(
            denied.body,
            r#"{"error":"rate_limited","message":"Rate limit of 30 requests / 60s exceeded; retry after 42 s.","limit":30,"window_ms":60000,"retry_after_seconds":42,"reset_ms":1700000060000}"#
        );
    }

    #[test]
    fn the_ietf_fields_describe_every_window_alone_or_beside_the_x_headers() {
        let names_and_values = |style, verdict: &Verdict| {
            let response = render(verdict, Some(&Subject::default()), "x-api-key", style);
            let options = match response.http_response {
                Some(HttpResponse::OkResponse(ok)) => ok.response_headers_to_add,
                Some(HttpResponse::DeniedResponse(denied)) => denied.headers,
                other => panic!("{other:?}"),
            };
            headers(&options)
                .into_iter()
                .map(|h| (h.0, h.1))
                .collect::<Vec<(String, String)>>()
        };
        let policy = (
            "ratelimit-policy".to_owned(),
            r#""1s";q=5;w=1, "1m";q=30;w=60"#.to_owned(),
        );
        assert_eq!(
            names_and_values(HeaderStyle::Ietf, &Verdict::Allowed(quota(7))),
            vec![
                policy.clone(),
                ("ratelimit".into(), r#""1s";r=4;t=0, "1m";r=7;t=42"#.into()),
            ]
        );
        let denied = names_and_values(HeaderStyle::Ietf, &Verdict::Denied(quota(0)));
        assert_eq!(denied[0], policy);
        assert_eq!(denied[2], ("retry-after".into(), "42".into()));
        let both = names_and_values(HeaderStyle::Both, &Verdict::ShadowDenied(quota(0)));
        let names: Vec<&str> = both.iter().map(|h| h.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "x-ratelimit-limit",
                "x-ratelimit-remaining",
                "x-ratelimit-reset",
                "ratelimit-policy",
                "ratelimit"
            ]
        );
    }

    #[test]
    fn the_decision_metadata_is_sent_unless_it_is_off() {
        let verdict = Verdict::Allowed(quota(7));
        let on = render(
            &verdict,
            Some(&Subject::default()),
            "k",
            HeaderStyle::XRateLimit,
        );
        let fields = on.dynamic_metadata.expect("metadata").fields;
        assert_eq!(
            fields.len(),
            4,
            "decision, limit, remaining, reset: {fields:?}"
        );
        let off = render(&verdict, None, "k", HeaderStyle::XRateLimit);
        assert_eq!(off.dynamic_metadata, None);
    }

    #[test]
    fn failures_and_unlimited_requests_carry_no_rate_limit_headers() {
        for verdict in [Verdict::NotLimited, Verdict::FailedOpen] {
            let response = render(
                &verdict,
                Some(&Subject::default()),
                "x-api-key",
                HeaderStyle::Both,
            );
            assert_eq!(response.status.unwrap().code, 0);
            let Some(HttpResponse::OkResponse(ok)) = response.http_response else {
                panic!()
            };
            assert!(ok.response_headers_to_add.is_empty());
        }
        let expectations = [
            (Verdict::Unauthenticated, 401, "missing_api_key"),
            (Verdict::AmbiguousKey, 400, "ambiguous_api_key"),
            (
                Verdict::BadRequest(RequestError::NoPath),
                400,
                "bad_request",
            ),
            (Verdict::FailedClosed, 503, "rate_limit_unavailable"),
        ];
        for (verdict, status, error) in expectations {
            let response = render(
                &verdict,
                Some(&Subject::default()),
                "x-api-key",
                HeaderStyle::Both,
            );
            assert_ne!(response.status.unwrap().code, 0);
            let Some(HttpResponse::DeniedResponse(denied)) = response.http_response else {
                panic!()
            };
            assert_eq!(denied.status.unwrap().code, status);
            assert!(denied.body.contains(error), "{}", denied.body);
            assert_eq!(headers(&denied.headers).len(), 1, "content-type only");
        }
    }
}
