//! The Redis store: one call of the sliding-window script per check (`FCALL` where the server has
//! functions, else `EVALSHA`).

use super::breaker::{Breaker, BreakerSettings, Call, Transition};
use super::call::{Request, within_timeout};
use super::cluster::{self, Cluster};
use super::connections::{self, Connections};
use super::function::CheckCode;
use super::readiness::{Readiness, Reporter};
use super::script::{check_args, quota_read, reply_of, retain_millis, unpacked, window_args};
use super::{
    BucketRef, Outcome, PlanAssignments, QuotaRead, QuotaStore, StoreError, Usage, WindowOutcome,
    WindowUsage,
};
use crate::api_key::KeyDigest;
use crate::config::{RedisSettings, Topology};
use crate::policy::limit::Rule;
use redis::cluster::ClusterClient;
use redis::io::tcp::{TcpSettings, socket2::TcpKeepalive};
use redis::{AsyncConnectionConfig, IntoConnectionInfo};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The quota endpoint's script: its own request counted, then every bucket of the key read, in
/// one call; loaded on first use.
const QUOTA_SCRIPT: &str = concat!(
    include_str!("ring.lua"),
    include_str!("admit.lua"),
    include_str!("quota.lua")
);

/// The read-only script of the admin API's `GetQuota`; loaded on first use, like the others after
/// a `NOSCRIPT`.
const PEEK_SCRIPT: &str = concat!(include_str!("ring.lua"), include_str!("peek.lua"));

/// Plan assignments: a change and its version in one step.
const PLANS_SCRIPT: &str = concat!(include_str!("mark.lua"), include_str!("plans.lua"));

/// Plan assignments written back from a replica's copy after the store lost them.
const RESTORE_PLANS_SCRIPT: &str = concat!(include_str!("mark.lua"), include_str!("restore.lua"));

/// The field of the plans hash that marks its changes (digests are hex, so never this).
const PLANS_VERSION: &str = "#version";

/// Assignments read per `HSCAN` call after a change.
const PLANS_PAGE: usize = 1000;

/// The script of the admin API's `ResetQuota`.
const RESET_SCRIPT: &str = concat!(include_str!("ring.lua"), include_str!("reset.lua"));

/// The breakers' settings: the standalone server's, and each cluster primary's. Five failures in
/// a row is a Redis that is down, not one slow answer; half a second between probes bounds both
/// the checks that wait for a probe (two a second) and the time limits stay off after Redis heals.
const BREAKER: BreakerSettings = BreakerSettings {
    failures_to_open: 5,
    probe_interval: Duration::from_millis(500),
};

/// TCP settings of every Redis socket. Keepalive finds a dead peer of an idle connection, and
/// TCP_USER_TIMEOUT one that leaves sent data unacknowledged, in about ten seconds instead of the
/// kernel's defaults (two hours, and about fifteen minutes of retransmissions). Nagle's algorithm
/// stays as redis-rs sets it.
fn tcp_settings() -> TcpSettings {
    TcpSettings::default()
        .set_keepalive(
            TcpKeepalive::new()
                .with_time(Duration::from_secs(5))
                .with_interval(Duration::from_secs(2))
                .with_retries(3),
        )
        .set_user_timeout(Duration::from_secs(10))
}

/// Quotas kept in Redis, shared by every replica.
pub struct RedisStore {
    backend: Backend,
    code: Arc<CheckCode>,
    peek_script: redis::Script,
    quota_script: redis::Script,
    reset_script: redis::Script,
    plans_script: redis::Script,
    restore_plans_script: redis::Script,
    timeout: Duration,
    key_prefix: String,
    readiness: Readiness,
}

impl RedisStore {
    /// Starts connecting in the background, so tollgate starts (and fails open) while Redis is
    /// down or too old; [`QuotaStore::readiness`] tells when a supported server first answered.
    /// Must run inside the tokio runtime.
    pub fn new(settings: &RedisSettings, topology: Topology) -> Result<Self, StoreError> {
        let code = Arc::new(CheckCode::new());
        let reporter = Arc::new(Reporter::new(match topology {
            Topology::Standalone => "redis",
            Topology::Cluster => "redis cluster",
        }));
        let readiness = reporter.readiness();
        let backend = match topology {
            Topology::Cluster => Backend::cluster(settings, code.clone(), reporter)?,
            Topology::Standalone => Backend::standalone(settings, code.clone(), reporter)?,
        };
        Ok(Self {
            backend,
            code,
            peek_script: redis::Script::new(PEEK_SCRIPT),
            quota_script: redis::Script::new(QUOTA_SCRIPT),
            reset_script: redis::Script::new(RESET_SCRIPT),
            plans_script: redis::Script::new(PLANS_SCRIPT),
            restore_plans_script: redis::Script::new(RESTORE_PLANS_SCRIPT),
            timeout: settings.timeout,
            key_prefix: settings.key_prefix.clone(),
            readiness,
        })
    }

    /// `<prefix>:ring:{<key digest>}:<bucket>`. The hash tag keeps every bucket of one API key
    /// in one Redis Cluster slot, so a script that touches several of them stays legal. `ring`
    /// names the layout (ring.lua): the sorted sets of earlier versions had none, so the two never
    /// mix.
    pub fn key_name(&self, bucket: BucketRef<'_>) -> String {
        // Joined, not formatted: through `format!` it cost five times the instructions.
        [
            self.key_prefix.as_str(),
            ":ring:{",
            bucket.key.as_str(),
            "}:",
            bucket.name,
        ]
        .concat()
    }

    /// `<prefix>:plans`: the hash of plan assignments, one key (one cluster slot) for all.
    fn plans_key(&self) -> String {
        format!("{}:plans", self.key_prefix)
    }

    /// One script call, on the connection to the server or to the primary that owns `key`.
    async fn call<T: redis::FromRedisValue>(
        &self,
        key: &str,
        request: Request<'_>,
    ) -> Result<T, StoreError> {
        match &self.backend {
            Backend::Standalone {
                connections,
                breaker,
            } => self.call_standalone(connections, breaker, request).await,
            Backend::Cluster(cluster) => cluster.call(key, request, self.timeout).await,
        }
    }

    /// One script call on a standalone server, through the breaker, on the next connection.
    async fn call_standalone<T: redis::FromRedisValue>(
        &self,
        connections: &Connections,
        breaker: &Breaker,
        request: Request<'_>,
    ) -> Result<T, StoreError> {
        // Before the breaker: with no connection ready the check fails at once without using up
        // a probe, so the first check after a connection is made probes.
        let mut lease = connections.lease()?;
        let Some(call) = breaker.admit(Instant::now()) else {
            return Err(StoreError::CircuitOpen);
        };
        let result = within_timeout(self.timeout, request.send(&mut lease.connection)).await;
        match (&result, call) {
            (Ok(_), _) => connections.succeeded(&lease),
            // The next probe must not find the same dead connection.
            (Err(_), Call::Probe) => connections.replace(&lease),
            (Err(e), Call::Normal) => connections.failed(&lease, e),
        }
        match breaker.record(call, result.is_ok(), Instant::now()) {
            Some(Transition::Opened) => {
                // Any of them may be dead: each is made again from scratch in the background.
                connections.replace_all();
                if let Err(e) = &result {
                    tracing::warn!(
                        error = %e,
                        failures = BREAKER.failures_to_open,
                        probe_interval = ?BREAKER.probe_interval,
                        "redis keeps failing: circuit breaker open, checks fail at once while one check per interval probes redis"
                    );
                }
            }
            Some(Transition::Closed) => {
                tracing::info!("redis answered the probe: circuit breaker closed");
            }
            None => {}
        }
        result
    }
}

/// How the store reaches Redis.
enum Backend {
    /// A single Redis (or a primary behind a proxy): a few multiplexed connections that pipeline
    /// concurrent requests, made in the background, behind one breaker (they all reach the same
    /// server).
    Standalone {
        /// Boxed: the client and its configuration are large and there is one per process.
        connections: Box<Connections>,
        breaker: Breaker,
    },
    /// Redis Cluster: one cluster connection that routes each script call to the node owning the
    /// key's slot, follows redirects and reconnects to nodes by itself, with a breaker per
    /// primary.
    Cluster(Cluster),
}

impl Backend {
    /// A cluster client, connected by a background task that reports to `reporter`.
    fn cluster(
        settings: &RedisSettings,
        code: Arc<CheckCode>,
        reporter: Arc<Reporter>,
    ) -> Result<Self, StoreError> {
        let mut builder = ClusterClient::builder(vec![settings.url.as_str()])
            .connection_timeout(cluster::CONNECT_TIMEOUT.max(settings.timeout))
            .response_timeout(settings.timeout)
            .tcp_settings(tcp_settings())
            // A redirect after a resharding is retried, and so is a call that met the connection
            // while it refreshed its slot map (which fails every pending call, whatever its node);
            // a dead node's keys are stopped by its breaker.
            .retries(2);
        if let Some(certificates) = certificates(settings) {
            builder = builder.certs(certificates);
        }
        Ok(Backend::Cluster(Cluster::start(
            builder.build()?,
            code,
            BREAKER,
            reporter,
        )))
    }

    /// The connections to one server, made in the background, which report to `reporter`.
    fn standalone(
        settings: &RedisSettings,
        code: Arc<CheckCode>,
        reporter: Arc<Reporter>,
    ) -> Result<Self, StoreError> {
        let info = settings
            .url
            .as_str()
            .into_connection_info()?
            .set_tcp_settings(tcp_settings());
        let client = match certificates(settings) {
            None => redis::Client::open(info)?,
            Some(certificates) => redis::Client::build_with_tls(info, certificates)?,
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connections::CONNECT_TIMEOUT))
            .set_response_timeout(Some(settings.timeout));
        Ok(Backend::Standalone {
            connections: Box::new(Connections::start(
                client,
                config,
                code,
                reporter,
                settings.connections,
            )),
            breaker: Breaker::new(BREAKER),
        })
    }
}

/// The CA of `settings` as redis-rs takes it, when there is one.
fn certificates(settings: &RedisSettings) -> Option<redis::TlsCertificates> {
    settings.tls_ca.as_ref().map(|ca| redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(ca.pem.clone()),
    })
}

impl QuotaStore for RedisStore {
    async fn check(&self, bucket: BucketRef<'_>, rule: &Rule) -> Result<Outcome, StoreError> {
        let key = self.key_name(bucket);
        let packed: Vec<u8> = if self.code.by_function() {
            let mut call = self.code.fcall(&key);
            check_args(&mut call, rule);
            let library = self.code.library();
            self.call(
                &key,
                Request::Function {
                    call: &call,
                    library,
                },
            )
            .await?
        } else {
            let mut invocation = self.code.script().key(&key);
            check_args(&mut invocation, rule);
            self.call(&key, Request::Script(&invocation)).await?
        };
        let reply = reply_of(unpacked(&packed)?, 2, 2, rule)?;
        Ok(Outcome {
            allowed: reply[0] == 1,
            now_micros: reply[1],
            windows: reply[2..]
                .chunks_exact(2)
                .map(|w| WindowOutcome {
                    remaining: w[0] as u32,
                    reset_micros: w[1],
                })
                .collect(),
        })
    }

    async fn peek(&self, bucket: BucketRef<'_>, rule: &Rule) -> Result<Usage, StoreError> {
        let key = self.key_name(bucket);
        let mut invocation = self.peek_script.key(&key);
        window_args(&mut invocation, rule);
        let reply = reply_of(
            self.call(&key, Request::Script(&invocation)).await?,
            1,
            3,
            rule,
        )?;
        Ok(Usage {
            now_micros: reply[0],
            windows: reply[1..]
                .chunks_exact(3)
                .map(|w| WindowUsage {
                    used: w[0] as u32,
                    remaining: w[1] as u32,
                    reset_micros: w[2],
                })
                .collect(),
        })
    }

    async fn read_quotas(
        &self,
        own: BucketRef<'_>,
        own_rule: &Rule,
        buckets: &[(&str, &Rule)],
    ) -> Result<QuotaRead, StoreError> {
        let own_key = self.key_name(own);
        let mut invocation = self.quota_script.key(&own_key);
        let limit = own_rule.limits()[0];
        invocation
            .arg(own_rule.capacity())
            .arg(retain_millis(own_rule))
            .arg(limit.requests.get())
            .arg(limit.window_micros());
        for &(name, rule) in buckets {
            invocation.key(self.key_name(BucketRef { key: own.key, name }));
            invocation.arg(rule.limits().len());
            window_args(&mut invocation, rule);
        }
        let reply: Vec<u64> = self.call(&own_key, Request::Script(&invocation)).await?;
        quota_read(reply, buckets)
    }

    async fn reset(&self, bucket: BucketRef<'_>, rule: &Rule) -> Result<u32, StoreError> {
        let key = self.key_name(bucket);
        let mut invocation = self.reset_script.key(&key);
        invocation.arg(rule.retain().as_micros() as u64);
        self.call(&key, Request::Script(&invocation)).await
    }

    async fn set_plan(&self, key: &KeyDigest, plan: Option<&str>) -> Result<(), StoreError> {
        let hash = self.plans_key();
        let mut invocation = self.plans_script.key(&hash);
        invocation.arg(key.as_str()).arg(plan.unwrap_or(""));
        let _mark: String = self.call(&hash, Request::Script(&invocation)).await?;
        Ok(())
    }

    async fn restore_plans(
        &self,
        plans: &HashMap<KeyDigest, Arc<str>>,
    ) -> Result<bool, StoreError> {
        let hash = self.plans_key();
        let mut invocation = self.restore_plans_script.key(&hash);
        for (key, plan) in plans {
            invocation.arg(key.as_str()).arg(&**plan);
        }
        let mark: Option<String> = self.call(&hash, Request::Script(&invocation)).await?;
        Ok(mark.is_some())
    }

    async fn get_plan(&self, key: &KeyDigest) -> Result<Option<String>, StoreError> {
        let hash = self.plans_key();
        let mut command = redis::cmd("HGET");
        command.arg(&hash).arg(key.as_str());
        self.call(&hash, Request::Command(&command)).await
    }

    /// Plain commands, not scripts: `INFO commandstats` then tells the checks (`evalsha`) from
    /// the refresh of plans (`hget` every interval, `hscan` pages after a change). Paged, so that
    /// no single call holds Redis for long, however many keys have plans.
    async fn plans_since(
        &self,
        known: Option<&str>,
    ) -> Result<Option<PlanAssignments>, StoreError> {
        let hash = self.plans_key();
        let mut command = redis::cmd("HGET");
        command.arg(&hash).arg(PLANS_VERSION);
        let version: Option<String> = self.call(&hash, Request::Command(&command)).await?;
        if version.as_deref() == known {
            return Ok(None);
        }
        let mut plans = HashMap::new();
        let mut cursor = 0u64;
        loop {
            let mut command = redis::cmd("HSCAN");
            command.arg(&hash).arg(cursor).arg("COUNT").arg(PLANS_PAGE);
            let (next, page): (u64, Vec<(String, String)>) =
                self.call(&hash, Request::Command(&command)).await?;
            // Written only by set_plan; anything else in the hash is not ours and is skipped.
            plans.extend(
                page.into_iter().filter_map(|(digest, plan)| {
                    Some((KeyDigest::from_hex(&digest)?, plan.into()))
                }),
            );
            if next == 0 {
                break;
            }
            cursor = next;
        }
        // Changes made during the scan move the mark again: the next refresh reads them.
        Ok(Some(PlanAssignments { version, plans }))
    }

    fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    fn breakers_open(&self) -> usize {
        match &self.backend {
            Backend::Standalone { breaker, .. } => usize::from(breaker.is_open()),
            Backend::Cluster(cluster) => cluster.breakers_open(),
        }
    }
}
