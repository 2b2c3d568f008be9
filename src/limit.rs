//! A quota: how many requests a window admits, and how windows are spelled in configuration.

use std::fmt;
use std::num::NonZeroU32;
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

/// Renders a window the way configuration spells it (`60s`, `500ms`).
struct WindowDisplay(Duration);

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

    proptest! {
        #[test]
        fn display_round_trips_through_parse(ms in 1u64..=MAX_WINDOW.as_millis() as u64) {
            let window = Duration::from_millis(ms);
            prop_assert_eq!(parse_window(&WindowDisplay(window).to_string()), Ok(window));
        }
    }
}
