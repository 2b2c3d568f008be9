//! A check request as Envoy sends it for a typical API call: both peers, the request time, the
//! usual headers with the `:method` and `:path` pseudo-headers in the map, the request target
//! (query included) in `path`. The tests and the benchmarks build the same message, so that the
//! benchmarks decode what production decodes.
//!
//! Standalone (it needs only `envoy-types`), so a bench can include it with
//! `#[path = "../../tests/common/check_request.rs"] mod check_request;`.

use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address, socket_address};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, attribute_context};

/// `method path`, with `x-api-key: api_key` when there is one.
pub fn envoy_request(method: &str, path: &str, api_key: Option<&str>) -> CheckRequest {
    let peer = |ip: &str, port| attribute_context::Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }),
        ..Default::default()
    };
    let headers = [
        (":authority", "api.example.com"),
        (":path", path),
        (":method", method),
        (":scheme", "https"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        ),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate, br"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-request-id", "6f1c1d8e-7d1b-4c3a-9d7e-2b4f5a6c7d8e"),
        ("x-envoy-expected-rq-timeout-ms", "15000"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ]
    .into_iter()
    .chain(api_key.map(|key| ("x-api-key", key)))
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer("10.0.0.7", 51234)),
            destination: Some(peer("10.0.0.9", 8080)),
            request: Some(attribute_context::Request {
                time: Some(Default::default()),
                http: Some(attribute_context::HttpRequest {
                    id: "6f1c1d8e-7d1b-4c3a-9d7e-2b4f5a6c7d8e".into(),
                    method: method.into(),
                    path: path.into(),
                    host: "api.example.com".into(),
                    scheme: "https".into(),
                    protocol: "HTTP/1.1".into(),
                    headers,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}
