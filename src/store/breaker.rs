//! A circuit breaker in front of Redis: after a run of failures, checks fail at once instead of
//! each waiting for the timeout, and one probe per interval finds out when Redis answers again.
//!
//! Pure state: the caller passes the time of every event, so the logic is tested without sleeping.
//! `Instant` rather than the wall clock, because a breaker must not stay open for an hour when NTP
//! steps the clock back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When the breaker opens and how often it probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures that open the breaker.
    pub failures_to_open: u32,
    /// Time from opening (or from the last probe) to the next probe.
    pub probe_interval: Duration,
}

/// Whether a call may go to the store, and in which role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// The breaker is closed: an ordinary call.
    Normal,
    /// The breaker is open and this call is its one probe of the interval: its result alone
    /// decides whether the breaker closes.
    Probe,
}

/// A change of state the caller reports (one log line each, not one per check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Too many consecutive failures: calls are refused from now on, except probes.
    Opened,
    /// A probe succeeded: calls go through again.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    /// A probe is let through at `next_probe`, which then moves one interval on. That also bounds
    /// a probe whose check was cancelled and never reports: the next one comes an interval later.
    Open {
        next_probe: Instant,
    },
}

/// The breaker. A std `Mutex`: it is held for a few instructions and never across an `.await`.
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    state: Mutex<State>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Whether a call may go to the store at `now`; `None` means fail at once.
    pub fn admit(&self, now: Instant) -> Option<Call> {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Some(Call::Normal),
            State::Open { next_probe } if now >= next_probe => {
                *state = State::Open {
                    next_probe: now + self.settings.probe_interval,
                };
                Some(Call::Probe)
            }
            State::Open { .. } => None,
        }
    }

    /// Records how an admitted call ended at `now`.
    pub fn record(&self, call: Call, succeeded: bool, now: Instant) -> Option<Transition> {
        let mut state = self.lock();
        match (*state, call, succeeded) {
            (State::Closed { failures }, _, true) => {
                if failures != 0 {
                    *state = State::Closed { failures: 0 };
                }
                None
            }
            (State::Closed { failures }, _, false) => {
                let failures = failures + 1;
                if failures >= self.settings.failures_to_open {
                    *state = State::Open {
                        next_probe: now + self.settings.probe_interval,
                    };
                    Some(Transition::Opened)
                } else {
                    *state = State::Closed { failures };
                    None
                }
            }
            (State::Open { .. }, Call::Probe, true) => {
                *state = State::Closed { failures: 0 };
                Some(Transition::Closed)
            }
            (State::Open { .. }, Call::Probe, false) => {
                *state = State::Open {
                    next_probe: now + self.settings.probe_interval,
                };
                None
            }
            // A call admitted before the breaker opened says nothing about Redis now; only the
            // probe decides.
            (State::Open { .. }, Call::Normal, _) => None,
        }
    }

    /// Whether calls are refused now (apart from the probes).
    pub fn is_open(&self) -> bool {
        matches!(*self.lock(), State::Open { .. })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value, valid whatever a panicking holder did.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: BreakerSettings = BreakerSettings {
        failures_to_open: 3,
        probe_interval: Duration::from_millis(500),
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A breaker opened at `t0 + 10 ms`.
    fn opened(t0: Instant) -> Breaker {
        let breaker = Breaker::new(SETTINGS);
        for i in 0..3 {
            assert_eq!(breaker.admit(t0 + ms(i)), Some(Call::Normal));
        }
        assert_eq!(breaker.record(Call::Normal, false, t0 + ms(8)), None);
        assert_eq!(breaker.record(Call::Normal, false, t0 + ms(9)), None);
        assert_eq!(
            breaker.record(Call::Normal, false, t0 + ms(10)),
            Some(Transition::Opened)
        );
        breaker
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let t0 = Instant::now();
        let breaker = Breaker::new(SETTINGS);
        for _ in 0..5 {
            breaker.record(Call::Normal, false, t0);
            breaker.record(Call::Normal, false, t0);
            // A success in between starts the count again.
            assert_eq!(breaker.record(Call::Normal, true, t0), None);
        }
        assert_eq!(breaker.admit(t0), Some(Call::Normal));
        opened(t0);
    }

    #[test]
    fn open_refuses_until_the_probe_interval_has_passed() {
        let t0 = Instant::now();
        let breaker = opened(t0);
        assert!(breaker.is_open());
        assert_eq!(breaker.admit(t0 + ms(11)), None);
        assert_eq!(breaker.admit(t0 + ms(509)), None);
        assert_eq!(breaker.admit(t0 + ms(510)), Some(Call::Probe));
    }

    #[test]
    fn exactly_one_probe_per_interval() {
        let t0 = Instant::now();
        let breaker = opened(t0);
        assert_eq!(breaker.admit(t0 + ms(600)), Some(Call::Probe));
        for later in [600, 601, 800, 1099] {
            assert_eq!(breaker.admit(t0 + ms(later)), None, "at {later} ms");
        }
        // A probe that never reported (its check was cancelled) does not block the next one.
        assert_eq!(breaker.admit(t0 + ms(1100)), Some(Call::Probe));
    }

    #[test]
    fn a_successful_probe_closes() {
        let t0 = Instant::now();
        let breaker = opened(t0);
        assert_eq!(breaker.admit(t0 + ms(510)), Some(Call::Probe));
        assert_eq!(
            breaker.record(Call::Probe, true, t0 + ms(520)),
            Some(Transition::Closed)
        );
        assert!(!breaker.is_open());
        assert_eq!(breaker.admit(t0 + ms(521)), Some(Call::Normal));
        // Closed means counting from zero again.
        assert_eq!(breaker.record(Call::Normal, false, t0 + ms(530)), None);
        assert_eq!(breaker.record(Call::Normal, false, t0 + ms(531)), None);
        assert_eq!(breaker.admit(t0 + ms(532)), Some(Call::Normal));
    }

    #[test]
    fn a_failed_probe_reopens_for_a_full_interval() {
        let t0 = Instant::now();
        let breaker = opened(t0);
        assert_eq!(breaker.admit(t0 + ms(510)), Some(Call::Probe));
        assert_eq!(breaker.record(Call::Probe, false, t0 + ms(560)), None);
        assert_eq!(breaker.admit(t0 + ms(1059)), None);
        assert_eq!(breaker.admit(t0 + ms(1060)), Some(Call::Probe));
    }

    #[test]
    fn only_the_probe_decides_while_open() {
        let t0 = Instant::now();
        let breaker = opened(t0);
        // Late answers of calls admitted before the breaker opened.
        assert_eq!(breaker.record(Call::Normal, true, t0 + ms(20)), None);
        assert_eq!(breaker.record(Call::Normal, false, t0 + ms(21)), None);
        assert_eq!(breaker.admit(t0 + ms(22)), None);
        assert_eq!(breaker.admit(t0 + ms(510)), Some(Call::Probe));
    }
}
