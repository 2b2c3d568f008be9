//! Walks the YAML document and collects every problem instead of stopping at the first.

use super::admin::parse_admin;
use super::metrics::{overlap, parse_metrics};
use super::redis::parse_redis;
use super::yaml::{Problems, check_keys, render, string, whole_number};
use super::{Config, FailureMode, Overrides};
use crate::check::path::normalize;
use crate::check::routes::{DECLARABLE_METHODS, DefaultBucket, Route, RouteTable, Template};
use crate::limit::{Limit, Rule, WindowError, parse_window};
use serde_yaml::{Mapping, Value};
use std::num::NonZeroU32;
use std::time::Duration;

/// The largest limit accepted: a sliding log keeps one entry per admitted request.
const MAX_REQUESTS: u64 = 100_000;

/// The contract's default: 60 requests per 60 s.
const DEFAULT_LIMIT: Limit = Limit {
    requests: NonZeroU32::new(60).unwrap(),
    window: Duration::from_secs(60),
};

const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "api_key_header",
    "path_prefix",
    "default_limit",
    "default_bucket",
    "routes",
    "redis",
    "failure_mode",
    "drain_period",
    "shutdown_grace",
    "deny_cache_entries",
    "max_request_bytes",
    "memory_store_entries",
    "admin",
    "metrics",
];
const ROUTE_KEYS: &[&str] = &["method", "path", "limit"];
const LIMIT_KEYS: &[&str] = &["requests", "window"];

pub(super) fn parse(text: &str, overrides: &Overrides) -> Result<Config, Vec<String>> {
    let mut document: Value =
        serde_yaml::from_str(text).map_err(|e| vec![format!("not valid YAML: {e}")])?;
    if document.is_null() {
        document = Value::Mapping(Mapping::new());
    }
    let mut problems = Problems::default();
    let Some(root) = document.as_mapping_mut() else {
        return Err(vec!["the file must be a mapping of settings".to_owned()]);
    };
    apply_overrides(root, overrides);
    let config = parse_root(root, &mut problems);
    match config {
        Some(config) if problems.0.is_empty() => Ok(config),
        _ => Err(problems.0),
    }
}

fn apply_overrides(root: &mut Mapping, overrides: &Overrides) {
    if let Some(listen) = &overrides.listen {
        root.insert("listen".into(), listen.as_str().into());
    }
    if let Some(listen) = &overrides.admin_listen {
        let admin = root
            .entry("admin".into())
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        if let Some(admin) = admin.as_mapping_mut() {
            admin.insert("listen".into(), listen.as_str().into());
        }
    }
    if let Some(url) = &overrides.redis_url {
        set_in_section(root, "redis", "url", url);
    }
    if let Some(listen) = &overrides.metrics_listen {
        set_in_section(root, "metrics", "listen", listen);
    }
}

/// Sets `section.key`, making the section (or replacing one that is not a mapping).
fn set_in_section(root: &mut Mapping, section: &str, key: &str, value: &str) {
    let section = root
        .entry(section.into())
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if let Some(section) = section.as_mapping_mut() {
        section.insert(key.into(), value.into());
    } else {
        *section = Value::Mapping(Mapping::from_iter([(key.into(), value.into())]));
    }
}

fn parse_root(root: &Mapping, problems: &mut Problems) -> Option<Config> {
    check_keys(root, "top level", TOP_LEVEL_KEYS, problems);

    let listen: Option<std::net::SocketAddr> = string(root, "listen", "top level", problems)
        .unwrap_or("0.0.0.0:9191")
        .parse()
        .map_err(|e| problems.add("listen", format!("not an address like 0.0.0.0:9191 ({e})")))
        .ok();

    let api_key_header = string(root, "api_key_header", "top level", problems)
        .unwrap_or("x-api-key")
        .to_ascii_lowercase();
    if api_key_header.is_empty()
        || !api_key_header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        problems.add(
            "api_key_header",
            format!("{api_key_header:?} is not a valid header name"),
        );
    }

    let prefix_text = string(root, "path_prefix", "top level", problems).unwrap_or("/v1");
    let path_prefix = match normalize(prefix_text) {
        Ok(normal) if normal == prefix_text.trim_end_matches('/') || normal == "/" => Some(normal),
        _ => {
            problems.add(
                "path_prefix",
                format!("{prefix_text:?} must be a plain absolute path such as /v1 (lower case, no '.', '//', '%' or query)"),
            );
            None
        }
    };

    let default_limit = match root.get("default_limit") {
        None => Some(DEFAULT_LIMIT),
        Some(value) => parse_limit(value, "default_limit", problems),
    };

    let default_bucket = match string(root, "default_bucket", "top level", problems) {
        None | Some("shared") => Some(DefaultBucket::Shared),
        Some("per_path") => Some(DefaultBucket::PerPath),
        Some(other) => {
            problems.add(
                "default_bucket",
                format!("{other:?} is not one of: shared, per_path"),
            );
            None
        }
    };

    let failure_mode = match string(root, "failure_mode", "top level", problems) {
        None | Some("allow") => Some(FailureMode::Allow),
        Some("deny") => Some(FailureMode::Deny),
        Some(other) => {
            problems.add(
                "failure_mode",
                format!("{other:?} is not one of: allow, deny"),
            );
            None
        }
    };

    let drain_period = duration(root, "drain_period", Duration::from_secs(5), problems);
    // Checks in flight end within Envoy's ext_authz timeout (0.25 s shipped); what is still open
    // after a couple of seconds is a stream that never ends, such as a health Watch.
    let shutdown_grace = duration(root, "shutdown_grace", Duration::from_secs(2), problems);

    let deny_cache_entries = whole_number(
        root,
        "deny_cache_entries",
        "deny_cache_entries",
        0..=10_000_000,
        100_000,
        problems,
    )
    .map(|n| n as usize);

    let max_request_bytes = whole_number(
        root,
        "max_request_bytes",
        "max_request_bytes",
        4096..=16 << 20,
        256 << 10,
        problems,
    )
    .map(|n| n as usize);

    let memory_store_entries = whole_number(
        root,
        "memory_store_entries",
        "memory_store_entries",
        1..=100_000_000,
        200_000,
        problems,
    )
    .map(|n| n as usize);

    let metrics_listen = parse_metrics(root.get("metrics"), problems);
    if let (Some(listen), Some(Some(metrics))) = (listen, metrics_listen)
        && overlap(listen, metrics)
    {
        problems.add(
            "metrics.listen",
            format!(
                "{metrics} takes the port of listen ({listen}); give metrics a port of its own"
            ),
        );
    }

    let routes = parse_routes(root.get("routes"), problems);
    let redis = match root.get("redis") {
        None | Some(Value::Null) => Some(None),
        Some(value) => parse_redis(value, problems).map(Some),
    };

    let admin = parse_admin(root.get("admin"), listen, problems);

    Some(Config {
        listen: listen?,
        admin: admin?,
        api_key_header,
        rate_limit_headers: Default::default(),
        routes: RouteTable::new(
            path_prefix.clone()?,
            routes?,
            Rule::single(default_limit?),
            default_bucket?,
        ),
        path_prefix: path_prefix?,
        redis: redis?,
        failure_mode: failure_mode?,
        drain_period: drain_period?,
        shutdown_grace: shutdown_grace?,
        deny_cache_entries: deny_cache_entries?,
        max_request_bytes: max_request_bytes?,
        memory_store_entries: memory_store_entries?,
        source: None,
        metrics_listen: metrics_listen?,
    })
}

/// A top-level duration that may be zero, `default` when absent.
fn duration(
    root: &Mapping,
    key: &str,
    default: Duration,
    problems: &mut Problems,
) -> Option<Duration> {
    match string(root, key, "top level", problems) {
        None => Some(default),
        Some(text) => match parse_window(text) {
            Ok(period) => Some(period),
            Err(WindowError::Zero(_)) => Some(Duration::ZERO),
            Err(e) => {
                problems.add(key, e);
                None
            }
        },
    }
}

fn parse_routes(value: Option<&Value>, problems: &mut Problems) -> Option<Vec<Route>> {
    let items = match value {
        None | Some(Value::Null) => return Some(Vec::new()),
        Some(Value::Sequence(items)) => items,
        Some(_) => {
            problems.add("routes", "must be a list of { method, path, limit }");
            return None;
        }
    };
    let problems_before = problems.0.len();
    let mut routes: Vec<(String, Route)> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let Some(map) = item.as_mapping() else {
            problems.add(
                &format!("routes[{index}]"),
                "must be a mapping { method, path, limit }",
            );
            continue;
        };
        let method = map.get("method").and_then(Value::as_str).unwrap_or("?");
        let path = map.get("path").and_then(Value::as_str).unwrap_or("?");
        let at = format!("routes[{index}] ({method} {path})");
        check_keys(map, &at, ROUTE_KEYS, problems);

        let method = match string(map, "method", &at, problems) {
            None => {
                problems.add(&at, "method is missing");
                None
            }
            Some(m) if DECLARABLE_METHODS.contains(&m.to_ascii_uppercase().as_str()) => Some(m),
            Some(m) => {
                let hint = match m.to_ascii_uppercase().as_str() {
                    "HEAD" => "HEAD is checked as GET; declare GET",
                    "OPTIONS" => "OPTIONS (CORS preflight) is never counted",
                    _ => "expected one of GET, POST, PUT, PATCH, DELETE",
                };
                problems.add(&at, format!("method {m:?} cannot be declared: {hint}"));
                None
            }
        };
        let template = match string(map, "path", &at, problems) {
            None => {
                problems.add(&at, "path is missing");
                None
            }
            Some(p) => Template::parse(p).map_err(|e| problems.add(&at, e)).ok(),
        };
        let limit = match map.get("limit") {
            None => {
                problems.add(&at, "limit is missing");
                None
            }
            Some(value) => parse_limit(value, &format!("{at}.limit"), problems),
        };
        let (Some(method), Some(template), Some(limit)) = (method, template, limit) else {
            continue;
        };
        let route = Route::new(method, template, Rule::single(limit));
        if let Some((first, _)) = routes
            .iter()
            .find(|(_, r)| r.method == route.method && r.template == route.template)
        {
            problems.add(
                &at,
                format!("duplicates {first}: both match the same requests"),
            );
            continue;
        }
        routes.push((at, route));
    }
    (problems.0.len() == problems_before).then(|| routes.into_iter().map(|(_, r)| r).collect())
}

fn parse_limit(value: &Value, at: &str, problems: &mut Problems) -> Option<Limit> {
    let Some(map) = value.as_mapping() else {
        problems.add(at, "must be a mapping { requests, window }");
        return None;
    };
    check_keys(map, at, LIMIT_KEYS, problems);
    let requests = match map.get("requests") {
        None => {
            problems.add(at, "requests is missing");
            None
        }
        Some(value) => match value.as_u64() {
            Some(0) => {
                problems.add(at, "requests is 0; a limit must admit at least one request");
                None
            }
            Some(n) if n <= MAX_REQUESTS => NonZeroU32::new(n as u32),
            _ => {
                problems.add(
                    at,
                    format!(
                        "requests must be a whole number from 1 to {MAX_REQUESTS}, not {}",
                        render(value)
                    ),
                );
                None
            }
        },
    };
    let window = match string(map, "window", at, problems) {
        None => {
            if !map.contains_key("window") {
                problems.add(at, "window is missing");
            }
            None
        }
        Some(text) => parse_window(text).map_err(|e| problems.add(at, e)).ok(),
    };
    Some(Limit {
        requests: requests?,
        window: window?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Config, FailureMode, Overrides};
    use std::time::Duration;

    fn parse(yaml: &str, overrides: &Overrides) -> Result<Config, Vec<String>> {
        Config::from_yaml(yaml, "test", overrides).map_err(|e| e.problems)
    }

    #[test]
    fn an_empty_file_is_the_defaults_without_routes() {
        let config = parse("", &Overrides::default()).unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:9191");
        assert_eq!(config.path_prefix, "/v1");
        assert!(config.routes.routes().is_empty());
        assert_eq!(
            config.routes.default_rule().to_string(),
            "60 requests / 60s"
        );
        assert_eq!(config.failure_mode, FailureMode::Allow);
        assert_eq!(config.drain_period, Duration::from_secs(5));
        assert_eq!(config.shutdown_grace, Duration::from_secs(2));
        assert!(config.redis.is_none());
    }

    #[test]
    fn overrides_win_and_a_redis_url_alone_selects_redis() {
        let overrides = Overrides {
            listen: Some("127.0.0.1:7000".into()),
            redis_url: Some("redis://override:6379".into()),
            admin_listen: None,
            metrics_listen: None,
        };
        let config = parse("listen: 0.0.0.0:1\nredis: { timeout: 20ms }\n", &overrides).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:7000");
        let redis = config.redis.unwrap();
        assert_eq!(redis.url, "redis://override:6379");
        assert_eq!(
            redis.timeout,
            Duration::from_millis(20),
            "the file's other settings stay"
        );
        let only_url = parse("", &overrides).unwrap().redis.unwrap();
        assert_eq!(
            (only_url.timeout, only_url.connections, only_url.cluster),
            (Duration::from_millis(50), 4, false)
        );
    }

    #[test]
    fn the_redis_section_is_validated_as_a_whole() {
        let problems = parse(
            "redis: { timeout: 0ms, connections: 0, cluster: yes please, key_prefix: \"a{b\", extra: 1 }\n",
            &Overrides::default(),
        )
        .unwrap_err();
        for expected in [
            "redis: url is missing",
            "redis.timeout",
            "redis.connections: must be a whole number from 1 to 64",
            "redis.cluster: must be true or false",
            "redis.key_prefix",
            "redis: unknown key extra",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "{expected:?} not in {problems:#?}"
            );
        }
        let cluster = parse(
            "redis: { url: \"redis://n1:7000\", cluster: true }\n",
            &Overrides::default(),
        );
        assert!(cluster.unwrap().redis.unwrap().cluster);
    }

    #[test]
    fn the_admin_section_has_loopback_defaults_and_is_validated() {
        let config = parse("", &Overrides::default()).unwrap();
        assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9192");
        assert!(config.admin.token.is_none());

        let token = std::env::temp_dir().join(format!("tollgate-token-{}", std::process::id()));
        std::fs::write(&token, "s3cret\n").unwrap();
        let yaml = format!(
            "admin: {{ listen: 127.0.0.1:7001, token_file: {} }}\n",
            token.display()
        );
        let config = parse(&yaml, &Overrides::default()).unwrap();
        assert_eq!(config.admin.listen.to_string(), "127.0.0.1:7001");
        assert!(config.admin.token.as_ref().unwrap().matches("s3cret"));
        assert!(!config.to_string().contains("s3cret"), "{config}");
        assert!(config.to_string().contains("bearer token from"), "{config}");
        std::fs::remove_file(&token).unwrap();

        let problems = parse(
            "listen: 0.0.0.0:9191\nadmin: { listen: 127.0.0.1:9191, token_file: /nonexistent/token, port: 1 }\n",
            &Overrides::default(),
        )
        .unwrap_err();
        for expected in [
            "admin.listen: port 9191 is the ext_authz port",
            "admin.token_file: cannot read /nonexistent/token",
            "admin: unknown key port",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "{expected:?} not in {problems:#?}"
            );
        }
        let overridden = Overrides {
            admin_listen: Some("127.0.0.1:0".into()),
            ..Overrides::default()
        };
        assert_eq!(
            parse("admin: { listen: 10.0.0.1:1 }\n", &overridden)
                .unwrap()
                .admin
                .listen
                .to_string(),
            "127.0.0.1:0"
        );
    }

    #[test]
    fn types_are_not_coerced() {
        let problems = parse(
            "listen: 9191\nfailure_mode: true\nroutes:\n  - { method: GET, path: /a, limit: { requests: \"10\", window: 60 } }\n",
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:#?}");
    }

    #[test]
    fn the_shutdown_durations_may_be_zero_and_are_checked_together() {
        let config = parse(
            "drain_period: 0s\nshutdown_grace: 500ms\n",
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            (config.drain_period, config.shutdown_grace),
            (Duration::ZERO, Duration::from_millis(500))
        );
        let problems = parse(
            "drain_period: soon\nshutdown_grace: 2x\n",
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].starts_with("drain_period"), "{problems:#?}");
        assert!(problems[1].starts_with("shutdown_grace"), "{problems:#?}");
    }
}
