//! A quota: how many requests a window admits, and how windows are spelled in configuration.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// The longest window tollgate accepts. Every Redis key lives for one window, so this also bounds
/// how long an idle bucket occupies memory.
pub const MAX_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);

/// At most `requests` allowed requests in any trailing `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Requests admitted per window; never zero.
    pub requests: NonZeroU32,
    /// Length of the sliding window; between 1 ms and [`MAX_WINDOW`].
    pub window: Duration,
}

impl Limit {
    /// The window in whole microseconds, the unit both stores count in.
    pub fn window_micros(&self) -> u64 {
        // MAX_WINDOW keeps this far below u64::MAX.
        self.window.as_micros() as u64
    }
}

/// The most windows one route may have: each costs one read per check.
pub const MAX_WINDOWS: usize = 8;

/// Whether a rule's denials are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Requests over the limit are denied with 429.
    #[default]
    Enforce,
    /// Nothing is denied: a request over the limit is counted like an admitted one and reported
    /// as a would-be denial, so that switching to `enforce` starts from a true history.
    Shadow,
}

impl Mode {
    /// The name the configuration spells it with.
    pub fn label(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What a bucket is checked against: its windows, the slots one request takes in each, and
/// whether denials are enforced. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Shortest window first; windows are distinct.
    limits: Arc<[Limit]>,
    cost: u32,
    mode: Mode,
    /// Admission times the bucket keeps: at least the largest `requests` of every rule its bucket
    /// is checked under (all plans' rules for the route).
    capacity: u32,
    /// How long the bucket keeps a time: at least the longest window of every such rule.
    retain: Duration,
}

/// Why a rule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// No window at all.
    #[error("a route needs at least one limit")]
    NoLimits,
    /// More windows than [`MAX_WINDOWS`].
    #[error("at most {MAX_WINDOWS} limits per route, not {0}")]
    TooManyLimits(usize),
    /// Two limits with the same window: only the smaller one would ever matter.
    #[error("two limits have the same window {0}; keep one")]
    SameWindow(String),
    /// A cost of zero.
    #[error("cost must be at least 1")]
    ZeroCost,
    /// A cost no window could ever admit.
    #[error("cost {cost} is larger than the {limit} limit, which could never admit a request")]
    CostTooHigh {
        /// The cost.
        cost: u32,
        /// The limit it exceeds.
        limit: Limit,
    },
}

impl Rule {
    /// A rule of the given windows (any order), cost and mode.
    pub fn new(mut limits: Vec<Limit>, cost: u32, mode: Mode) -> Result<Self, RuleError> {
        if limits.is_empty() {
            return Err(RuleError::NoLimits);
        }
        if limits.len() > MAX_WINDOWS {
            return Err(RuleError::TooManyLimits(limits.len()));
        }
        limits.sort_by_key(|l| l.window);
        if let Some(pair) = limits
            .windows(2)
            .find(|pair| pair[0].window == pair[1].window)
        {
            return Err(RuleError::SameWindow(
                WindowDisplay(pair[0].window).to_string(),
            ));
        }
        if cost == 0 {
            return Err(RuleError::ZeroCost);
        }
        if let Some(&limit) = limits.iter().find(|l| l.requests.get() < cost) {
            return Err(RuleError::CostTooHigh { cost, limit });
        }
        let capacity = limits.iter().map(|l| l.requests.get()).max().unwrap_or(1);
        let retain = limits[limits.len() - 1].window;
        Ok(Self {
            limits: limits.into(),
            cost,
            mode,
            capacity,
            retain,
        })
    }

    /// One window, cost 1, enforced.
    pub fn single(limit: Limit) -> Self {
        Self {
            limits: Arc::new([limit]),
            cost: 1,
            mode: Mode::Enforce,
            capacity: limit.requests.get(),
            retain: limit.window,
        }
    }

    /// The same rule over a bucket that must also serve rules of up to `capacity` requests and
    /// windows of up to `retain` (the other plans' rules for the same route), so that checking
    /// under this one never drops times those count.
    pub fn sharing(&self, capacity: u32, retain: Duration) -> Self {
        Self {
            capacity: self.capacity.max(capacity),
            retain: self.retain.max(retain),
            ..self.clone()
        }
    }

    /// The windows, shortest first.
    pub fn limits(&self) -> &[Limit] {
        &self.limits
    }

    /// Slots one request takes in every window.
    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// Whether denials are enforced.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The same windows and cost in another mode.
    pub fn with_mode(&self, mode: Mode) -> Self {
        Self {
            mode,
            ..self.clone()
        }
    }

    /// How many admission times the bucket keeps: the largest `requests` of this rule's windows,
    /// or of any rule sharing its bucket.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The longest window of this rule.
    pub fn longest_window(&self) -> Duration {
        self.limits[self.limits.len() - 1].window
    }

    /// How long the bucket keeps a time: the longest window of this rule, or of any rule sharing
    /// its bucket.
    pub fn retain(&self) -> Duration {
        self.retain
    }
}

/// `10 requests / 1s + 1000 requests / 1h, cost 5, shadow`: the cost and mode only when not the
/// defaults.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, limit) in self.limits.iter().enumerate() {
            if i > 0 {
                f.write_str(" + ")?;
            }
            write!(f, "{limit}")?;
        }
        if self.cost != 1 {
            write!(f, ", cost {}", self.cost)?;
        }
        if self.mode == Mode::Shadow {
            f.write_str(", shadow")?;
        }
        Ok(())
    }
}

/// Renders a window as a short name (`1s`, `500ms`, `1h`): the policy names of the `RateLimit`
/// header fields.
pub fn window_name(window: Duration) -> String {
    let ms = window.as_millis();
    for (unit, name) in [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ] {
        if ms.is_multiple_of(unit) {
            return format!("{}{name}", ms / unit);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
impl Limit {
    /// `requests` per 60 s, for tests.
    pub(crate) fn per_minute(requests: u32) -> Self {
        Self {
            requests: NonZeroU32::new(requests).expect("a non-zero test limit"),
            window: Duration::from_secs(60),
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests / {}",
            self.requests,
            WindowDisplay(self.window)
        )
    }
}

/// Renders a window the way configuration spells it (`60s`, `500ms`), as `check-config` and
/// `tollgate admin` print it.
pub struct WindowDisplay(pub Duration);

impl fmt::Display for WindowDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

/// Why a window string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// Not `<digits><unit>`.
    #[error(
        "cannot parse window {0:?}: expected a whole number and a unit (ms, s, m, h, d), e.g. 60s"
    )]
    Syntax(String),
    /// Zero length.
    #[error("window {0:?} is zero; a window must be at least 1ms")]
    Zero(String),
    /// Longer than [`MAX_WINDOW`].
    #[error("window {0:?} is longer than the maximum of 30d")]
    TooLong(String),
}

/// Parses `500ms`, `60s`, `1m`, `1h` or `1d`.
pub fn parse_window(text: &str) -> Result<Duration, WindowError> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| WindowError::Syntax(text.to_owned()))?;
    let (digits, unit) = trimmed.split_at(split);
    let value: u64 = digits
        .parse()
        .map_err(|_| WindowError::Syntax(text.to_owned()))?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(WindowError::Syntax(text.to_owned())),
    };
    let ms = value
        .checked_mul(unit_ms)
        .ok_or_else(|| WindowError::TooLong(text.to_owned()))?;
    let window = Duration::from_millis(ms);
    if window.is_zero() {
        Err(WindowError::Zero(text.to_owned()))
    } else if window > MAX_WINDOW {
        Err(WindowError::TooLong(text.to_owned()))
    } else {
        Ok(window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_documented_unit_parses() {
        assert_eq!(parse_window("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_window("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_window("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_window("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_window("1d"), Ok(Duration::from_secs(86_400)));
    }

    #[test]
    fn malformed_windows_are_refused_with_the_reason() {
        for bad in ["", "60", "s", "1.5s", "-1s", "60 s", "60sec", "1w"] {
            assert!(
                matches!(parse_window(bad), Err(WindowError::Syntax(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(parse_window("0s"), Err(WindowError::Zero(_))));
        assert!(matches!(parse_window("31d"), Err(WindowError::TooLong(_))));
        assert!(matches!(
            parse_window("99999999999999999999d"),
            Err(WindowError::Syntax(_))
        ));
    }

    fn limit(requests: u32, window: &str) -> Limit {
        Limit {
            requests: NonZeroU32::new(requests).unwrap(),
            window: parse_window(window).unwrap(),
        }
    }

    #[test]
    fn rules_sort_their_windows_and_refuse_what_could_never_work() {
        let rule = Rule::new(vec![limit(1000, "1h"), limit(10, "1s")], 2, Mode::Shadow).unwrap();
        assert_eq!(rule.limits(), [limit(10, "1s"), limit(1000, "1h")]);
        assert_eq!(rule.capacity(), 1000);
        assert_eq!(rule.longest_window(), Duration::from_secs(3600));
        assert_eq!(
            rule.to_string(),
            "10 requests / 1s + 1000 requests / 3600s, cost 2, shadow"
        );
        assert_eq!(
            Rule::new(vec![], 1, Mode::Enforce),
            Err(RuleError::NoLimits)
        );
        assert_eq!(
            Rule::new(vec![limit(1, "60s"), limit(5, "1m")], 1, Mode::Enforce),
            Err(RuleError::SameWindow("60s".into()))
        );
        assert_eq!(
            Rule::new(vec![limit(5, "1s")], 0, Mode::Enforce),
            Err(RuleError::ZeroCost)
        );
        assert_eq!(
            Rule::new(vec![limit(5, "1s"), limit(50, "1m")], 6, Mode::Enforce),
            Err(RuleError::CostTooHigh {
                cost: 6,
                limit: limit(5, "1s")
            })
        );
        let nine = (1..=9).map(|s| limit(10, &format!("{s}s"))).collect();
        assert_eq!(
            Rule::new(nine, 1, Mode::Enforce),
            Err(RuleError::TooManyLimits(9))
        );
    }

    #[test]
    fn window_names_use_the_largest_whole_unit() {
        assert_eq!(window_name(Duration::from_secs(1)), "1s");
        assert_eq!(window_name(Duration::from_secs(3600)), "1h");
        assert_eq!(window_name(Duration::from_secs(90)), "90s");
        assert_eq!(window_name(Duration::from_millis(1500)), "1500ms");
        assert_eq!(window_name(Duration::from_secs(86_400 * 2)), "2d");
    }

    proptest! {
        #[test]
        fn display_round_trips_through_parse(ms in 1u64..=MAX_WINDOW.as_millis() as u64) {
            let window = Duration::from_millis(ms);
            prop_assert_eq!(parse_window(&WindowDisplay(window).to_string()), Ok(window));
        }
    }
}
