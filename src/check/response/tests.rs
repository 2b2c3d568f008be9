//! Unit tests of `check/response.rs`: the answers as Envoy's protobuf reads them.

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
