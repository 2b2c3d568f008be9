//! The binary's command line: arguments, log set-up, and the `tollgate admin` client ([`admin`]).

pub mod admin;

use crate::config::Overrides;
use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::path::PathBuf;

/// tollgate: API rate limits for Envoy's ext_authz filter.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Args {
    /// YAML configuration file; without it the built-in contract table and the in-memory store.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen address, overriding the file's `listen`.
    #[arg(long, env = "TOLLGATE_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Admin API listen address, overriding the file's `admin.listen`.
    #[arg(long, env = "TOLLGATE_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// Redis URL, overriding the file's `redis.url` (and selecting the Redis store).
    #[arg(
        long,
        env = "TOLLGATE_REDIS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub redis_url: Option<String>,
    /// Metrics listen address, overriding the file's `metrics.listen`.
    #[arg(long, env = "TOLLGATE_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Log line format; the level comes from RUST_LOG (default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a configuration file, print the resolved route table and exit.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Call the admin API of a running tollgate.
    Admin(AdminArgs),
}

/// `tollgate admin`: where the admin API is and how to call it.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The admin listener of the tollgate to call.
    #[arg(long, default_value = crate::config::DEFAULT_ADMIN_LISTEN, value_name = "ADDR")]
    pub addr: String,
    /// A file holding the bearer token, when the server has `admin.token_file`.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The call to make.
    #[command(subcommand)]
    pub call: AdminCall,
}

/// Admin API calls.
#[derive(Debug, Subcommand)]
pub enum AdminCall {
    /// Show an API key's quota for a request, without counting it.
    Quota(QuotaTarget),
    /// Forget every request counted in that quota: the key's next request gets a full window.
    Reset(QuotaTarget),
    /// List the resolved route table (of a plan with --plan).
    Routes {
        /// The plan whose table to list; the top-level table without it.
        #[arg(long)]
        plan: Option<String>,
    },
    /// Show the plan an API key is on.
    GetPlan {
        /// The API key (or set TOLLGATE_API_KEY, which keeps it out of the process list).
        #[arg(long, env = "TOLLGATE_API_KEY", hide_env_values = true)]
        key: String,
    },
    /// Put an API key on a plan; an empty plan ("") takes it off its plan.
    SetPlan {
        /// The API key (or set TOLLGATE_API_KEY, which keeps it out of the process list).
        #[arg(long, env = "TOLLGATE_API_KEY", hide_env_values = true)]
        key: String,
        /// The plan's name, as `plans:` in the configuration names it.
        plan: String,
    },
}

/// A quota, named by an API key and a request as a client sends it.
#[derive(Debug, clap::Args)]
pub struct QuotaTarget {
    /// The API key (or set TOLLGATE_API_KEY, which keeps it out of the process list).
    #[arg(long, env = "TOLLGATE_API_KEY", hide_env_values = true)]
    pub key: String,
    /// The request's method, e.g. GET.
    pub method: String,
    /// The request's path, e.g. /v1/campaigns/7.
    pub path: String,
    /// The plan to resolve the request under (with plan_header, what the header would say);
    /// without it, the key's assigned plan.
    #[arg(long, default_value = "")]
    pub plan: String,
}

/// Log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Args {
    /// The values that override the configuration file.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            redis_url: self.redis_url.clone(),
            admin_listen: self.admin_listen.clone(),
            metrics_listen: self.metrics_listen.clone(),
        }
    }
}

/// Installs the global `tracing` subscriber.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
