//! Store failures in the log without flooding it.

use crate::config::FailureMode;
use crate::store::StoreError;
use crate::telemetry::throttle::Throttle;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// At most one store-failure warning per this interval; the others are counted.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Logs store failures without flooding: the first at once, then one line per interval with the
/// count of those not logged, and one line when the store answers again.
pub(super) struct FailureLog {
    throttle: Throttle,
    failing: AtomicBool,
}

impl FailureLog {
    pub(super) fn new() -> Self {
        Self {
            throttle: Throttle::new(FAILURE_LOG_INTERVAL),
            failing: AtomicBool::new(false),
        }
    }

    pub(super) fn record(&self, error: &StoreError, mode: FailureMode) {
        self.failing.store(true, Ordering::Relaxed);
        if let Some(unlogged) = self.throttle.event() {
            let action = match mode {
                FailureMode::Allow => "allowing requests without rate-limit headers",
                FailureMode::Deny => "denying requests with 503",
            };
            tracing::warn!(error = %error, failures_not_logged = unlogged, "rate-limit store unavailable; {action}");
        }
    }

    pub(super) fn recovered(&self) {
        if self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(
                failures_not_logged = self.throttle.take_unlogged(),
                "rate-limit store answers again"
            );
        }
    }
}
