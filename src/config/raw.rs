//! The configuration file as written: serde types that mirror the YAML.
//!
//! Two things keep "every problem at once" with derived deserializers:
//! - each setting, section and list item that can be wrong on its own is a [`Checked`], which
//!   holds the error instead of ending the read, so one wrong type is reported beside the others;
//! - unknown keys are collected with their path through `serde_ignored` instead of
//!   `#[serde(deny_unknown_fields)]`, which stops at the first one and hides the rest. They are
//!   refused all the same.
//!
//! Values stay as written here (windows and choices as text, numbers as `u64`); `parse`
//! validates them.

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer};
use std::collections::BTreeMap;

/// Problems found so far, one sentence each, prefixed with where they are.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<String>);

impl Problems {
    pub(super) fn add(&mut self, at: &str, message: impl std::fmt::Display) {
        self.0.push(format!("{at}: {message}"));
    }

    /// Reports keys nobody reads: typos must fail loudly.
    pub(super) fn unknown_keys(&mut self, at: &str, unknown: &[String]) {
        for key in unknown {
            self.add(at, format!("unknown key {key}"));
        }
    }
}

/// A value as read: the typed value or why it is not one, and the keys inside it that no field
/// takes.
pub(super) struct Checked<T> {
    result: Result<T, String>,
    unknown: Vec<String>,
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Checked<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_yaml::Value::deserialize(deserializer)?;
        let mut unknown = Vec::new();
        let result = serde_ignored::deserialize(value, |path| unknown.push(path.to_string()))
            .map_err(|e: serde_yaml::Error| e.to_string());
        Ok(Self { result, unknown })
    }
}

impl<T> Checked<T> {
    /// A value given in code (a command-line override).
    pub(super) fn given(value: T) -> Self {
        Self {
            result: Ok(value),
            unknown: Vec::new(),
        }
    }

    /// The value, with any problem of it reported at `at`; `None` when it has the wrong shape.
    pub(super) fn take(self, at: &str, problems: &mut Problems) -> Option<T> {
        problems.unknown_keys(at, &self.unknown);
        self.result.map_err(|e| problems.add(at, e)).ok()
    }

    /// The value when it has the right shape, for overrides that edit it in place.
    pub(super) fn as_mut(&mut self) -> Option<&mut T> {
        self.result.as_mut().ok()
    }
}

/// An optional setting: absent, or its value and problems.
pub(super) type Setting<T> = Option<Checked<T>>;

/// The whole file.
#[derive(Deserialize, Default)]
#[serde(expecting = "a mapping of settings")]
pub(super) struct RawConfig {
    pub listen: Setting<String>,
    pub api_key_header: Setting<String>,
    pub path_prefix: Setting<String>,
    pub default_limit: Setting<RawLimit>,
    pub default_limits: Setting<Vec<Checked<RawLimit>>>,
    pub mode: Setting<String>,
    pub routes: Setting<Vec<Checked<RawRoute>>>,
    pub default_bucket: Setting<String>,
    pub rate_limit_headers: Setting<String>,
    pub decision_metadata: Setting<bool>,
    pub quota_endpoint: Setting<RawQuotaEndpoint>,
    pub tracing: Setting<RawTracing>,
    pub plans: Setting<BTreeMap<String, Checked<RawTable>>>,
    pub plan_header: Setting<String>,
    pub redis: Setting<RawRedis>,
    pub failure_mode: Setting<String>,
    pub drain_period: Setting<String>,
    pub shutdown_grace: Setting<String>,
    pub deny_cache_entries: Setting<u64>,
    pub max_request_bytes: Setting<u64>,
    pub memory_store_entries: Setting<u64>,
    pub admin: Setting<RawAdmin>,
    pub metrics: Setting<RawMetrics>,
}

/// A plan: the route table settings it overrides.
#[derive(Deserialize, Default)]
#[serde(expecting = "a mapping with keys from: default_limit, default_limits, mode, routes")]
pub(super) struct RawTable {
    pub default_limit: Setting<RawLimit>,
    pub default_limits: Setting<Vec<Checked<RawLimit>>>,
    pub mode: Setting<String>,
    pub routes: Setting<Vec<Checked<RawRoute>>>,
}

/// `{ method, path, limit | limits, cost, mode }`.
#[derive(Deserialize)]
#[serde(expecting = "a mapping { method, path, limit | limits, cost, mode }")]
pub(super) struct RawRoute {
    pub method: Setting<String>,
    pub path: Setting<String>,
    pub limit: Setting<RawLimit>,
    pub limits: Setting<Vec<Checked<RawLimit>>>,
    pub cost: Setting<u64>,
    pub mode: Setting<String>,
}

/// `{ requests, window }`.
#[derive(Deserialize)]
#[serde(expecting = "a mapping { requests, window }")]
pub(super) struct RawLimit {
    pub requests: Setting<u64>,
    pub window: Setting<String>,
}

/// The `redis` section.
#[derive(Deserialize, Default)]
#[serde(
    expecting = "a mapping with keys from: url, timeout, connections, key_prefix, tls_ca_file, cluster"
)]
pub(super) struct RawRedis {
    pub url: Setting<String>,
    pub timeout: Setting<String>,
    pub connections: Setting<u64>,
    pub key_prefix: Setting<String>,
    pub tls_ca_file: Setting<String>,
    pub cluster: Setting<bool>,
}

/// The `quota_endpoint` section.
#[derive(Deserialize)]
#[serde(expecting = "a mapping with keys from: path, limit")]
pub(super) struct RawQuotaEndpoint {
    pub path: Setting<String>,
    pub limit: Setting<RawLimit>,
}

/// The `tracing` section.
#[derive(Deserialize)]
#[serde(expecting = "a mapping with keys from: otlp_endpoint, sampling_ratio")]
pub(super) struct RawTracing {
    pub otlp_endpoint: Setting<String>,
    pub sampling_ratio: Setting<f64>,
}

/// The `admin` section.
#[derive(Deserialize, Default)]
#[serde(expecting = "a mapping with keys from: listen, token_file")]
pub(super) struct RawAdmin {
    pub listen: Setting<String>,
    pub token_file: Setting<String>,
}

/// The `metrics` section.
#[derive(Deserialize, Default)]
#[serde(expecting = "a mapping with keys from: enabled, listen")]
pub(super) struct RawMetrics {
    pub enabled: Setting<bool>,
    pub listen: Setting<String>,
}
