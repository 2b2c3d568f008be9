//! The `redis` section, which chooses the store.

use super::parse::{value_or, whole_number};
use super::raw::{Problems, RawRedis, Setting};
use super::{StoreSettings, redact_url};
use crate::limit::parse_window;
use crate::store::{RedisSettings, TlsCa};
use std::time::Duration;

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
    let url = match raw.url {
        None => {
            problems.add(
                "redis",
                "url is missing (omit the whole redis section for the in-memory store)",
            );
            None
        }
        Some(url) => url.take("redis.url", problems).and_then(|url| {
            match redis::Client::open(url.as_str()) {
                Ok(_) => Some(url),
                Err(e) => {
                    problems.add(
                        "redis.url",
                        format!("{:?} is not a usable Redis URL: {e}", redact_url(&url)),
                    );
                    None
                }
            }
        }),
    };
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
    let key_prefix = value_or(
        raw.key_prefix,
        "redis.key_prefix",
        "tollgate".into(),
        problems,
    )
    .and_then(|prefix| {
        if prefix.is_empty() || prefix.contains(['{', '}']) {
            problems.add(
                "redis.key_prefix",
                "must be non-empty and contain no '{' or '}' (they delimit the cluster hash tag)",
            );
            return None;
        }
        Some(prefix)
    });
    let tls_ca = match raw.tls_ca_file {
        None => Some(None),
        Some(path) => path.take("redis.tls_ca_file", problems).and_then(|path| {
            if !url.as_deref().is_some_and(|u| u.starts_with("rediss://")) {
                problems.add("redis.tls_ca_file", "only applies to a rediss:// URL");
            }
            match std::fs::read_to_string(&path) {
                Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => Some(Some(TlsCa {
                    path: path.into(),
                    pem: pem.into_bytes(),
                })),
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
