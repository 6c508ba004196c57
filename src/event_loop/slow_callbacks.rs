//! The instrumented way to run a batch, taken only when slow-callback
//! reports are on (`loop.set_slow_callback_threshold`, timed with the
//! cycle counter) or in debug mode (asyncio's `slow_callback_duration`
//! warnings and `_current_handle`, timed as asyncio does). Kept apart from
//! `run_loop.rs` so that the common path reads no clock per callback.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use pyo3::prelude::*;

use super::CoreLoop;
use crate::handles::{release, Handle};
use crate::stats::BatchTally;
use crate::sys::clock::monotonic;
use crate::sys::clock::CycleClock;

impl CoreLoop {
    /// Run the batch timing each callback: ferroloop's slow-callback reports
    /// (`threshold` > 0, timed with the cycle counter) and/or debug mode
    /// (asyncio's `slow_callback_duration` warnings, timed as asyncio does).
    #[inline(never)]
    pub(super) fn run_batch_timed(
        slf: &Bound<'_, Self>,
        batch: &mut VecDeque<Py<Handle>>,
        timers: usize,
        threshold: f64,
        tally: &mut BatchTally,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let watch = &this.slow;
        let clock = CycleClock::get(py);
        let limit = if threshold > 0.0 {
            watch.threshold_ticks()
        } else {
            u64::MAX
        };
        // Read once per batch, as the untimed path does.
        let debug = this.debug.load(Ordering::Relaxed);
        let mut t0 = clock.now();
        // (The caller ends the watch: `watch.end()` after the batch.)
        while let Some(handle) = batch.pop_front() {
            let h = handle.bind(py);
            if h.get().is_cancelled() {
                Self::skip_cancelled(handle, batch.len(), timers, tally);
                continue;
            }
            if debug {
                let seq = watch.begin(clock.now());
                let (outcome, slow) = Self::run_debug(slf, h, threshold, seq);
                watch.end();
                tally.slow_callbacks += u64::from(slow);
                release(handle);
                outcome?;
                t0 = clock.now();
                continue;
            }
            let seq = watch.begin(t0);
            let (outcome, callback) = Handle::run_keep(h);
            let mut t1 = clock.now();
            let ran = t1.wrapping_sub(t0);
            if ran >= limit {
                tally.slow_callbacks += 1;
                watch.end();
                Self::report_slow(slf, h, callback, clock.seconds(ran), threshold, seq);
                // Reporting is not the next callback's time.
                t1 = clock.now();
            }
            t0 = t1;
            release(handle);
            outcome?;
        }
        Ok(())
    }

    /// Debug mode: run one handle as asyncio's `_run_once` does (with
    /// `_current_handle` set, warning past `slow_callback_duration`), and
    /// report it to ferroloop's slow-callback log too if that is on (true
    /// if it did).
    fn run_debug(
        slf: &Bound<'_, Self>,
        h: &Bound<'_, Handle>,
        threshold: f64,
        seq: u64,
    ) -> (PyResult<()>, bool) {
        let py = slf.py();
        let run = || -> PyResult<bool> {
            // asyncio's default exception handler reports where the running
            // handle was created, through `_current_handle`.
            slf.setattr("_current_handle", h)?;
            let t0 = monotonic();
            let (outcome, callback) = Handle::run_keep(h);
            let dt = monotonic() - t0;
            slf.setattr("_current_handle", py.None())?;
            let slow: f64 = slf.getattr("slow_callback_duration")?.extract()?;
            if dt >= slow {
                crate::handles::glue(py, "log_slow_callback")?.call1((h, dt))?;
            }
            let reported = threshold > 0.0 && dt >= threshold;
            if reported {
                Self::report_slow(slf, h, callback, dt, threshold, seq);
            }
            outcome.map(|()| reported)
        };
        match run() {
            Ok(reported) => (Ok(()), reported),
            Err(e) => (Err(e), false),
        }
    }

    /// Log one slow callback (`ferroloop._telemetry.report_slow_callback`),
    /// with the watchdog's sample of callback `seq` if it took one.
    #[cold]
    fn report_slow(
        slf: &Bound<'_, Self>,
        h: &Bound<'_, Handle>,
        callback: Option<Bound<'_, PyAny>>,
        seconds: f64,
        threshold: f64,
        seq: u64,
    ) {
        let py = slf.py();
        let this = slf.get();
        let sample = this.slow.take_sample(seq);
        let report = crate::handles::glue(py, "report_slow_callback")
            .and_then(|f| f.call1((slf, h, callback, seconds, threshold, sample)));
        if let Err(e) = report {
            e.write_unraisable(py, Some(h.as_any()));
        }
    }
}
