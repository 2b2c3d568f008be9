//! A log line that repeats at most once per interval, however often its event happens: a flood of
//! failures or refusals must not flood the log too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When an event may be logged: the first at once, then at most once per interval, with the count
/// of those not logged meanwhile.
pub struct Throttle {
    interval: Duration,
    started: Instant,
    /// Milliseconds since `started` of the last line, plus one (0: never logged).
    last_logged: AtomicU64,
    unlogged: AtomicU64,
}

impl Throttle {
    /// Lines at most once per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            started: Instant::now(),
            last_logged: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
        }
    }

    /// One more event: `Some(events not logged since the last line)` when this one is to be
    /// logged, else `None` (and it is counted for the next line).
    pub fn event(&self) -> Option<u64> {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.last_logged.load(Ordering::Relaxed);
        let due = last == 0 || now >= last + self.interval.as_millis() as u64;
        if due
            && self
                .last_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.unlogged.swap(0, Ordering::Relaxed))
        } else {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// The events not logged so far, counted from zero again.
    pub fn take_unlogged(&self) -> u64 {
        self.unlogged.swap(0, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::Throttle;
    use std::time::Duration;

    #[test]
    fn the_first_event_is_logged_and_the_next_ones_are_counted() {
        let throttle = Throttle::new(Duration::from_secs(3600));
        assert_eq!(throttle.event(), Some(0));
        assert_eq!(throttle.event(), None);
        assert_eq!(throttle.event(), None);
        assert_eq!(throttle.take_unlogged(), 2);
        let every_time = Throttle::new(Duration::ZERO);
        assert_eq!(every_time.event(), Some(0));
        assert_eq!(every_time.event(), Some(0));
    }
}
