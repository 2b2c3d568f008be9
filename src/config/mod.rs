//! Configuration: a YAML file (or the built-in contract table) parsed into typed values, with every
//! problem reported at once before anything binds a port.

mod admin;
mod limit;
mod metrics;
mod parse;
mod quota;
mod raw;
mod redis;
pub mod reload;
mod table;
mod token;
mod tracing;

pub use admin::{AdminSettings, DEFAULT_LISTEN as DEFAULT_ADMIN_LISTEN};
pub use quota::{DEFAULT_QUOTA_LIMIT, QUOTA_BUCKET, QuotaEndpoint};
pub use redis::{RedisSettings, TlsCa, Topology};
pub use token::{AdminToken, TokenError};
pub use tracing::TracingSettings;

use crate::policy::headers::HeaderStyle;
use crate::policy::routes::{DefaultBucket, RouteTable};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The built-in configuration: exactly the contract's table, with the in-memory store.
pub const DEFAULT_YAML: &str = include_str!("default.yaml");

/// What to do when the store cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Allow the request without rate-limit headers (the contract's operational note).
    #[default]
    Allow,
    /// Deny it with 503 (fail closed).
    Deny,
}

/// Where quotas are kept.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreSettings {
    /// In this process: exact for a single instance, not shared between replicas.
    Memory {
        /// Buckets it may hold; checks of new buckets beyond it fail with 503.
        max_entries: usize,
    },
    /// One Redis server (or a primary behind a proxy).
    Redis(RedisSettings),
    /// A Redis Cluster, of which the URL names one node.
    Cluster(RedisSettings),
}

impl StoreSettings {
    /// The Redis settings, unless the store is in memory.
    pub fn redis(&self) -> Option<&RedisSettings> {
        match self {
            Self::Memory { .. } => None,
            Self::Redis(settings) | Self::Cluster(settings) => Some(settings),
        }
    }

    /// The Redis settings to edit, unless the store is in memory.
    pub fn redis_mut(&mut self) -> Option<&mut RedisSettings> {
        match self {
            Self::Memory { .. } => None,
            Self::Redis(settings) | Self::Cluster(settings) => Some(settings),
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the gRPC listener (ext_authz and health).
    pub listen: SocketAddr,
    /// The admin API's own listener and token.
    pub admin: AdminSettings,
    /// Lower-case name of the header that carries the API key.
    pub api_key_header: String,
    /// Which rate-limit header fields answers carry.
    pub rate_limit_headers: HeaderStyle,
    /// Whether answers carry the decision as dynamic metadata for Envoy's access log. On by
    /// default (the shipped `envoy.yaml` logs it); off saves its cost on every answer (about
    /// 170 bytes on the wire and 2 µs of CPU: BENCHMARKS.md) where nothing reads it.
    pub decision_metadata: bool,
    /// Normalised path prefix under which limits apply; `/` for all paths.
    pub path_prefix: String,
    /// A path tollgate answers itself with the caller's quotas (`None`: off, the default).
    pub quota_endpoint: Option<QuotaEndpoint>,
    /// Where checks' spans go (`None`: no traces, the default).
    pub tracing: Option<TracingSettings>,
    /// Routes, default rule and default bucketing: the table of keys on no plan.
    pub routes: RouteTable,
    /// The route table of each plan, by name: the top-level table with the plan's overrides. Every
    /// one declares the same routes (method and template) as the top level, so a request is
    /// counted in the same bucket whatever its plan.
    pub plans: BTreeMap<String, RouteTable>,
    /// A trusted request header naming the key's plan (set by Envoy, never by clients); when it
    /// is absent, the plan assigned through the admin API applies.
    pub plan_header: Option<String>,
    /// Where quotas are kept.
    pub store: StoreSettings,
    /// Behaviour when the store fails.
    pub failure_mode: FailureMode,
    /// How long checks are still answered after SIGTERM while health reports NOT_SERVING.
    pub drain_period: Duration,
    /// After the drain period, how long calls still in flight may take before the connections
    /// that remain (a health `Watch` stream never ends on its own) are closed.
    pub shutdown_grace: Duration,
    /// Buckets the local over-limit cache may hold; 0 disables it.
    pub deny_cache_entries: usize,
    /// Largest `CheckRequest` accepted, in bytes; larger ones are answered 400 unread.
    pub max_request_bytes: usize,
    /// Address of the Prometheus metrics listener (`/metrics`); `None` when metrics are off.
    pub metrics_listen: Option<SocketAddr>,
    /// The file it was read from, which [`reload`] watches; `None` for the built-in configuration
    /// and YAML given in code.
    pub source: Option<Source>,
}

/// Where a configuration was read from, so that a reload reads it the same way.
#[derive(Clone)]
pub struct Source {
    /// The configuration file, as given on the command line.
    pub path: PathBuf,
    /// The command line and environment, which win over the file on every reload too.
    pub overrides: Overrides,
    /// The text this configuration was parsed from: a change made before the watcher starts is
    /// still seen as a change.
    pub text: String,
}

/// The path only: the text and the overrides may hold a Redis password.
impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Source({})", self.path.display())
    }
}

/// Values given on the command line or in the environment, which win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen` / `TOLLGATE_LISTEN`.
    pub listen: Option<String>,
    /// `--redis-url` / `TOLLGATE_REDIS_URL`.
    pub redis_url: Option<String>,
    /// `--admin-listen` / `TOLLGATE_ADMIN_LISTEN`.
    pub admin_listen: Option<String>,
    /// `--metrics-listen` / `TOLLGATE_METRICS_LISTEN`: overrides `metrics.listen`.
    pub metrics_listen: Option<String>,
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} configuration problem(s) in {source_name}:\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    /// Where the configuration came from (a file name or "built-in configuration").
    pub source_name: String,
    /// One line per problem.
    pub problems: Vec<String>,
}

impl Config {
    /// Parses and validates YAML text.
    pub fn from_yaml(
        text: &str,
        source_name: &str,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        parse::parse(text, overrides).map_err(|problems| ConfigError {
            source_name: source_name.to_owned(),
            problems,
        })
    }

    /// Parses and validates the text of a configuration file, at start-up and on every reload.
    /// Unlike [`Config::from_yaml`], it refuses a file that holds no settings at all (empty, or
    /// only whitespace, comments or a lone `---`): that is what a file being written, or emptied by
    /// mistake, looks like, and its defaults would replace the operator's routes, prefix and key
    /// header, leaving everything under the real prefix unlimited. `{}` asks for the defaults.
    pub fn from_file_text(
        text: &str,
        source_name: &str,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        if parse::holds_no_settings(text) {
            return Err(ConfigError {
                source_name: source_name.to_owned(),
                problems: vec![
                    "the file holds no settings (it is empty, or only whitespace, comments or `---`): a file being written or emptied by mistake is never applied; write `{}` to run on the defaults"
                        .to_owned(),
                ],
            });
        }
        Self::from_yaml(text, source_name, overrides)
    }

    /// Reads a file, or the built-in configuration when `path` is `None`.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        match path {
            None => Self::from_yaml(DEFAULT_YAML, "built-in configuration", overrides),
            Some(path) => {
                let name = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                    source_name: name.clone(),
                    problems: vec![format!("cannot read the file: {e}")],
                })?;
                let mut config = Self::from_file_text(&text, &name, overrides)?;
                config.source = Some(Source {
                    path: path.to_owned(),
                    overrides: overrides.clone(),
                    text,
                });
                Ok(config)
            }
        }
    }

    /// The settings that differ from `new` and that only a restart applies: the listeners, the
    /// store and its connections, sizes fixed at start, the shutdown timings.
    pub fn restart_needed(&self, new: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let mut compare = |name, differs: bool| {
            if differs {
                changed.push(name);
            }
        };
        compare("listen", self.listen != new.listen);
        compare("admin", self.admin != new.admin);
        compare("metrics", self.metrics_listen != new.metrics_listen);
        compare("tracing", self.tracing != new.tracing);
        let store = match (&self.store, &new.store) {
            (StoreSettings::Memory { .. }, StoreSettings::Memory { .. }) => "memory_store_entries",
            _ => "redis",
        };
        compare(store, self.store != new.store);
        compare("drain_period", self.drain_period != new.drain_period);
        compare("shutdown_grace", self.shutdown_grace != new.shutdown_grace);
        compare(
            "deny_cache_entries",
            self.deny_cache_entries != new.deny_cache_entries,
        );
        compare(
            "max_request_bytes",
            self.max_request_bytes != new.max_request_bytes,
        );
        changed
    }

    /// A one-line description of the store, with any password redacted.
    pub fn store_description(&self) -> String {
        match &self.store {
            StoreSettings::Memory { .. } => "memory (single instance only)".to_owned(),
            StoreSettings::Cluster(redis) => format!("redis cluster {}", redact_url(&redis.url)),
            StoreSettings::Redis(redis) => format!("redis {}", redact_url(&redis.url)),
        }
    }
}

/// Replaces every password in a Redis URL with `***`: the user-info's (`redis://user:pw@host`)
/// and the `pass` or `password` query parameters (`redis+unix:///path?pass=pw`). The text need not
/// parse as a URL: a password with a raw `/`, `?` or `@` still ends at the last `@` before the
/// host, so everything before it is treated as user-info. Only the user name is kept.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url
        .find("://")
        .map_or(("", url), |i| (&url[..i + 3], &url[i + 3..]));
    // A Unix socket URL has no user-info; an `@` there belongs to the path or the query.
    let unix = scheme.contains("unix");
    let (user_info, host_and_rest) = match rest.rfind('@') {
        Some(at) if !unix => (Some(&rest[..at]), &rest[at..]),
        _ => (None, rest),
    };
    let mut redacted = scheme.to_owned();
    if let Some(user_info) = user_info {
        match user_info.split_once(':') {
            Some((user, _)) => {
                redacted.push_str(user);
                redacted.push_str(":***");
            }
            None => redacted.push_str(user_info),
        }
    }
    let (before_query, query) = match host_and_rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (host_and_rest, None),
    };
    redacted.push_str(before_query);
    if let Some(query) = query {
        redacted.push('?');
        let pairs = query.split('&').map(|pair| match pair.split_once('=') {
            Some((key, _))
                if key.eq_ignore_ascii_case("pass") || key.eq_ignore_ascii_case("password") =>
            {
                format!("{key}=***")
            }
            _ => pair.to_owned(),
        });
        redacted.push_str(&pairs.collect::<Vec<_>>().join("&"));
    }
    redacted
}

/// The resolved table that `tollgate check-config` prints.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "listen:          {}", self.listen)?;
        match &self.admin.token {
            None => writeln!(f, "admin:           {}, no token", self.admin.listen)?,
            Some(token) => writeln!(
                f,
                "admin:           {}, bearer token from {}",
                self.admin.listen,
                token.path.display()
            )?,
        }
        writeln!(f, "store:           {}", self.store_description())?;
        if let Some(redis) = self.store.redis() {
            let connections = if matches!(self.store, StoreSettings::Cluster(_)) {
                "one cluster connection".to_owned()
            } else {
                format!("{} connection(s)", redis.connections)
            };
            writeln!(
                f,
                "redis:           timeout {:?}, {connections}, key prefix {:?}",
                redis.timeout, redis.key_prefix
            )?;
            if let Some(ca) = &redis.tls_ca {
                writeln!(f, "redis TLS CA:    {}", ca.path.display())?;
            }
        }
        writeln!(f, "api key header:  {}", self.api_key_header)?;
        if let Some(plan_header) = &self.plan_header {
            writeln!(
                f,
                "plan header:     {plan_header} (trusted: Envoy must strip it from clients)"
            )?;
        }
        let headers = match self.rate_limit_headers {
            HeaderStyle::XRateLimit => "X-RateLimit-*",
            HeaderStyle::Ietf => "RateLimit-Policy, RateLimit (IETF draft)",
            HeaderStyle::Both => "X-RateLimit-*, RateLimit-Policy, RateLimit (IETF draft)",
        };
        writeln!(f, "headers:         {headers}")?;
        writeln!(f, "failure mode:    {:?}", self.failure_mode)?;
        writeln!(f, "drain period:    {:?}", self.drain_period)?;
        writeln!(f, "shutdown grace:  {:?}", self.shutdown_grace)?;
        writeln!(f, "deny cache:      {} buckets", self.deny_cache_entries)?;
        if let StoreSettings::Memory { max_entries } = self.store {
            writeln!(f, "memory store:    {max_entries} buckets")?;
        }
        writeln!(f, "max request:     {} bytes", self.max_request_bytes)?;
        self.write_observability(f)?;
        write!(f, "routes (most specific first):")?;
        write_table(f, &self.routes)?;
        for (name, table) in &self.plans {
            write!(f, "\nplan {name}:")?;
            write_table(f, table)?;
        }
        Ok(())
    }
}

impl Config {
    /// The metrics, the decision metadata, the quota endpoint and traces, as `check-config`
    /// prints them.
    fn write_observability(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.metrics_listen {
            Some(listen) => writeln!(f, "metrics:         http://{listen}/metrics")?,
            None => writeln!(f, "metrics:         off")?,
        }
        let on_off = |on: bool| if on { "on" } else { "off" };
        writeln!(
            f,
            "metadata:        {} (the decision, for Envoy's access log)",
            on_off(self.decision_metadata)
        )?;
        match &self.quota_endpoint {
            Some(quota) => writeln!(
                f,
                "quota endpoint:  GET {} ({} per key)",
                quota.path, quota.rule
            )?,
            None => writeln!(f, "quota endpoint:  off")?,
        }
        match &self.tracing {
            Some(tracing) => writeln!(
                f,
                "traces:          OTLP/gRPC to {}, sampling ratio {}",
                tracing.otlp_endpoint, tracing.sampling_ratio
            ),
            None => writeln!(f, "traces:          off"),
        }
    }
}

/// A route table, one route per line: method, full path, windows, cost and mode.
fn write_table(f: &mut fmt::Formatter<'_>, table: &RouteTable) -> fmt::Result {
    let prefix = table.prefix();
    for route in table.routes() {
        write!(
            f,
            "\n  {:<7}{:<40}{}",
            route.method,
            format!("{prefix}{}", route.template),
            route.rule
        )?;
    }
    let default = match table.default_bucket() {
        DefaultBucket::Shared => "one bucket per key for all undeclared routes",
        DefaultBucket::PerPath => "one bucket per key, method and path",
    };
    write!(
        f,
        "\n  {:<7}{:<40}{} ({default})",
        "*",
        format!("{prefix}/**"),
        table.default_rule()
    )
}

#[cfg(test)]
mod tests;
