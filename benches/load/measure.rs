//! Closed-loop callers, their tallies and latency histograms.

use hdrhistogram::Histogram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What one measurement saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub allowed: u64,
    pub denied: u64,
    pub errors: u64,
    pub latency_us: Option<Histogram<u64>>,
    pub elapsed: Duration,
}

impl Tally {
    pub fn per_second(&self) -> f64 {
        (self.allowed + self.denied + self.errors) as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile(&self, q: f64) -> f64 {
        self.latency_us
            .as_ref()
            .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
    }
}

/// A cheap, per-caller pseudo-random key index (xorshift): no shared state on the load side.
pub struct Keys {
    pub state: u64,
    pub count: u64,
}

impl Keys {
    pub fn new(seed: u64, count: u64) -> Self {
        Self {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            count,
        }
    }

    pub fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state % self.count
    }
}

/// Runs `callers` tasks until `duration` after `warmup`, each calling `call` in a loop (as fast as
/// answers come, or paced to `rate` calls/s in all when it is above 0); only calls that start after
/// the warm-up are measured.
pub async fn drive<F, Fut>(
    callers: usize,
    rate: f64,
    warmup: Duration,
    duration: Duration,
    call: F,
) -> Tally
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Outcome> + Send,
{
    let call = Arc::new(call);
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let (call, stop, measuring) = (call.clone(), stop.clone(), measuring.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally {
                latency_us: Some(Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()),
                ..Default::default()
            };
            // Open loop at `rate` checks/s over all callers, or closed loop when it is 0. The
            // callers are staggered over one period so that they do not fire in bursts (to the
            // timer's 1 ms resolution).
            let mut pace = (rate > 0.0).then(|| {
                let period = Duration::from_secs_f64(callers as f64 / rate);
                let offset = period.mul_f64(caller as f64 / callers as f64);
                let mut interval =
                    tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                interval
            });
            while !stop.load(Ordering::Relaxed) {
                if let Some(pace) = &mut pace {
                    pace.tick().await;
                }
                let measured = measuring.load(Ordering::Relaxed);
                let t = Instant::now();
                let outcome = call(caller).await;
                if measured && !stop.load(Ordering::Relaxed) {
                    let us = t.elapsed().as_micros() as u64;
                    tally
                        .latency_us
                        .as_mut()
                        .unwrap()
                        .saturating_record(us.max(1));
                    match outcome {
                        Outcome::Allowed => tally.allowed += 1,
                        Outcome::Denied => tally.denied += 1,
                        Outcome::Error => tally.errors += 1,
                    }
                }
            }
            tally
        }));
    }
    tokio::time::sleep(warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let t = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = t.elapsed();
    let mut total = Tally {
        latency_us: Some(Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()),
        elapsed,
        ..Default::default()
    };
    for task in tasks {
        let tally = task.await.unwrap();
        total.allowed += tally.allowed;
        total.denied += tally.denied;
        total.errors += tally.errors;
        total
            .latency_us
            .as_mut()
            .unwrap()
            .add(tally.latency_us.unwrap())
            .unwrap();
    }
    total
}

pub enum Outcome {
    Allowed,
    Denied,
    Error,
}
