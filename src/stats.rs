//! Loop telemetry (`loop.stats()`): counters cheap enough to be always on.
//!
//! What the loop thread alone updates (iterations, callbacks, polls, times,
//! the lag histogram) is added once per iteration, with a relaxed load and
//! store (plain moves: no locked instruction, as there is one writer), and
//! nothing is counted per callback: a batch's count is its length less the
//! cancelled handles skipped. What other code may update from anywhere
//! (timers scheduled and cancelled, transport bytes, accepted connections)
//! uses relaxed `fetch_add`. A snapshot taken from another thread while the
//! loop runs may be a few counts behind; nothing here is ever used for a
//! decision.
//!
//! No clock is read for the statistics: the time spent running callbacks
//! is the distance between the start of one batch and the next iteration's
//! clock read, which the loop makes anyway. Times stay `f64` seconds (as
//! the clock gives them): no conversion on the loop's path.

use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use pyo3::prelude::*;

/// Add `n` to a counter only the loop thread writes.
#[inline(always)]
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Add `seconds` to a time (f64 bits) only the loop thread writes.
#[inline(always)]
pub(crate) fn add_seconds(total: &AtomicU64, seconds: f64) {
    total.store(
        (f64::from_bits(total.load(Relaxed)) + seconds).to_bits(),
        Relaxed,
    );
}

/// Sub-buckets per power of two: a bucket is 1/8 of its values wide.
const SUB_BITS: u32 = 3;
/// The histogram's bucket index is the top bits of an `f64`: its exponent
/// and the first `SUB_BITS` bits of its mantissa (log-linear buckets, as
/// HdrHistogram's, for free). `INDEX_SHIFT` drops the rest of the mantissa.
const INDEX_SHIFT: u32 = 52 - SUB_BITS;
/// The smallest power of two with buckets of its own: 2^-30 s (~1 ns);
/// anything shorter is in bucket 0.
const MIN_EXP: i64 = -30;
/// The largest: 2^9 s (512 s); anything longer is in the last bucket (and
/// `max` is exact).
const MAX_EXP: i64 = 9;
const INDEX_BASE: i64 = (1023 + MIN_EXP) << SUB_BITS;
pub(crate) const BUCKETS: usize = ((MAX_EXP - MIN_EXP + 1) as usize) << SUB_BITS;

/// The bucket of a duration in seconds (negative and NaN: 0).
#[inline(always)]
fn bucket_of(seconds: f64) -> usize {
    let top = (seconds.max(0.0).to_bits() >> INDEX_SHIFT) as i64;
    (top - INDEX_BASE).clamp(0, BUCKETS as i64 - 1) as usize
}

/// Bucket `i` holds the durations from `low` (inclusive) to `high`
/// (exclusive; for the last bucket, anything longer too).
pub(crate) fn bucket_bounds(i: usize) -> (f64, f64) {
    let edge = |i: usize| f64::from_bits(((i as i64 + INDEX_BASE) as u64) << INDEX_SHIFT);
    (if i == 0 { 0.0 } else { edge(i) }, edge(i + 1))
}

/// A histogram of durations (seconds), written by the loop thread only.
/// (Its count is the sum of the buckets.)
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    /// f64 bits.
    sum: AtomicU64,
    /// f64 bits; non-negative f64s order as their bits do.
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Record `weight` samples of `seconds` (loop thread only).
    #[inline(always)]
    pub(crate) fn record(&self, seconds: f64, weight: u64) {
        let seconds = seconds.max(0.0); // and NaN: 0
        bump(&self.buckets[bucket_of(seconds)], weight);
        if seconds > 0.0 {
            add_seconds(&self.sum, seconds * weight as f64);
            let bits = seconds.to_bits();
            if bits > self.max.load(Relaxed) {
                self.max.store(bits, Relaxed);
            }
        }
    }

    fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Relaxed);
        }
        self.sum.store(0, Relaxed);
        self.max.store(0, Relaxed);
    }

    /// (count, sum, max, [(low, high, count)] of the non-empty buckets).
    #[allow(clippy::type_complexity)]
    pub(crate) fn snapshot(&self) -> (u64, f64, f64, Vec<(f64, f64, u64)>) {
        let buckets: Vec<(f64, f64, u64)> = self
            .buckets
            .iter()
            .enumerate()
            .filter_map(|(i, b)| match b.load(Relaxed) {
                0 => None,
                n => {
                    let (low, high) = bucket_bounds(i);
                    Some((low, high, n))
                }
            })
            .collect();
        (
            buckets.iter().map(|b| b.2).sum(),
            f64::from_bits(self.sum.load(Relaxed)),
            f64::from_bits(self.max.load(Relaxed)),
            buckets,
        )
    }
}

/// A loop's counters since it was created or `reset_stats()` was called.
#[derive(Default)]
pub(crate) struct LoopStats {
    /// Not a statistic: cancelled timers still in the heap (asyncio's
    /// `_timer_cancelled_count`), which decides when the heap is compacted.
    /// Kept here because every TimerHandle already shares this struct.
    /// Never reset.
    pub heap_cancelled: AtomicUsize,

    pub iterations: AtomicU64,
    pub callbacks: AtomicU64,
    pub timers_scheduled: AtomicU64,
    pub timers_fired: AtomicU64,
    pub timers_cancelled: AtomicU64,
    pub polls: AtomicU64,
    /// Seconds, as f64 bits.
    pub poll_time: AtomicU64,
    /// Seconds, as f64 bits.
    pub callback_time: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub accepted: AtomicU64,
    pub slow_callbacks: AtomicU64,
    /// How late callbacks ran: see `docs/telemetry.md`.
    pub lag: Histogram,
    /// `monotonic()` when counting (re)started, as f64 bits.
    pub since: AtomicU64,
}

/// What running one batch did, for `LoopStats::add_batch`.
#[derive(Default)]
pub(crate) struct BatchTally {
    /// Cancelled handles skipped, of them timers.
    pub skipped: u64,
    pub timers_skipped: u64,
    pub slow_callbacks: u64,
}

impl LoopStats {
    pub(crate) fn new(now: f64) -> LoopStats {
        let stats = LoopStats::default();
        stats.since.store(now.to_bits(), Relaxed);
        stats
    }

    /// A batch of `taken` handles, the last `timers` of them timers, ran;
    /// each non-timer callback had waited at most `ready_lag`.
    #[inline(always)]
    pub(crate) fn add_batch(&self, taken: usize, timers: usize, ready_lag: f64, t: &BatchTally) {
        let ran = taken as u64 - t.skipped;
        let fired = timers as u64 - t.timers_skipped;
        bump(&self.callbacks, ran);
        bump(&self.timers_fired, fired);
        if ran != fired {
            self.lag.record(ready_lag, ran - fired);
        }
        if t.skipped | t.slow_callbacks != 0 {
            self.add_batch_rare(t);
        }
    }

    #[cold]
    fn add_batch_rare(&self, t: &BatchTally) {
        if t.timers_skipped != 0 {
            self.timers_cancelled.fetch_add(t.timers_skipped, Relaxed);
        }
        bump(&self.slow_callbacks, t.slow_callbacks);
    }

    /// `add_batch` for a batch that KeyboardInterrupt or SystemExit cut
    /// short, leaving its last `left` handles queued. Those count when they
    /// run; a timer among them has fired already (it left the heap).
    #[cold]
    pub(crate) fn add_interrupted_batch(
        &self,
        taken: usize,
        timers: usize,
        left: usize,
        ready_lag: f64,
        t: &BatchTally,
    ) {
        let ran = (taken - left) as u64 - t.skipped;
        let timers_ran = (timers - left.min(timers)) as u64 - t.timers_skipped;
        bump(&self.callbacks, ran);
        let requeued_timers = left.min(timers) as u64;
        bump(&self.timers_fired, timers_ran + requeued_timers);
        // Their lag was recorded as they left the heap, and they get another
        // sample when they run (as queued callbacks): one sample fewer here
        // keeps it one sample per callback run.
        let others = (ran - timers_ran).saturating_sub(requeued_timers);
        if others != 0 {
            self.lag.record(ready_lag, others);
        }
        self.add_batch_rare(t);
    }

    /// Every statistic back to zero (not `heap_cancelled`).
    pub(crate) fn reset(&self, now: f64) {
        for c in [
            &self.iterations,
            &self.callbacks,
            &self.timers_scheduled,
            &self.timers_fired,
            &self.timers_cancelled,
            &self.polls,
            &self.poll_time,
            &self.callback_time,
            &self.bytes_read,
            &self.bytes_written,
            &self.accepted,
            &self.slow_callbacks,
        ] {
            c.store(0, Relaxed);
        }
        self.lag.reset();
        self.since.store(now.to_bits(), Relaxed);
    }
}

use crate::sys::clock::CycleClock;

// The Python-aware half of `sys::clock::CycleClock`: where it is cached and
// how it is calibrated without blocking other threads.
impl CycleClock {
    /// Calibrated once per process (the first time reports are turned on:
    /// a few milliseconds, without the GIL).
    pub(crate) fn get(py: Python<'_>) -> CycleClock {
        static CLOCK: std::sync::OnceLock<CycleClock> = std::sync::OnceLock::new();
        *CLOCK.get_or_init(|| py.detach(CycleClock::calibrate))
    }
}

/// Slow-callback reports: the threshold, and what the watchdog thread
/// (`ferroloop._telemetry`) reads to sample where a callback is blocked.
///
/// While reports are on, the loop publishes the start time and sequence
/// number of the callback it is running (two relaxed stores per callback);
/// the watchdog wakes a few times per threshold, and when a callback has
/// run longer than the threshold it takes the loop thread's stack, which
/// the report then shows: the line that blocked, not only where the task
/// was suspended before or after.
#[derive(Default)]
pub(crate) struct SlowWatch {
    /// Seconds as f64 bits; 0: reports are off.
    threshold: AtomicU64,
    /// The threshold in `CycleClock` ticks.
    threshold_ticks: AtomicU64,
    /// Sequence number of the callback running (or last run).
    seq: AtomicU64,
    /// `CycleClock` ticks when it started; 0: none is running.
    since: AtomicU64,
    /// The last `seq` the watchdog sampled (one sample per callback).
    sampled: AtomicU64,
    sample: Mutex<Option<(u64, Py<PyAny>)>>,
    /// The loop was closed or collected: watchers stop.
    gone: AtomicBool,
}

impl SlowWatch {
    #[inline]
    pub(crate) fn threshold(&self) -> f64 {
        f64::from_bits(self.threshold.load(Relaxed))
    }

    /// The threshold in ticks of `clock` (read once per batch).
    #[inline]
    pub(crate) fn threshold_ticks(&self) -> u64 {
        self.threshold_ticks.load(Relaxed)
    }

    /// `seconds` > 0: reports on; otherwise off.
    pub(crate) fn set_threshold(&self, seconds: f64, clock: CycleClock) {
        let seconds = if seconds > 0.0 { seconds } else { 0.0 };
        self.threshold_ticks
            .store(clock.ticks(seconds).max(1), Relaxed);
        self.threshold.store(seconds.to_bits(), Relaxed);
    }

    pub(crate) fn turn_off(&self) {
        self.threshold.store(0, Relaxed);
    }

    /// A callback starts at `t0` ticks (loop thread): its sequence number.
    #[inline(always)]
    pub(crate) fn begin(&self, t0: u64) -> u64 {
        let seq = self.seq.load(Relaxed).wrapping_add(1);
        self.since.store(t0, Release);
        self.seq.store(seq, Release);
        seq
    }

    /// No callback is running (loop thread).
    #[inline]
    pub(crate) fn end(&self) {
        self.since.store(0, Release);
    }

    /// Watchdog: the running callback's `seq` if it has run for at least
    /// the threshold by `now` (ticks) and has not been sampled yet.
    pub(crate) fn probe(&self, now: u64) -> Option<u64> {
        let seq = self.seq.load(Acquire);
        let since = self.since.load(Acquire);
        if self.threshold() <= 0.0 || since == 0 || self.seq.load(Acquire) != seq {
            return None;
        }
        let ran = now.saturating_sub(since);
        if seq == self.sampled.load(Relaxed) || ran < self.threshold_ticks() {
            return None;
        }
        Some(seq)
    }

    /// Watchdog: keep `stack` as the sample of callback `seq`, if that
    /// callback is still the one running.
    pub(crate) fn store_sample(&self, seq: u64, stack: Py<PyAny>) -> bool {
        if self.since.load(Acquire) == 0 || self.seq.load(Acquire) != seq {
            return false;
        }
        self.sampled.store(seq, Relaxed);
        let old = self.sample.lock().replace((seq, stack));
        drop(old); // unlocked
        true
    }

    /// Loop thread, reporting callback `seq`: its sample, if one was taken
    /// (`u64::MAX`: whatever is kept, to drop it).
    pub(crate) fn take_sample(&self, seq: u64) -> Option<Py<PyAny>> {
        let kept = self.sample.lock().take()?;
        (kept.0 == seq || seq == u64::MAX).then_some(kept.1)
    }

    /// The loop is closed or collected: its watchers return.
    pub(crate) fn set_gone(&self) {
        self.turn_off();
        self.gone.store(true, Relaxed);
    }
}

/// What the watchdog thread (`ferroloop._telemetry.Watchdog`) waits on:
/// `wait()` sleeps without the GIL, checking the loop's `SlowWatch` a few
/// times per threshold, and returns only when the running callback has run
/// past the threshold (to be sampled, with the GIL) or the watcher is
/// stopped. A watcher holds the loop's `SlowWatch`, not the loop.
#[pyclass(frozen, weakref, module = "ferroloop._ferroloop")]
pub struct SlowWatcher {
    watch: Arc<SlowWatch>,
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl SlowWatcher {
    pub(crate) fn new(watch: Arc<SlowWatch>) -> SlowWatcher {
        SlowWatcher {
            watch,
            stopped: Mutex::new(false),
            wake: Condvar::new(),
        }
    }
}

#[pymethods]
impl SlowWatcher {
    /// Check every `interval` seconds; return the sequence number of a
    /// callback to sample, or None once stopped (or the loop is gone).
    fn wait(&self, py: Python<'_>, interval: f64) -> Option<u64> {
        let clock = CycleClock::get(py);
        let interval = Duration::from_secs_f64(interval.clamp(1e-3, 1.0));
        py.detach(|| {
            let mut stopped = self.stopped.lock();
            loop {
                if *stopped || self.watch.gone.load(Relaxed) {
                    return None;
                }
                if let Some(seq) = self.watch.probe(clock.now()) {
                    return Some(seq);
                }
                self.wake.wait_for(&mut stopped, interval);
            }
        })
    }

    /// Make `wait` return None, now and from then on.
    fn stop(&self) {
        *self.stopped.lock() = true;
        self.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_a_value_lies_in_its_own() {
        let mut last = 0;
        let mut x = 1e-10;
        while x < 2000.0 {
            let b = bucket_of(x);
            assert!(b == last || b == last + 1, "{x}: {last} -> {b}");
            let (low, high) = bucket_bounds(b);
            if b + 1 < BUCKETS {
                assert!(
                    low <= x && x < high,
                    "{x} not in bucket {b} [{low}, {high})"
                );
                assert!(b == 0 || high <= low * 1.125 * (1.0 + 1e-12));
            }
            last = b;
            x *= 1.01;
        }
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(-1.0), 0);
        assert_eq!(bucket_of(f64::NAN), 0);
        assert_eq!(bucket_of(1e9), BUCKETS - 1);
        assert_eq!(bucket_bounds(bucket_of(1.0)), (1.0, 1.125));
        assert_eq!(bucket_bounds(bucket_of(0.75)).0, 0.75);
    }

    #[test]
    fn histogram_records_weights_and_max() {
        let h = Histogram::default();
        h.record(1e-6, 3);
        h.record(0.05, 1);
        let (count, sum, max, buckets) = h.snapshot();
        assert_eq!(count, 4);
        assert!((sum - (3e-6 + 0.05)).abs() < 1e-15);
        assert_eq!(max, 0.05);
        assert_eq!(buckets.len(), 2);
        assert_eq!(buckets[0].2, 3);
        assert!(buckets[0].0 <= 1e-6 && 1e-6 < buckets[0].1);
        h.reset();
        assert_eq!(h.snapshot().0, 0);
    }
}
