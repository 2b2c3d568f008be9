//! Validation: the file as written ([`RawConfig`]) into a [`Config`], with every problem found
//! reported at once, each with where it is.

use super::admin::parse_admin;
use super::metrics::{overlap, parse_metrics};
use super::raw::{Checked, Problems, RawConfig, RawTable, Setting};
use super::redis::parse_redis;
use super::table::Tables;
use super::{Config, Overrides};
use crate::check::path::normalize;
use crate::limit::{WindowError, parse_window};
use std::time::Duration;

pub(super) fn parse(text: &str, overrides: &Overrides) -> Result<Config, Vec<String>> {
    let mut problems = Problems::default();
    let document: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| vec![format!("not valid YAML: {e}")])?;
    let mut raw = if document.is_null() {
        RawConfig::default()
    } else {
        let mut unknown = Vec::new();
        let raw = serde_ignored::deserialize(serde_yaml::Deserializer::from_str(text), |path| {
            unknown.push(path.to_string())
        })
        .map_err(|e: serde_yaml::Error| {
            vec![format!("the file must be a mapping of settings ({e})")]
        })?;
        problems.unknown_keys("top level", &unknown);
        raw
    };
    apply_overrides(&mut raw, overrides);
    match validate(raw, &mut problems) {
        Some(config) if problems.0.is_empty() => Ok(config),
        _ => Err(problems.0),
    }
}

/// Whether `text` is a YAML document with nothing in it: empty, whitespace, comments, a lone
/// `---` or an explicit null. Text that is not YAML at all is left to [`parse`] to report.
pub(super) fn holds_no_settings(text: &str) -> bool {
    serde_yaml::from_str::<serde_yaml::Value>(text).is_ok_and(|document| document.is_null())
}

fn apply_overrides(raw: &mut RawConfig, overrides: &Overrides) {
    if let Some(listen) = &overrides.listen {
        raw.listen = Some(Checked::given(listen.clone()));
    }
    if let Some(listen) = &overrides.admin_listen {
        let admin = raw
            .admin
            .get_or_insert_with(|| Checked::given(Default::default()));
        if let Some(admin) = admin.as_mut() {
            admin.listen = Some(Checked::given(listen.clone()));
        }
    }
    if let Some(url) = &overrides.redis_url {
        let redis = raw
            .redis
            .get_or_insert_with(|| Checked::given(Default::default()));
        if let Some(redis) = redis.as_mut() {
            redis.url = Some(Checked::given(url.clone()));
        }
    }
    if let Some(listen) = &overrides.metrics_listen {
        let metrics = raw
            .metrics
            .get_or_insert_with(|| Checked::given(Default::default()));
        if let Some(metrics) = metrics.as_mut() {
            metrics.listen = Some(Checked::given(listen.clone()));
        }
    }
}

/// A setting's value, `default` when absent; `None` after a problem.
pub(super) fn value_or<T>(
    setting: Setting<T>,
    at: &str,
    default: T,
    problems: &mut Problems,
) -> Option<T> {
    match setting {
        None => Some(default),
        Some(checked) => checked.take(at, problems),
    }
}

/// One of an enum's names (`allow`, `per_path`), `default` when absent.
pub(super) fn choice<T: serde::de::DeserializeOwned>(
    setting: Setting<String>,
    at: &str,
    default: T,
    problems: &mut Problems,
) -> Option<T> {
    let Some(name) = setting else {
        return Some(default);
    };
    let name = name.take(at, problems)?;
    serde_yaml::from_value(serde_yaml::Value::String(name))
        .map_err(|e| problems.add(at, e))
        .ok()
}

/// A whole number in `range`, `default` when absent.
pub(super) fn whole_number(
    setting: Setting<u64>,
    at: &str,
    range: std::ops::RangeInclusive<u64>,
    default: u64,
    problems: &mut Problems,
) -> Option<u64> {
    match value_or(setting, at, default, problems)? {
        n if range.contains(&n) => Some(n),
        n => {
            problems.add(
                at,
                format!(
                    "must be a whole number from {} to {}, not {n}",
                    range.start(),
                    range.end()
                ),
            );
            None
        }
    }
}

fn validate(raw: RawConfig, problems: &mut Problems) -> Option<Config> {
    let listen: Option<std::net::SocketAddr> =
        value_or(raw.listen, "listen", "0.0.0.0:9191".into(), problems).and_then(|text| {
            text.parse()
                .map_err(|e| {
                    problems.add("listen", format!("not an address like 0.0.0.0:9191 ({e})"))
                })
                .ok()
        });

    let api_key_header = value_or(
        raw.api_key_header,
        "api_key_header",
        "x-api-key".into(),
        problems,
    )
    .and_then(|name| header_name(&name, "api_key_header", problems));

    let path_prefix = value_or(raw.path_prefix, "path_prefix", "/v1".into(), problems).and_then(
        |text| match normalize(&text) {
            Ok(normal) if normal == text.trim_end_matches('/') || normal == "/" => Some(normal),
            _ => {
                problems.add(
                    "path_prefix",
                    format!("{text:?} must be a plain absolute path such as /v1 (lower case, no '.', '//', '%' or query)"),
                );
                None
            }
        },
    );

    let default_bucket = choice(
        raw.default_bucket,
        "default_bucket",
        Default::default(),
        problems,
    );
    let failure_mode = choice(
        raw.failure_mode,
        "failure_mode",
        Default::default(),
        problems,
    );
    let rate_limit_headers = choice(
        raw.rate_limit_headers,
        "rate_limit_headers",
        Default::default(),
        problems,
    );

    let drain_period = duration(
        raw.drain_period,
        "drain_period",
        Duration::from_secs(5),
        problems,
    );
    // Checks in flight end within Envoy's ext_authz timeout (0.25 s shipped); what is still open
    // after a couple of seconds is a stream that never ends, such as a health Watch.
    let shutdown_grace = duration(
        raw.shutdown_grace,
        "shutdown_grace",
        Duration::from_secs(2),
        problems,
    );
    let deny_cache_entries = whole_number(
        raw.deny_cache_entries,
        "deny_cache_entries",
        0..=10_000_000,
        100_000,
        problems,
    )
    .map(|n| n as usize);
    let max_request_bytes = whole_number(
        raw.max_request_bytes,
        "max_request_bytes",
        4096..=16 << 20,
        256 << 10,
        problems,
    )
    .map(|n| n as usize);
    let memory_store_entries = whole_number(
        raw.memory_store_entries,
        "memory_store_entries",
        1..=100_000_000,
        200_000,
        problems,
    )
    .map(|n| n as usize);

    let metrics_listen = parse_metrics(raw.metrics, problems);
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
    let store = parse_redis(raw.redis, memory_store_entries, problems);
    let admin = parse_admin(raw.admin, listen, problems);

    // The top-level table, then each plan over it.
    let tables = Tables::read(
        RawTable {
            default_limit: raw.default_limit,
            default_limits: raw.default_limits,
            mode: raw.mode,
            routes: raw.routes,
        },
        raw.plans,
        problems,
    );
    let plan_header = raw
        .plan_header
        .and_then(|name| name.take("plan_header", problems))
        .and_then(|name| header_name(&name, "plan_header", problems));
    if let (Some(plan), Some(key)) = (&plan_header, &api_key_header)
        && plan == key
    {
        problems.add("plan_header", "must differ from api_key_header");
    }
    let path_prefix = path_prefix?;
    let default_bucket = default_bucket?;
    let (routes, plans) = tables.resolve(&path_prefix, default_bucket);
    Some(Config {
        listen: listen?,
        admin: admin?,
        api_key_header: api_key_header?,
        rate_limit_headers: rate_limit_headers?,
        routes,
        plans,
        plan_header,
        path_prefix,
        store: store?,
        failure_mode: failure_mode?,
        drain_period: drain_period?,
        shutdown_grace: shutdown_grace?,
        deny_cache_entries: deny_cache_entries?,
        max_request_bytes: max_request_bytes?,
        source: None,
        metrics_listen: metrics_listen?,
    })
}

/// A lower-case header name, or a problem.
fn header_name(name: &str, at: &str, problems: &mut Problems) -> Option<String> {
    let name = name.to_ascii_lowercase();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        problems.add(at, format!("{name:?} is not a valid header name"));
        return None;
    }
    Some(name)
}

/// A top-level duration that may be zero, `default` when absent.
fn duration(
    setting: Setting<String>,
    at: &str,
    default: Duration,
    problems: &mut Problems,
) -> Option<Duration> {
    let Some(text) = setting else {
        return Some(default);
    };
    match parse_window(&text.take(at, problems)?) {
        Ok(period) => Some(period),
        Err(WindowError::Zero(_)) => Some(Duration::ZERO),
        Err(e) => {
            problems.add(at, e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, FailureMode, Overrides, StoreSettings};
    use std::time::Duration;

    fn parse(yaml: &str, overrides: &Overrides) -> Result<Config, Vec<String>> {
        Config::from_yaml(yaml, "test", overrides).map_err(|e| e.problems)
    }

    /// Text given in code; a file with nothing in it is refused (`Config::from_file_text`).
    #[test]
    fn no_settings_are_the_defaults_without_routes() {
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
        assert_eq!(
            config.store,
            StoreSettings::Memory {
                max_entries: 200_000
            }
        );
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
        let redis = config.store.redis().unwrap().clone();
        assert_eq!(redis.url, "redis://override:6379");
        assert_eq!(
            redis.timeout,
            Duration::from_millis(20),
            "the file's other settings stay"
        );
        let only_url = parse("", &overrides).unwrap().store;
        let StoreSettings::Redis(only_url) = only_url else {
            panic!("{only_url:?}")
        };
        assert_eq!(
            (only_url.timeout, only_url.connections),
            (Duration::from_millis(50), 4)
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
            "redis.cluster: invalid type: string \"yes please\", expected a boolean",
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
        assert!(matches!(cluster.unwrap().store, StoreSettings::Cluster(_)));
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
