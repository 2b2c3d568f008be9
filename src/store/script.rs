//! The Lua scripts' arguments and replies, as the Redis store sends and reads them: a reply of the
//! wrong shape is a store error, never a panic.

use super::{Outcome, QuotaRead, StoreError, Usage, WindowOutcome, WindowUsage};
use crate::policy::limit::{Mode, Rule};

/// What takes a script's arguments: a script invocation, or a function call's command.
pub(super) trait Args {
    fn push(&mut self, arg: u64);
}

impl Args for redis::ScriptInvocation<'_> {
    fn push(&mut self, arg: u64) {
        self.arg(arg);
    }
}

impl Args for redis::Cmd {
    fn push(&mut self, arg: u64) {
        self.arg(arg);
    }
}

/// Appends each window's requests and length in µs, the scripts' window arguments.
pub(super) fn window_args(args: &mut impl Args, rule: &Rule) {
    for limit in rule.limits() {
        args.push(limit.requests.get().into());
        args.push(limit.window_micros());
    }
}

/// The check's arguments (check.lua): cost, shadow (1 or 0), capacity, retain, then the windows.
pub(super) fn check_args(args: &mut impl Args, rule: &Rule) {
    args.push(rule.cost().into());
    args.push(u64::from(rule.mode() == Mode::Shadow));
    args.push(rule.capacity().into());
    args.push(retain_millis(rule));
    window_args(args, rule);
}

/// How long in ms a bucket of `rule` lives after its last counted request, rounded up: the
/// scripts hand it to `PEXPIRE` and `SET … PX` as the text it arrives as.
pub(super) fn retain_millis(rule: &Rule) -> u64 {
    rule.retain().as_micros().div_ceil(1000) as u64
}

/// A script reply of integers, `head` of them first, then `per_window` per window of `rule`;
/// anything else is a store error, not a panic.
pub(super) fn reply_of(
    reply: Vec<u64>,
    head: usize,
    per_window: usize,
    rule: &Rule,
) -> Result<Vec<u64>, StoreError> {
    if reply.len() == head + per_window * rule.limits().len() {
        Ok(reply)
    } else {
        Err(unexpected_reply(reply.len(), rule.limits().len()))
    }
}

/// The numbers of a reply packed as big-endian doubles (`check.lua`); they are whole and not
/// negative.
pub(super) fn unpacked(packed: &[u8]) -> Result<Vec<u64>, StoreError> {
    let doubles = packed.chunks_exact(8);
    if !doubles.remainder().is_empty() {
        return Err(StoreError::Redis(redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "unexpected script reply",
            format!("{} bytes are not whole doubles", packed.len()),
        ))));
    }
    Ok(doubles
        .map(|bytes| f64::from_be_bytes(bytes.try_into().expect("8 bytes")) as u64)
        .collect())
}

/// A script reply of the wrong length: a store error, not a panic.
fn unexpected_reply(values: usize, windows: usize) -> StoreError {
    StoreError::Redis(redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected script reply",
        format!("{values} values for {windows} windows"),
    )))
}

/// The quota script's reply: the own request's outcome, then when it was admitted three values per
/// window of each of `buckets`.
pub(super) fn quota_read(
    reply: Vec<u64>,
    buckets: &[(&str, &Rule)],
) -> Result<QuotaRead, StoreError> {
    let windows: usize = buckets.iter().map(|(_, rule)| rule.limits().len()).sum();
    let admitted = reply.first() == Some(&1);
    if reply.len() != 4 + if admitted { 3 * windows } else { 0 } {
        return Err(unexpected_reply(reply.len(), windows));
    }
    let now_micros = reply[1];
    let mut values = reply[4..].chunks_exact(3).map(|w| WindowUsage {
        used: w[0] as u32,
        remaining: w[1] as u32,
        reset_micros: w[2],
    });
    let read = |rule: &Rule, values: &mut dyn Iterator<Item = WindowUsage>| Usage {
        now_micros,
        windows: values.take(rule.limits().len()).collect(),
    };
    Ok(QuotaRead {
        admitted: Outcome {
            allowed: admitted,
            now_micros,
            windows: vec![WindowOutcome {
                remaining: reply[2] as u32,
                reset_micros: reply[3],
            }],
        },
        buckets: if admitted {
            buckets
                .iter()
                .map(|(_, rule)| read(rule, &mut values))
                .collect()
        } else {
            Vec::new()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::unpacked;

    #[test]
    fn a_packed_reply_is_read_as_whole_doubles_or_refused() {
        let packed: Vec<u8> = [1.0f64, 1_765_000_000_123_456.0, 0.0]
            .iter()
            .flat_map(|d| d.to_be_bytes())
            .collect();
        assert_eq!(unpacked(&packed).unwrap(), [1, 1_765_000_000_123_456, 0]);
        assert!(unpacked(&packed[..packed.len() - 1]).is_err());
        assert_eq!(unpacked(&[]).unwrap(), Vec::<u64>::new());
    }
}
