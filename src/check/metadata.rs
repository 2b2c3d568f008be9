//! The decision as Envoy's dynamic metadata, so that Envoy's own access log line of a request
//! shows what tollgate decided about it.
//!
//! Envoy files `CheckResponse.dynamic_metadata` under the ext_authz filter's namespace,
//! `envoy.filters.http.ext_authz`, for allowed and denied answers alike; an access log reads a
//! field with `%DYNAMIC_METADATA(envoy.filters.http.ext_authz:decision)%`. The shipped
//! `envoy/envoy.yaml` logs every field below in JSON. A request Envoy let through because
//! tollgate did not answer (down, or over the filter's timeout) has no metadata at all: its
//! fields log as `null`.
//!
//! The key is never in it: only its fingerprint, the 8 hex digits tollgate's own logs and the
//! admin API show.

use crate::check::verdict::{Subject, Verdict};
use crate::check::wire::Writer;

/// The namespace Envoy files the metadata under: the ext_authz HTTP filter's name.
pub const NAMESPACE: &str = "envoy.filters.http.ext_authz";

/// The field names, as an access log format spells them.
pub mod field {
    /// The outcome, in the words of the `result` label of `tollgate_checks_total`.
    pub const DECISION: &str = "decision";
    /// The bucket the request was counted in (`GET /campaigns/:id`, `default`...).
    pub const BUCKET: &str = "bucket";
    /// `enforce` or `shadow`.
    pub const MODE: &str = "mode";
    /// The plan whose route table applied; absent for the top-level table.
    pub const PLAN: &str = "plan";
    /// The first 8 hex digits of the key's digest.
    pub const KEY_FINGERPRINT: &str = "key_fingerprint";
    /// The limit of the window the rate-limit headers describe (requests).
    pub const LIMIT: &str = "limit";
    /// Requests left in that window.
    pub const REMAINING: &str = "remaining";
    /// When that window frees a slot, in Unix milliseconds (`X-RateLimit-Reset`).
    pub const RESET: &str = "reset";
}

/// Writes the metadata of one answer, the fields of a `google.protobuf.Struct`: `decision`
/// always; the bucket, its mode, the plan and the key's fingerprint as far as the check got before
/// deciding (a message that could not be read has none, a request without a key no fingerprint);
/// the quota after a counted or denied request. Fields that do not apply are left out rather
/// than sent empty, so the access log shows `null` for them and no byte is spent on them.
pub fn decision_metadata(w: &mut Writer, verdict: &Verdict, subject: &Subject) {
    text(w, field::DECISION, verdict.result().label());
    if let Some(bucket) = &subject.bucket {
        text(w, field::BUCKET, bucket);
    }
    if let Some(mode) = subject.mode {
        text(w, field::MODE, mode.label());
    }
    if let Some(plan) = subject.plan {
        text(w, field::PLAN, plan);
    }
    if let Some(key) = &subject.key {
        text(w, field::KEY_FINGERPRINT, key.fingerprint());
    }
    if let Some(quota) = verdict.quota() {
        // JSON numbers are doubles: counts and Unix milliseconds are far below 2^53, exact.
        number(w, field::LIMIT, quota.limit.requests.get().into());
        number(w, field::REMAINING, quota.remaining.into());
        number(w, field::RESET, quota.reset_millis() as f64);
    }
}

/// `Struct.fields` is a map: each field one entry, a message of its name (1) and `Value` (2).
const STRUCT_FIELDS: u32 = 1;
const ENTRY_KEY: u32 = 1;
const ENTRY_VALUE: u32 = 2;
/// `Value.number_value` and `Value.string_value`.
const NUMBER_VALUE: u32 = 2;
const STRING_VALUE: u32 = 3;

fn text(w: &mut Writer, name: &str, value: &str) {
    w.message(STRUCT_FIELDS, |w| {
        w.string(ENTRY_KEY, name);
        w.message(ENTRY_VALUE, |w| w.string(STRING_VALUE, value));
    });
}

fn number(w: &mut Writer, name: &str, value: f64) {
    w.message(STRUCT_FIELDS, |w| {
        w.string(ENTRY_KEY, name);
        w.message(ENTRY_VALUE, |w| w.double(NUMBER_VALUE, value));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_key::KeyDigest;
    use crate::check::request::RequestError;
    use crate::check::verdict::{Quota, WindowQuota};
    use crate::policy::limit::{Limit, Mode};
    use crate::telemetry::metrics::CheckResult;
    use envoy_types::pb::google::protobuf::Struct;
    use envoy_types::pb::google::protobuf::value::Kind;
    use prost::Message;
    use std::num::NonZeroU32;
    use std::time::Duration;

    fn quota(remaining: u32) -> Quota {
        let limit = Limit {
            requests: NonZeroU32::new(120).unwrap(),
            window: Duration::from_secs(60),
        };
        let reset_micros = 1_795_806_628_516_001;
        Quota {
            limit,
            remaining,
            reset_micros,
            now_micros: reset_micros - 12_000_000,
            windows: [WindowQuota {
                limit,
                remaining,
                reset_micros,
            }]
            .into(),
        }
    }

    fn subject() -> Subject<'static> {
        Subject {
            bucket: Some("GET /campaigns/:id".into()),
            mode: Some(Mode::Shadow),
            plan: Some("pro"),
            key: Some(KeyDigest::of("secret-key-123")),
            ..Subject::default()
        }
    }

    /// The metadata as written.
    fn encoded(verdict: &Verdict, subject: &Subject) -> Vec<u8> {
        let mut w = Writer::default();
        decision_metadata(&mut w, verdict, subject);
        w.into_bytes()
    }

    /// The metadata as Envoy reads it.
    fn metadata(verdict: &Verdict, subject: &Subject) -> Struct {
        Struct::decode(&encoded(verdict, subject)[..]).expect("a Struct")
    }

    /// The fields as (name, JSON-ish text), sorted by name.
    fn fields(metadata: &Struct) -> Vec<(String, String)> {
        let mut fields: Vec<_> = metadata
            .fields
            .iter()
            .map(|(name, value)| {
                let text = match &value.kind {
                    Some(Kind::StringValue(s)) => s.clone(),
                    Some(Kind::NumberValue(n)) => format!("{n}"),
                    other => panic!("{name}: {other:?}"),
                };
                (name.clone(), text)
            })
            .collect();
        fields.sort();
        fields
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut pairs: Vec<_> = expected
            .iter()
            .map(|&(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        pairs.sort();
        pairs
    }

    #[test]
    fn a_counted_request_carries_every_field_and_the_fingerprint_not_the_key() {
        let verdict = Verdict::ShadowDenied(quota(0));
        let metadata = metadata(&verdict, &subject());
        let fingerprint = KeyDigest::of("secret-key-123").fingerprint().to_owned();
        assert_eq!(
            fields(&metadata),
            pairs(&[
                ("decision", "shadow_denied"),
                ("bucket", "GET /campaigns/:id"),
                ("mode", "shadow"),
                ("plan", "pro"),
                ("key_fingerprint", &fingerprint),
                ("limit", "120"),
                ("remaining", "0"),
                ("reset", "1795806628517"),
            ])
        );
        let encoded = encoded(&verdict, &subject());
        let digest = KeyDigest::of("secret-key-123");
        for secret in ["secret-key-123", digest.as_str()] {
            assert!(
                !encoded
                    .windows(secret.len())
                    .any(|w| w == secret.as_bytes()),
                "{secret}"
            );
        }
    }

    #[test]
    fn fields_not_known_when_the_check_ended_are_left_out() {
        let unauthenticated = Subject {
            key: None,
            plan: None,
            ..subject()
        };
        assert_eq!(
            fields(&metadata(&Verdict::Unauthenticated, &unauthenticated)),
            pairs(&[
                ("decision", "unauthenticated"),
                ("bucket", "GET /campaigns/:id"),
                ("mode", "shadow"),
            ])
        );
        assert_eq!(
            fields(&metadata(&Verdict::FailedOpen, &subject()))
                .iter()
                .map(|(name, _)| name.as_str())
                .collect::<Vec<_>>(),
            ["bucket", "decision", "key_fingerprint", "mode", "plan"],
            "a store failure reports no quota"
        );
        let unread = Verdict::BadRequest(RequestError::NoPath);
        assert_eq!(
            fields(&metadata(&unread, &Subject::default())),
            pairs(&[("decision", "bad_request")])
        );
    }

    #[test]
    fn the_decision_speaks_the_metrics_vocabulary() {
        let verdicts = [
            Verdict::Allowed(quota(3)),
            Verdict::Denied(quota(0)),
            Verdict::ShadowDenied(quota(0)),
            Verdict::Unauthenticated,
            Verdict::AmbiguousKey,
            Verdict::NotLimited,
            Verdict::FailedOpen,
            Verdict::FailedClosed,
        ];
        for verdict in verdicts {
            let metadata = metadata(&verdict, &Subject::default());
            let decision = metadata.fields[field::DECISION].kind.clone();
            assert_eq!(
                decision,
                Some(Kind::StringValue(verdict.result().label().to_owned()))
            );
            assert!(CheckResult::ALL.contains(&verdict.result()));
        }
    }

    #[test]
    fn an_allowed_answer_carries_169_bytes_of_metadata() {
        // What BENCHMARKS.md reports per response: the 7 fields of an allowed request without a
        // plan, with an 18-character bucket name (each more character, one more byte); 3 more
        // bytes frame it in the CheckResponse.
        let subject = Subject {
            plan: None,
            mode: Some(Mode::Enforce),
            ..subject()
        };
        let verdict = Verdict::Allowed(quota(119));
        assert_eq!(encoded(&verdict, &subject).len(), 169);
        let metadata = metadata(&verdict, &subject);
        assert_eq!(metadata.encoded_len(), 169, "as prost would write it");
        let response = envoy_types::ext_authz::v3::pb::CheckResponse {
            dynamic_metadata: Some(metadata),
            ..Default::default()
        };
        assert_eq!(response.encoded_len(), 172);
    }
}
