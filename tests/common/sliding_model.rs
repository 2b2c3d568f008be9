// The reference the quota stores are tested against: every counted slot's time, kept forever,
// and each window decided by counting, the obvious way. Shared by the memory store's unit tests
// and the store property tests (`#[path]`), so both stores answer to the same model.

/// One window: `requests` slots per `window_micros`.
#[derive(Debug, Clone, Copy)]
pub struct ModelWindow {
    pub requests: u32,
    pub window_micros: u64,
}

/// What a store must answer for one check: allowed, then per window remaining and reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub allowed: bool,
    pub windows: Vec<(u32, u64)>,
}

/// Every counted slot's time, oldest first.
#[derive(Debug, Default)]
pub struct SlidingModel {
    slots: Vec<u64>,
}

impl SlidingModel {
    /// Slots counted in the trailing `window` at `now`.
    fn used(&self, window: u64, now: u64) -> usize {
        self.slots.iter().filter(|&&t| t + window > now).count()
    }

    /// The `k`-th most recent slot's time (0: the newest).
    fn recent(&self, k: usize) -> Option<u64> {
        self.slots.len().checked_sub(k + 1).map(|i| self.slots[i])
    }

    /// Decides a request of `cost` slots at `now` and counts it when allowed (or `shadow`).
    pub fn check(
        &mut self,
        windows: &[ModelWindow],
        cost: u32,
        shadow: bool,
        now: u64,
    ) -> Expected {
        let room: Vec<bool> = windows
            .iter()
            .map(|w| self.used(w.window_micros, now) + cost as usize <= w.requests as usize)
            .collect();
        let allowed = room.iter().all(|&r| r);
        let counted = allowed || shadow;
        if counted {
            let at = self.slots.last().map_or(now, |&t| t.max(now));
            self.slots.extend(std::iter::repeat_n(at, cost as usize));
        }
        let windows = windows
            .iter()
            .zip(room)
            .map(|(w, room)| {
                let used = self.used(w.window_micros, now);
                let remaining = (w.requests as usize).saturating_sub(used) as u32;
                let reset = if counted {
                    // One more slot frees when the oldest counted one leaves, or after a count
                    // over the limit, the one that brings it below.
                    let k = used.min(w.requests as usize) - 1;
                    self.recent(k).unwrap() + w.window_micros
                } else if room {
                    now
                } else {
                    // Room for `cost` once the slot at recency N - cost has left.
                    self.recent((w.requests - cost) as usize).unwrap() + w.window_micros
                };
                (remaining, reset)
            })
            .collect();
        Expected { allowed, windows }
    }

    /// The most slots that any trailing `window` ever held: never more than its `requests` in
    /// enforce mode.
    pub fn most_in_any(&self, window: u64) -> usize {
        self.slots
            .iter()
            .map(|&start| {
                self.slots
                    .iter()
                    .filter(|&&t| t >= start && t < start + window)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }
}
