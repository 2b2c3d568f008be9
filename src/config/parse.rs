//! Validation: the file as written ([`RawConfig`]) into a [`Config`], with every problem found
//! reported at once, each with where it is.

use super::admin::parse_admin;
use super::metrics::{overlap, parse_metrics};
use super::quota::{parse_quota_endpoint, refuse_shadowed_route};
use super::raw::{Checked, Problems, RawConfig, RawTable, Setting};
use super::redis::parse_redis;
use super::table::Tables;
use super::tracing::parse_tracing;
use super::{Config, Overrides};
use crate::policy::limit::{WindowError, parse_window};
use crate::policy::path::normalize;
use std::net::SocketAddr;
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
    let config = validate(raw, &mut problems);
    if let Some(config) = &config {
        refuse_shadowed_route(config, &mut problems);
    }
    match config {
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

fn validate(mut raw: RawConfig, problems: &mut Problems) -> Option<Config> {
    let sizes = Sizes::read(&mut raw, problems);
    let listen = parse_listen(raw.listen, problems);
    let api_key_header = parse_api_key_header(raw.api_key_header, problems);
    let path_prefix = parse_path_prefix(raw.path_prefix, problems);
    let default_bucket = chosen(raw.default_bucket, "default_bucket", problems);
    let failure_mode = chosen(raw.failure_mode, "failure_mode", problems);
    let rate_limit_headers = chosen(raw.rate_limit_headers, "rate_limit_headers", problems);
    let metadata = value_or(raw.decision_metadata, "decision_metadata", true, problems);
    let (drain_period, grace) = timings(raw.drain_period, raw.shutdown_grace, problems);
    let quota_endpoint = parse_quota_endpoint(raw.quota_endpoint, problems);
    let tracing = parse_tracing(raw.tracing, problems);
    let metrics_listen = parse_metrics(raw.metrics, problems);
    own_port("metrics.listen", metrics_listen.flatten(), listen, problems);
    let store = parse_redis(raw.redis, sizes.memory_store_entries, problems);
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
    let plan_header = parse_plan_header(raw.plan_header, api_key_header.as_deref(), problems);
    let path_prefix = path_prefix?;
    let (routes, plans) = tables.resolve(&path_prefix, default_bucket?);
    Some(Config {
        listen: listen?,
        admin: admin?,
        api_key_header: api_key_header?,
        rate_limit_headers: rate_limit_headers?,
        decision_metadata: metadata?,
        routes,
        plans,
        plan_header,
        path_prefix,
        quota_endpoint: quota_endpoint?,
        tracing: tracing?,
        store: store?,
        failure_mode: failure_mode?,
        drain_period: drain_period?,
        shutdown_grace: grace?,
        deny_cache_entries: sizes.deny_cache_entries?,
        max_request_bytes: sizes.max_request_bytes?,
        source: None,
        metrics_listen: metrics_listen?,
    })
}

/// A listener's address, `default` when absent: one parser, one wording, for every listener.
pub(super) fn address(
    setting: Setting<String>,
    at: &str,
    default: &str,
    problems: &mut Problems,
) -> Option<SocketAddr> {
    value_or(setting, at, default.into(), problems).and_then(|text| {
        text.parse()
            .map_err(|e| problems.add(at, format!("not an address like {default} ({e})")))
            .ok()
    })
}

/// Refuses a listener (`at`) that would share the ext_authz listener's port: they would fight over
/// it, and mesh workloads reach the ext_authz port.
pub(super) fn own_port(
    at: &str,
    address: Option<SocketAddr>,
    listen: Option<SocketAddr>,
    problems: &mut Problems,
) {
    if let (Some(address), Some(listen)) = (address, listen)
        && overlap(address, listen)
    {
        problems.add(
            at,
            format!(
                "port {} is the ext_authz port (listen {listen}); give it a port of its own",
                address.port()
            ),
        );
    }
}

/// How long health reports NOT_SERVING before the listeners stop accepting.
const DRAIN_PERIOD: Duration = Duration::from_secs(5);

/// Checks in flight end within Envoy's ext_authz timeout (0.25 s shipped); what is still open
/// after a couple of seconds is a stream that never ends, such as a health Watch.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

fn parse_listen(setting: Setting<String>, problems: &mut Problems) -> Option<SocketAddr> {
    address(setting, "listen", "0.0.0.0:9191", problems)
}

fn parse_api_key_header(setting: Setting<String>, problems: &mut Problems) -> Option<String> {
    value_or(setting, "api_key_header", "x-api-key".into(), problems)
        .and_then(|name| header_name(&name, "api_key_header", problems))
}

/// A setting of a few named choices, its default when absent.
fn chosen<T: serde::de::DeserializeOwned + Default>(
    setting: Setting<String>,
    at: &str,
    problems: &mut Problems,
) -> Option<T> {
    choice(setting, at, T::default(), problems)
}

fn parse_path_prefix(setting: Setting<String>, problems: &mut Problems) -> Option<String> {
    value_or(setting, "path_prefix", "/v1".into(), problems).and_then(|text| match normalize(&text) {
        Ok(normal) if normal == text.trim_end_matches('/') || normal == "/" => Some(normal),
        _ => {
            problems.add(
                "path_prefix",
                format!("{text:?} must be a plain absolute path such as /v1 (lower case, no '.', '//', '%' or query)"),
            );
            None
        }
    })
}

/// `plan_header`, which must not be the API key's header.
fn parse_plan_header(
    setting: Setting<String>,
    api_key_header: Option<&str>,
    problems: &mut Problems,
) -> Option<String> {
    let plan_header = setting
        .and_then(|name| name.take("plan_header", problems))
        .and_then(|name| header_name(&name, "plan_header", problems));
    if let (Some(plan), Some(key)) = (&plan_header, api_key_header)
        && plan == key
    {
        problems.add("plan_header", "must differ from api_key_header");
    }
    plan_header
}

/// The sizes of the process's tables and buffers.
struct Sizes {
    deny_cache_entries: Option<usize>,
    max_request_bytes: Option<usize>,
    memory_store_entries: Option<usize>,
}

impl Sizes {
    /// The sizes `raw` sets, taken out of it.
    fn read(raw: &mut RawConfig, problems: &mut Problems) -> Self {
        let mut size = |setting, name, range, default| {
            whole_number(setting, name, range, default, problems).map(|n| n as usize)
        };
        Self {
            deny_cache_entries: size(
                raw.deny_cache_entries.take(),
                "deny_cache_entries",
                0..=10_000_000,
                100_000,
            ),
            max_request_bytes: size(
                raw.max_request_bytes.take(),
                "max_request_bytes",
                4096..=16 << 20,
                256 << 10,
            ),
            memory_store_entries: size(
                raw.memory_store_entries.take(),
                "memory_store_entries",
                1..=100_000_000,
                200_000,
            ),
        }
    }
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

/// `drain_period` and `shutdown_grace`.
fn timings(
    drain_period: Setting<String>,
    shutdown_grace: Setting<String>,
    problems: &mut Problems,
) -> (Option<Duration>, Option<Duration>) {
    (
        duration(drain_period, "drain_period", DRAIN_PERIOD, problems),
        duration(shutdown_grace, "shutdown_grace", SHUTDOWN_GRACE, problems),
    )
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
mod tests;
