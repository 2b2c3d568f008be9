//! Whether the store can limit: it has reached a supported server at least once. Health reports
//! NOT_SERVING until then, so that a replica pointed at a wrong or an unsupported Redis never
//! takes traffic it would only fail open.
//!
//! Connections are made in the background and report every attempt here; this logs the first
//! failure of a run (as an error when the server is too old) and the first success after it, not
//! every attempt.

use super::version::{MINIMUM, Server};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

/// Waits for the store's first answer; cheap to clone.
#[derive(Debug, Clone)]
pub struct Readiness(watch::Receiver<bool>);

impl Readiness {
    /// Ready from the start: a store that needs no server.
    pub fn ready() -> Self {
        Self(watch::channel(true).1)
    }

    /// Whether the store has answered once.
    pub fn is_ready(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the store has answered once; `false` if it went away first.
    pub async fn wait(mut self) -> bool {
        self.0.wait_for(|ready| *ready).await.is_ok()
    }
}

/// Why a connection could not be made ready for checks.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectError {
    /// Connecting, `INFO` or loading the script failed.
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    /// TCP, TLS, AUTH, `INFO` and the script's load did not complete in time.
    #[error("not connected within {0:?}")]
    Timeout(Duration),
    /// `INFO server` names no version tollgate can read.
    #[error("INFO server reports no redis_version")]
    UnknownVersion,
    /// The server is older than the scripts need.
    #[error("{0} is older than the oldest supported version, redis {MINIMUM}")]
    Unsupported(Server),
}

impl ConnectError {
    /// The server behind `info` (an `INFO server` reply), if the store may use it.
    pub(super) fn check_version(info: &str) -> Result<Server, Self> {
        let server = Server::from_info(info).ok_or(Self::UnknownVersion)?;
        if server.is_supported() {
            Ok(server)
        } else {
            Err(Self::Unsupported(server))
        }
    }
}

/// What was logged last, so that a run of failures (or of successes) is logged once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logged {
    Nothing,
    Unreachable,
    Unsupported,
    Connected,
}

/// The connecting side of a [`Readiness`].
pub(super) struct Reporter {
    ready: watch::Sender<bool>,
    /// What the connection is to, for the log: `redis` or `redis cluster`.
    target: &'static str,
    logged: Mutex<Logged>,
}

impl Reporter {
    /// Not ready yet.
    pub(super) fn new(target: &'static str) -> Self {
        Self {
            ready: watch::channel(false).0,
            target,
            logged: Mutex::new(Logged::Nothing),
        }
    }

    /// A receiver for the health reporting.
    pub(super) fn readiness(&self) -> Readiness {
        Readiness(self.ready.subscribe())
    }

    /// A connection to `server` is ready for checks.
    pub(super) fn connected(&self, server: &Server) {
        self.ready
            .send_if_modified(|ready| !std::mem::replace(ready, true));
        if self.log(Logged::Connected) {
            tracing::info!(%server, "connected to {}; checks are limited", self.target);
        }
    }

    /// An attempt failed; the caller tries again.
    pub(super) fn failed(&self, error: &ConnectError) {
        match error {
            ConnectError::Unsupported(server) => {
                if self.log(Logged::Unsupported) {
                    tracing::error!(
                        %server,
                        minimum = %MINIMUM,
                        "{} is older than the oldest supported version (redis {MINIMUM}): it is not used, checks fail open (or 503 with failure_mode: deny) and health stays NOT_SERVING until a supported server answers",
                        self.target
                    );
                }
            }
            _ => {
                if self.log(Logged::Unreachable) {
                    tracing::warn!(
                        %error,
                        "cannot connect to {}; checks fail open until it answers, retrying in the background",
                        self.target
                    );
                }
            }
        }
    }

    /// Records `now` as the last thing logged; whether it differs from what was.
    fn log(&self, now: Logged) -> bool {
        let mut logged = self.logged.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *logged, now) != now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_older_than_the_minimum_is_refused_with_both_versions() {
        let error =
            ConnectError::check_version("# Server\r\nredis_version:6.0.20\r\n").unwrap_err();
        assert!(matches!(error, ConnectError::Unsupported(_)), "{error:?}");
        assert_eq!(
            error.to_string(),
            "redis 6.0.20 is older than the oldest supported version, redis 6.2.0"
        );
        assert!(matches!(
            ConnectError::check_version("redis_mode:standalone\r\n"),
            Err(ConnectError::UnknownVersion)
        ));
        let server = ConnectError::check_version("redis_version:6.2.14\r\n").unwrap();
        assert_eq!(server.to_string(), "redis 6.2.14");
    }

    #[tokio::test]
    async fn ready_after_the_first_connection_and_for_good() {
        let reporter = Reporter::new("redis");
        let readiness = reporter.readiness();
        assert!(!readiness.is_ready());
        let old = Server::from_info("redis_version:5.0.14\n").unwrap();
        reporter.failed(&ConnectError::Unsupported(old));
        assert!(!readiness.is_ready(), "an unsupported server is not ready");
        let server = Server::from_info("redis_version:7.0.15\n").unwrap();
        reporter.connected(&server);
        assert!(readiness.is_ready());
        reporter.failed(&ConnectError::Timeout(Duration::from_secs(2)));
        assert!(readiness.clone().wait().await, "it stays ready");
        assert!(Readiness::ready().is_ready());
    }

    #[test]
    fn a_run_of_the_same_outcome_is_logged_once() {
        let reporter = Reporter::new("redis");
        assert!(reporter.log(Logged::Unreachable));
        assert!(!reporter.log(Logged::Unreachable));
        assert!(reporter.log(Logged::Unsupported));
        assert!(reporter.log(Logged::Connected));
        assert!(!reporter.log(Logged::Connected));
        assert!(reporter.log(Logged::Unreachable));
    }
}
