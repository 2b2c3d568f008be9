//! The header allow-lists shipped for the proxies (Envoy's `allowed_headers`, Envoy Gateway's
//! `headersToExtAuth`) hold every header tollgate reads from a request: the API key header of the
//! shipped configurations, the plan header `envoy/plan-header.yaml` sets, and the fixed ones
//! (CORS preflight, trace context). A header left off a list never reaches tollgate: a missing key
//! header makes every request under the prefix a 401, a missing plan header gives every key the
//! default plan. The Envoy tests then run the shipped file end to end.

use serde::Deserialize;
use serde_yaml::Value;
use std::collections::BTreeSet;
use tollgate::check::request::FIXED_HEADERS;
use tollgate::config::{Config, DEFAULT_YAML, Overrides};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

/// Every mapping in `value`, depth first.
fn mappings(value: &Value) -> Vec<&Value> {
    let mut found = Vec::new();
    match value {
        Value::Mapping(map) => {
            found.push(value);
            map.values().for_each(|v| found.extend(mappings(v)));
        }
        Value::Sequence(items) => items.iter().for_each(|v| found.extend(mappings(v))),
        _ => {}
    }
    found
}

/// What tollgate reads from a request under the shipped configurations.
fn read_by_tollgate() -> BTreeSet<String> {
    let overrides = Overrides {
        redis_url: Some("redis://tollgate-redis:6379".into()),
        ..Overrides::default()
    };
    let shipped = std::fs::read_to_string(format!("{ROOT}/k8s/base/tollgate.yaml")).unwrap();
    let configs = [
        Config::from_yaml(DEFAULT_YAML, "built-in", &Overrides::default()).unwrap(),
        Config::from_yaml(&shipped, "k8s/base/tollgate.yaml", &overrides).unwrap(),
    ];
    let mut headers: BTreeSet<String> = configs
        .iter()
        .flat_map(|c| [Some(&c.api_key_header), c.plan_header.as_ref()])
        .flatten()
        .cloned()
        .collect();
    // The header the plan filters set from a verified token.
    let plan_filters = documents("envoy/plan-header.yaml");
    let plan_header = plan_filters
        .iter()
        .flat_map(mappings)
        .find_map(|m| m["claim_to_headers"][0]["header_name"].as_str())
        .expect("plan-header.yaml copies a claim into a header");
    headers.insert(plan_header.to_owned());
    headers.extend(FIXED_HEADERS.map(String::from));
    headers
}

#[test]
fn envoy_sends_tollgate_every_header_it_reads() {
    let envoy = documents("envoy/envoy.yaml");
    let ext_authz = envoy
        .iter()
        .flat_map(mappings)
        .find(|m| m["name"] == "envoy.filters.http.ext_authz")
        .expect("the ext_authz filter");
    let patterns = ext_authz["typed_config"]["allowed_headers"]["patterns"]
        .as_sequence()
        .expect("allowed_headers patterns");
    let allowed: BTreeSet<String> = patterns
        .iter()
        .map(|p| {
            assert_eq!(p.as_mapping().unwrap().len(), 1, "exact names only: {p:?}");
            p["exact"].as_str().expect("an exact name").to_owned()
        })
        .collect();
    assert_eq!(allowed, read_by_tollgate());
}

#[test]
fn envoy_gateway_sends_tollgate_every_header_it_reads() {
    let gateway = documents("k8s/envoy-gateway/security-policy.yaml");
    let policy = gateway
        .iter()
        .find(|d| d["kind"] == "SecurityPolicy")
        .unwrap();
    let listed: BTreeSet<String> = policy["spec"]["extAuth"]["headersToExtAuth"]
        .as_sequence()
        .expect("headersToExtAuth")
        .iter()
        .map(|h| h.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, read_by_tollgate());
}
