//! Policies end to end: HTTP client → Envoy 1.40 (the shipped envoy/envoy.yaml, with the shipped
//! envoy/plan-header.yaml filters in front) → tollgate → the memory store, Redis or the cluster.
//! Several windows, a cost, shadow mode, and plans from a verified JWT claim that a client cannot
//! set itself.

mod common;

use common::envoy::Envoy;
use common::http::{HttpResponse, Upstream, request};
use common::{Backend, Tollgate, unique_key};
use serde_yaml::Value;
use sha2::{Digest, Sha256};

for_each_store!(policies_hold_through_envoy);

const POLICY: &str = r#"
drain_period: 0s
plan_header: x-plan
routes:
  - { method: GET, path: /burst, limits: [{ requests: 2, window: 1s }, { requests: 4, window: 60s }] }
  - { method: POST, path: /bulk, cost: 3, limit: { requests: 6, window: 60s } }
  - { method: GET, path: /new, mode: shadow, limit: { requests: 1, window: 60s } }
  - { method: GET, path: /items, limit: { requests: 1, window: 60s } }
plans:
  pro:
    routes:
      - { method: GET, path: /items, limit: { requests: 3, window: 60s } }
"#;

/// The HMAC key of the test's identity provider.
const SECRET: &[u8] = b"tollgate-test-idp-secret-of-32-bytes!";

async fn policies_hold_through_envoy(backend: Backend) {
    let tollgate = Tollgate::start(backend.config(POLICY)).await;
    let upstream = Upstream::start().await;
    let (tollgate_port, upstream_port) = (tollgate.addr.port(), upstream.port);
    let envoy = tokio::task::spawn_blocking(move || {
        Envoy::start_edited(&[tollgate_port], upstream_port, with_plan_filters)
    })
    .await
    .unwrap();
    let send = |method: &'static str, path: &'static str, headers: Vec<(&'static str, String)>| {
        let port = envoy.port;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            request(port, method, path, &headers).await
        }
    };
    let key = |label: &str| ("x-api-key", unique_key(label));
    let limit = |response: &HttpResponse| response.number("x-ratelimit-limit");

    // Two windows: the second's 2 bind first.
    let burst = key("envoy-burst");
    for _ in 0..2 {
        assert_eq!(
            send("GET", "/v1/burst", vec![burst.clone()]).await.status,
            200
        );
    }
    let denied = send("GET", "/v1/burst", vec![burst]).await;
    assert_eq!(denied.status, 429, "{denied:?}");
    assert_eq!((limit(&denied), denied.number("retry-after")), (2, 1));

    // A cost of 3 in a window of 6.
    let bulk = key("envoy-bulk");
    for remaining in [3, 0] {
        let answer = send("POST", "/v1/bulk", vec![bulk.clone()]).await;
        assert!(answer.status < 300, "{answer:?}");
        assert_eq!(answer.number("x-ratelimit-remaining"), remaining);
    }
    assert_eq!(send("POST", "/v1/bulk", vec![bulk]).await.status, 429);

    // Shadow mode: over the limit, still served by the upstream, with the headers.
    let shadow = key("envoy-shadow");
    for _ in 0..3 {
        let answer = send("GET", "/v1/new", vec![shadow.clone()]).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body, "upstream saw /v1/new");
        assert!(answer.has_rate_limit_headers());
    }
    assert_eq!(
        send("GET", "/v1/new", vec![shadow])
            .await
            .number("x-ratelimit-remaining"),
        0
    );

    // A client's own x-plan is stripped: the top-level limit of 1.
    let chooser = key("envoy-chooser");
    let picked = vec![chooser, ("x-plan", "pro".to_owned())];
    let first = send("GET", "/v1/items", picked.clone()).await;
    assert_eq!((first.status, limit(&first)), (200, 1), "{first:?}");
    assert_eq!(send("GET", "/v1/items", picked).await.status, 429);

    // The plan of a verified token applies.
    let pro = key("envoy-pro");
    let bearer = ("authorization", format!("Bearer {}", token("pro")));
    for remaining in [2, 1, 0] {
        let answer = send("GET", "/v1/items", vec![pro.clone(), bearer.clone()]).await;
        assert_eq!((answer.status, limit(&answer)), (200, 3), "{answer:?}");
        assert_eq!(answer.number("x-ratelimit-remaining"), remaining);
    }
    // A token's plan wins over the client's header, whatever the order.
    let free = vec![
        ("x-plan", "pro".to_owned()),
        key("envoy-free"),
        ("authorization", format!("Bearer {}", token("free"))),
    ];
    let answer = send("GET", "/v1/items", free).await;
    assert_eq!((answer.status, limit(&answer)), (200, 1), "{answer:?}");
    // A forged token never reaches tollgate.
    let forged = format!("Bearer {}x", token("pro"));
    let answer = send(
        "GET",
        "/v1/items",
        vec![key("envoy-forged"), ("authorization", forged)],
    )
    .await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(!answer.has_rate_limit_headers());
}

/// The shipped envoy.yaml with the shipped plan-header.yaml filters first in the chain, the
/// identity provider's JWKS given inline.
fn with_plan_filters(config: String) -> String {
    let mut config: Value = serde_yaml::from_str(&config).unwrap();
    let snippet = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/envoy/plan-header.yaml"
    ))
    .unwrap();
    let Value::Sequence(mut filters) = serde_yaml::from_str::<Value>(&snippet).unwrap() else {
        panic!("plan-header.yaml is a list of HTTP filters")
    };
    let provider = &mut filters[1]["typed_config"]["providers"]["idp"];
    let provider = provider.as_mapping_mut().expect("the idp provider");
    provider
        .remove("remote_jwks")
        .expect("remote_jwks to replace");
    let jwks = format!(
        r#"{{"keys":[{{"kty":"oct","alg":"HS256","k":"{}"}}]}}"#,
        base64url(SECRET)
    );
    let local: Value = serde_yaml::from_str(&format!("inline_string: '{jwks}'")).unwrap();
    provider.insert("local_jwks".into(), local);
    let chain = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"];
    let Value::Sequence(chain) = chain else {
        panic!("http_filters")
    };
    for (i, filter) in filters.into_iter().enumerate() {
        chain.insert(i, filter);
    }
    serde_yaml::to_string(&config).unwrap()
}

/// An HS256 JWT from the test's identity provider with a `plan` claim.
fn token(plan: &str) -> String {
    let header = base64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = base64url(
        format!(r#"{{"iss":"https://idp.example.com/","sub":"client","plan":"{plan}"}}"#)
            .as_bytes(),
    );
    let signed = format!("{header}.{claims}");
    format!(
        "{signed}.{}",
        base64url(&hmac_sha256(SECRET, signed.as_bytes()))
    )
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// Base64url without padding (RFC 7515).
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}
