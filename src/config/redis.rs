//! The `redis` section, which chooses the store.

use super::parse::{value_or, whole_number};
use super::raw::{Problems, RawRedis, Setting};
use super::{StoreSettings, redact_url};
use crate::policy::limit::parse_window;
use std::path::PathBuf;
use std::time::Duration;

/// How the store reaches Redis.
#[derive(Clone, PartialEq)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL.
    pub url: String,
    /// Time allowed for one check, connection included; past it the backend counts as
    /// unavailable.
    pub timeout: Duration,
    /// Multiplexed connections; checks are spread over them round-robin.
    pub connections: usize,
    /// Prefix of every key name, so several deployments can share one Redis.
    pub key_prefix: String,
    /// The CA that signs the server's certificate (`rediss://` only); without it the system's
    /// trust store is used.
    pub tls_ca: Option<TlsCa>,
}

/// What the URL of [`RedisSettings`] points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One server (or a primary behind a proxy).
    Standalone,
    /// One node of a Redis Cluster; the others are discovered from it.
    Cluster,
}

/// By hand, so that printing a `Config` with `{:?}` never shows the password.
impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &super::redact_url(&self.url))
            .field("timeout", &self.timeout)
            .field("connections", &self.connections)
            .field("key_prefix", &self.key_prefix)
            .field("tls_ca", &self.tls_ca)
            .finish()
    }
}

/// A CA certificate for Redis TLS, read once when the configuration is validated.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsCa {
    /// Where it was read from, for display.
    pub path: PathBuf,
    /// The PEM text.
    pub pem: Vec<u8>,
}

/// The path only: the certificate itself is noise in a log line.
impl std::fmt::Debug for TlsCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsCa({})", self.path.display())
    }
}

/// The store: Redis or a Redis Cluster when the section is given, else the in-memory store of
/// `memory_entries` buckets.
pub(super) fn parse_redis(
    section: Setting<RawRedis>,
    memory_entries: Option<usize>,
    problems: &mut Problems,
) -> Option<StoreSettings> {
    let Some(section) = section else {
        return memory_entries.map(|max_entries| StoreSettings::Memory { max_entries });
    };
    let raw = section.take("redis", problems)?;
    let url = parse_url(raw.url, problems);
    let timeout = match raw.timeout {
        None => Some(Duration::from_millis(50)),
        Some(text) => text.take("redis.timeout", problems).and_then(|text| {
            parse_window(&text)
                .map_err(|e| problems.add("redis.timeout", e))
                .ok()
        }),
    };
    let connections =
        whole_number(raw.connections, "redis.connections", 1..=64, 4, problems).map(|n| n as usize);
    let key_prefix = parse_key_prefix(raw.key_prefix, problems);
    let tls_ca = match raw.tls_ca_file {
        None => Some(None),
        Some(path) => path.take("redis.tls_ca_file", problems).and_then(|path| {
            if !url.as_deref().is_some_and(|u| u.starts_with("rediss://")) {
                problems.add("redis.tls_ca_file", "only applies to a rediss:// URL");
            }
            read_ca(path, problems).map(Some)
        }),
    };
    let cluster = value_or(raw.cluster, "redis.cluster", false, problems);
    let settings = RedisSettings {
        url: url?,
        timeout: timeout?,
        connections: connections?,
        key_prefix: key_prefix?,
        tls_ca: tls_ca?,
    };
    Some(if cluster? {
        StoreSettings::Cluster(settings)
    } else {
        StoreSettings::Redis(settings)
    })
}

/// `redis.url`: required once the section is there, and one redis-rs can use.
fn parse_url(setting: Setting<String>, problems: &mut Problems) -> Option<String> {
    let Some(url) = setting else {
        problems.add(
            "redis",
            "url is missing (omit the whole redis section for the in-memory store)",
        );
        return None;
    };
    url.take("redis.url", problems)
        .and_then(|url| match redis::Client::open(url.as_str()) {
            Ok(_) => Some(url),
            Err(e) => {
                problems.add(
                    "redis.url",
                    format!("{:?} is not a usable Redis URL: {e}", redact_url(&url)),
                );
                None
            }
        })
}

/// `redis.key_prefix`: never empty, and free of the braces that delimit a cluster hash tag.
fn parse_key_prefix(setting: Setting<String>, problems: &mut Problems) -> Option<String> {
    value_or(setting, "redis.key_prefix", "tollgate".into(), problems).and_then(|prefix| {
        if prefix.is_empty() || prefix.contains(['{', '}']) {
            problems.add(
                "redis.key_prefix",
                "must be non-empty and contain no '{' or '}' (they delimit the cluster hash tag)",
            );
            return None;
        }
        Some(prefix)
    })
}

/// The CA certificate at `path`, read once, when the configuration is.
fn read_ca(path: String, problems: &mut Problems) -> Option<TlsCa> {
    match std::fs::read_to_string(&path) {
        Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => Some(TlsCa {
            path: path.into(),
            pem: pem.into_bytes(),
        }),
        Ok(_) => {
            problems.add(
                "redis.tls_ca_file",
                format!("{path} holds no PEM certificate"),
            );
            None
        }
        Err(e) => {
            problems.add("redis.tls_ca_file", format!("cannot read {path}: {e}"));
            None
        }
    }
}
