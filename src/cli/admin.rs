//! `tollgate admin`: the admin API from the command line, for operators without `grpcurl`.

use super::{AdminArgs, AdminCall, QuotaTarget};
use crate::admin::pb::admin_client::AdminClient;
use crate::admin::pb::{
    self, GetPlanRequest, GetQuotaRequest, ListRoutesRequest, ResetQuotaRequest, SetPlanRequest,
};
use crate::policy::limit::{Limit, Mode, Rule, WindowDisplay};
use std::fmt::Write as _;
use std::num::NonZeroU32;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Time allowed to connect and for each call: the admin API answers at once or not at all.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The token file could not be read.
    #[error("cannot read the token file {0}: {1}")]
    TokenFile(String, #[source] std::io::Error),
    /// The token is not something an HTTP header can carry.
    #[error("the token in {0} is not printable ASCII")]
    BadToken(String),
    /// `--addr` is not an address.
    #[error("{0:?} is not an address like {default}: {1}", default = crate::config::DEFAULT_ADMIN_LISTEN)]
    Address(String, #[source] tonic::transport::Error),
    /// No connection.
    #[error("cannot connect to the admin API at {0}: {1}")]
    Connect(String, #[source] tonic::transport::Error),
    /// The server refused the call.
    #[error("{:?}: {}", .0.code(), .0.message())]
    Call(#[from] tonic::Status),
}

/// Runs one admin command, prints its answer and returns the exit code: 0, or 1 with the reason
/// on standard error.
pub async fn run(args: &AdminArgs) -> ExitCode {
    match call(args).await {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tollgate admin: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Makes the call and renders its answer.
pub async fn call(args: &AdminArgs) -> Result<String, ClientError> {
    let mut client = connect(args).await?;
    match &args.call {
        AdminCall::Quota(target) => {
            let quota = client
                .get_quota(GetQuotaRequest {
                    api_key: target.key.clone(),
                    method: target.method.clone(),
                    path: target.path.clone(),
                    plan: target.plan.clone(),
                })
                .await?
                .into_inner();
            Ok(render_quota(target, &quota))
        }
        AdminCall::Reset(target) => {
            let reset = client
                .reset_quota(ResetQuotaRequest {
                    api_key: target.key.clone(),
                    method: target.method.clone(),
                    path: target.path.clone(),
                    plan: target.plan.clone(),
                })
                .await?
                .into_inner();
            Ok(if reset.limited {
                format!(
                    "bucket:    {}\nreset:     {} counted request(s) forgotten\n",
                    reset.bucket, reset.cleared
                )
            } else {
                not_limited(target)
            })
        }
        AdminCall::Routes { plan } => {
            let plan = plan.clone().unwrap_or_default();
            let routes = client
                .list_routes(ListRoutesRequest { plan })
                .await?
                .into_inner();
            Ok(render_routes(&routes))
        }
        AdminCall::GetPlan { key } => {
            let request = GetPlanRequest {
                api_key: key.clone(),
            };
            Ok(render_plan(&client.get_plan(request).await?.into_inner()))
        }
        AdminCall::SetPlan { key, plan } => {
            let request = SetPlanRequest {
                api_key: key.clone(),
                plan: plan.clone(),
            };
            Ok(render_plan(&client.set_plan(request).await?.into_inner()))
        }
    }
}

/// The admin API's client, connected, sending the token of `args` (if any) with every call.
async fn connect(
    args: &AdminArgs,
) -> Result<AdminClient<InterceptedService<Channel, impl Interceptor>>, ClientError> {
    let token = match &args.token_file {
        None => None,
        Some(path) => {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| ClientError::TokenFile(shown.clone(), e))?;
            let value: MetadataValue<_> = format!("Bearer {}", text.trim())
                .parse()
                .map_err(|_| ClientError::BadToken(shown))?;
            Some(value)
        }
    };
    let uri = if args.addr.contains("://") {
        args.addr.clone()
    } else {
        format!("http://{}", args.addr)
    };
    let channel = Endpoint::from_shared(uri)
        .map_err(|e| ClientError::Address(args.addr.clone(), e))?
        .connect_timeout(TIMEOUT)
        .timeout(TIMEOUT)
        .connect()
        .await
        .map_err(|e| ClientError::Connect(args.addr.clone(), e))?;
    Ok(AdminClient::with_interceptor(
        channel,
        move |mut request: tonic::Request<()>| {
            if let Some(token) = &token {
                request
                    .metadata_mut()
                    .insert("authorization", token.clone());
            }
            Ok(request)
        },
    ))
}

fn render_plan(assignment: &pb::PlanAssignment) -> String {
    match (assignment.plan.as_str(), assignment.known) {
        ("", _) => "plan:      none (top-level limits)\n".to_owned(),
        (plan, true) => format!("plan:      {plan}\n"),
        (plan, false) => format!(
            "plan:      {plan} (not in the configuration: top-level limits apply until it is)\n"
        ),
    }
}

fn not_limited(target: &QuotaTarget) -> String {
    format!(
        "{} {}: not rate limited (outside the path prefix, or OPTIONS)\n",
        target.method, target.path
    )
}

fn render_quota(target: &QuotaTarget, quota: &pb::Quota) -> String {
    if !quota.limited {
        return not_limited(target);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut out = format!("bucket:    {}\n", quota.bucket);
    if !quota.plan.is_empty() {
        let _ = writeln!(out, "plan:      {}", quota.plan);
    }
    if quota.cost > 1 {
        let _ = writeln!(out, "cost:      {} slots per request", quota.cost);
    }
    if quota.mode() == pb::Mode::Shadow {
        let _ = writeln!(out, "mode:      shadow (counted, never denied)");
    }
    for w in &quota.windows {
        let wait = w.reset_unix_ms.saturating_sub(now) as f64 / 1000.0;
        let _ = writeln!(
            out,
            "window:    {} / {}: used {}, remaining {}, reset {} (in {wait:.1} s)",
            w.limit,
            window(w.window_ms),
            w.used,
            w.remaining,
            w.reset_unix_ms
        );
    }
    let wait = quota.reset_unix_ms.saturating_sub(now) as f64 / 1000.0;
    let _ = write!(
        out,
        "limit:     {} requests / {}\nused:      {}\nremaining: {}\nreset:     {} (in {wait:.1} s)\n",
        quota.limit,
        window(quota.window_ms),
        quota.used,
        quota.remaining,
        quota.reset_unix_ms,
    );
    out
}

/// The table as `check-config` prints it.
fn render_routes(table: &pb::ListRoutesResponse) -> String {
    let mut out = String::from("routes (most specific first):\n");
    for route in &table.routes {
        let rule = rule(&route.limits, route.cost, route.mode());
        let _ = writeln!(out, "  {:<7}{:<40}{rule}", route.method, route.path);
    }
    if let Some(default) = &table.default_route {
        let bucketing = match default.bucketing() {
            pb::DefaultBucket::PerPath => "one bucket per key, method and path",
            pb::DefaultBucket::Shared | pb::DefaultBucket::Unspecified => {
                "one bucket per key for all undeclared routes"
            }
        };
        let rule = rule(&default.limits, default.cost, default.mode());
        let _ = writeln!(out, "  {:<7}{:<40}{rule} ({bucketing})", "*", default.path);
    }
    out
}

/// A rule as `check-config` prints it (`10 requests / 1s + 1000 requests / 3600s, cost 2`), by
/// the same [`Rule`] printer; a rule the server sent that is not one is shown as such.
fn rule(limits: &[pb::Limit], cost: u32, mode: pb::Mode) -> String {
    let limits = limits
        .iter()
        .map(|l| {
            Some(Limit {
                requests: NonZeroU32::new(l.requests)?,
                window: Duration::from_millis(l.window_ms),
            })
        })
        .collect::<Option<Vec<_>>>();
    let mode = match mode {
        pb::Mode::Shadow => Mode::Shadow,
        pb::Mode::Enforce | pb::Mode::Unspecified => Mode::Enforce,
    };
    limits
        .and_then(|limits| Rule::new(limits, cost, mode).ok())
        .map_or_else(|| "(not a valid rule)".to_owned(), |rule| rule.to_string())
}

fn window(ms: u64) -> WindowDisplay {
    WindowDisplay(Duration::from_millis(ms))
}
