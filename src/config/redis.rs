//! The `redis` section.

use super::redact_url;
use super::yaml::{Problems, render, section, string, whole_number};
use crate::limit::parse_window;
use crate::store::{RedisSettings, TlsCa};
use serde_yaml::Value;
use std::time::Duration;

const REDIS_KEYS: &[&str] = &[
    "url",
    "timeout",
    "connections",
    "key_prefix",
    "tls_ca_file",
    "cluster",
];

pub(super) fn parse_redis(value: &Value, problems: &mut Problems) -> Option<RedisSettings> {
    let map = &*section(Some(value), "redis", REDIS_KEYS, problems)?;
    let url = match string(map, "url", "redis", problems) {
        None => {
            problems.add(
                "redis",
                "url is missing (omit the whole redis section for the in-memory store)",
            );
            None
        }
        Some(url) => match redis::Client::open(url) {
            Ok(_) => Some(url.to_owned()),
            Err(e) => {
                problems.add(
                    "redis.url",
                    format!("{:?} is not a usable Redis URL: {e}", redact_url(url)),
                );
                None
            }
        },
    };
    let timeout = match string(map, "timeout", "redis", problems) {
        None => Some(Duration::from_millis(50)),
        Some(text) => parse_window(text)
            .map_err(|e| problems.add("redis.timeout", e))
            .ok(),
    };
    let connections = whole_number(map, "connections", "redis.connections", 1..=64, 4, problems)
        .map(|n| n as usize);
    let key_prefix = string(map, "key_prefix", "redis", problems).unwrap_or("tollgate");
    if key_prefix.is_empty() || key_prefix.contains(['{', '}']) {
        problems.add(
            "redis.key_prefix",
            "must be non-empty and contain no '{' or '}' (they delimit the cluster hash tag)",
        );
    }
    let tls_ca = match string(map, "tls_ca_file", "redis", problems) {
        None => Some(None),
        Some(path) => {
            if !url.as_deref().is_some_and(|u| u.starts_with("rediss://")) {
                problems.add("redis.tls_ca_file", "only applies to a rediss:// URL");
            }
            match std::fs::read_to_string(path) {
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
        }
    };
    let cluster = match map.get("cluster") {
        None => Some(false),
        Some(Value::Bool(cluster)) => Some(*cluster),
        Some(other) => {
            problems.add(
                "redis.cluster",
                format!("must be true or false, not {}", render(other)),
            );
            None
        }
    };
    Some(RedisSettings {
        cluster: cluster?,
        url: url?,
        timeout: timeout?,
        connections: connections?,
        key_prefix: key_prefix.to_owned(),
        tls_ca: tls_ca?,
    })
}
