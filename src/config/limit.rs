//! A limit as configured, `{ requests, window }`, alone or in a list: every problem named at its
//! place.

use super::raw::{Checked, Problems, RawLimit};
use crate::policy::limit::{Limit, parse_window};
use std::num::NonZeroU32;

/// The largest limit accepted: a bucket keeps one time per slot of its largest window.
const MAX_REQUESTS: u64 = 100_000;

/// A non-empty list of limits, each read by [`limit`].
pub(super) fn limits(
    list: Checked<Vec<Checked<RawLimit>>>,
    at: &str,
    problems: &mut Problems,
) -> Option<Vec<Limit>> {
    let items = list.take(at, problems)?;
    if items.is_empty() {
        problems.add(at, "must list at least one { requests, window }");
        return None;
    }
    let mut limits = Vec::new();
    let mut complete = true;
    for (index, item) in items.into_iter().enumerate() {
        let at = format!("{at}[{index}]");
        match item
            .take(&at, problems)
            .and_then(|l| limit(l, &at, problems))
        {
            Some(limit) => limits.push(limit),
            None => complete = false,
        }
    }
    complete.then_some(limits)
}

/// One limit: `requests` from 1 to [`MAX_REQUESTS`], and a window.
pub(super) fn limit(raw: RawLimit, at: &str, problems: &mut Problems) -> Option<Limit> {
    let requests_given = raw.requests.is_some();
    let requests = match raw
        .requests
        .and_then(|r| r.take(&format!("{at}.requests"), problems))
    {
        None => {
            if !requests_given {
                problems.add(at, "requests is missing");
            }
            None
        }
        Some(0) => {
            problems.add(at, "requests is 0; a limit must admit at least one request");
            None
        }
        Some(n) if n <= MAX_REQUESTS => NonZeroU32::new(n as u32),
        Some(n) => {
            problems.add(
                at,
                format!("requests must be a whole number from 1 to {MAX_REQUESTS}, not {n}"),
            );
            None
        }
    };
    let window = match raw.window {
        None => {
            problems.add(at, "window is missing");
            None
        }
        Some(text) => text
            .take(&format!("{at}.window"), problems)
            .and_then(|text| parse_window(&text).map_err(|e| problems.add(at, e)).ok()),
    };
    Some(Limit {
        requests: requests?,
        window: window?,
    })
}
