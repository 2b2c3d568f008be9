//! Rendering a [`Verdict`] as the `CheckResponse` that makes Envoy send the right headers, and
//! log the decision (its dynamic metadata).

use crate::check::metadata::decision_metadata;
use crate::check::report::QuotaReport;
use crate::check::verdict::{Quota, Subject, Verdict};
use crate::policy::headers::HeaderStyle;
use crate::policy::limit::window_name;
use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, HttpStatusCode, OkHttpResponse,
};
use envoy_types::pb::google::rpc::Status;
use std::fmt::Write;

/// gRPC status codes carried in `CheckResponse.status`; Envoy only distinguishes zero from not.
mod code {
    pub const OK: i32 = 0;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// Renders the answer for Envoy, with the decision and `subject` as its dynamic metadata (for
/// Envoy's access log; none without a subject: `decision_metadata: false`). `api_key_header`
/// names the header in the 401 body.
pub fn render(
    verdict: &Verdict,
    subject: Option<&Subject>,
    api_key_header: &str,
    style: HeaderStyle,
) -> CheckResponse {
    CheckResponse {
        dynamic_metadata: subject.map(|subject| decision_metadata(verdict, subject)),
        ..answer(verdict, api_key_header, style)
    }
}

/// The status, headers and body Envoy answers or forwards with.
fn answer(verdict: &Verdict, api_key_header: &str, style: HeaderStyle) -> CheckResponse {
    match verdict {
        Verdict::NotLimited | Verdict::FailedOpen => ok(Vec::new()),
        Verdict::Allowed(quota) | Verdict::ShadowDenied(quota) => {
            ok(rate_limit_headers(quota, style, false))
        }
        Verdict::Denied(quota) => denied(
            code::RESOURCE_EXHAUSTED,
            HttpStatusCode::TooManyRequests,
            rate_limit_headers(quota, style, true),
            format!(
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
            code::UNAUTHENTICATED,
            HttpStatusCode::Unauthorized,
            Vec::new(),
            format!(
                r#"{{"error":"missing_api_key","message":"Send your API key in the {api_key_header} header."}}"#
            ),
        ),
        Verdict::AmbiguousKey => denied(
            code::INVALID_ARGUMENT,
            HttpStatusCode::BadRequest,
            Vec::new(),
            format!(
                r#"{{"error":"ambiguous_api_key","message":"Send exactly one {api_key_header} header, without commas."}}"#
            ),
        ),
        Verdict::BadRequest(error) => denied(
            code::INVALID_ARGUMENT,
            HttpStatusCode::BadRequest,
            Vec::new(),
            format!(
                r#"{{"error":"bad_request","message":"{}"}}"#,
                error.client_message()
            ),
        ),
        Verdict::Reported(report) => reported(report, style),
        Verdict::FailedClosed => denied(
            code::UNAVAILABLE,
            HttpStatusCode::ServiceUnavailable,
            Vec::new(),
            r#"{"error":"rate_limit_unavailable","message":"The rate-limit backend is unavailable; retry later."}"#.to_owned(),
        ),
    }
}

/// The quota endpoint's 200. Envoy answers the request itself for any non-zero code, whatever
/// the HTTP status, so it never reaches the upstream (Envoy counts it as a denial).
fn reported(report: &QuotaReport, style: HeaderStyle) -> CheckResponse {
    let mut headers = rate_limit_headers(&report.own, style, false);
    headers.push(header("cache-control", "no-store".to_owned()));
    denied(
        code::PERMISSION_DENIED,
        HttpStatusCode::Ok,
        headers,
        report.body(),
    )
}

fn ok(response_headers_to_add: Vec<HeaderValueOption>) -> CheckResponse {
    CheckResponse {
        status: Some(Status {
            code: code::OK,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            response_headers_to_add,
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn denied(
    grpc_code: i32,
    status: HttpStatusCode,
    mut headers: Vec<HeaderValueOption>,
    body: String,
) -> CheckResponse {
    headers.push(header("content-type", "application/json".to_owned()));
    CheckResponse {
        status: Some(Status {
            code: grpc_code,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: status as i32,
            }),
            headers,
            body,
        })),
        ..Default::default()
    }
}

fn rate_limit_headers(
    quota: &Quota,
    style: HeaderStyle,
    with_retry_after: bool,
) -> Vec<HeaderValueOption> {
    let mut headers = Vec::with_capacity(6);
    if style.x_ratelimit() {
        headers.push(header(
            "x-ratelimit-limit",
            quota.limit.requests.to_string(),
        ));
        headers.push(header("x-ratelimit-remaining", quota.remaining.to_string()));
        headers.push(header(
            "x-ratelimit-reset",
            quota.reset_millis().to_string(),
        ));
    }
    if style.ietf() {
        // draft-ietf-httpapi-ratelimit-headers: one list member per window, named by its length;
        // q and r count slots, w and t are seconds (t rounded up, so never early).
        let mut policy = String::new();
        let mut state = String::new();
        for (i, window) in quota.windows.iter().enumerate() {
            let separator = if i == 0 { "" } else { ", " };
            let name = window_name(window.limit.window);
            let _ = write!(
                policy,
                "{separator}\"{name}\";q={};w={}",
                window.limit.requests,
                window.limit.window.as_millis().div_ceil(1000)
            );
            let _ = write!(
                state,
                "{separator}\"{name}\";r={};t={}",
                window.remaining,
                quota.wait_until(window.reset_micros).div_ceil(1_000_000)
            );
        }
        headers.push(header("ratelimit-policy", policy));
        headers.push(header("ratelimit", state));
    }
    if with_retry_after {
        headers.push(header("retry-after", quota.retry_after_secs().to_string()));
    }
    headers
}

/// A header that replaces any of the same name: an upstream's own `x-ratelimit-limit` must not
/// end up beside ours. `append` stays unset (deprecated); see the Envoy notes.
fn header(key: &str, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value,
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::request::RequestError;
    use crate::check::verdict::WindowQuota;
    use crate::policy::limit::Limit;
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
