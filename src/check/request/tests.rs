//! Unit tests of `check/request.rs`.

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
            traceparent: None,
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
            traceparent: None,
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
            traceparent: None,
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
            traceparent: None,
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

#[test]
fn traceparent_is_read_only_when_traces_are_on_and_given_once() {
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let once = get("/v1/x", vec![raw("Traceparent", traceparent.as_bytes())]);
    let on = HttpCheck::parse_traced(&once, "x-api-key", None, true).unwrap();
    assert_eq!(on.traceparent, Some(traceparent.as_bytes()));
    let off = HttpCheck::parse_traced(&once, "x-api-key", None, false).unwrap();
    assert_eq!(off.traceparent, None);
    let twice = get(
        "/v1/x",
        vec![
            raw("traceparent", traceparent.as_bytes()),
            raw("traceparent", traceparent.as_bytes()),
        ],
    );
    let both = HttpCheck::parse_traced(&twice, "x-api-key", None, true).unwrap();
    assert_eq!(
        both.traceparent, None,
        "two trace contexts: neither is trusted"
    );
}
