//! The run loop: `_run_until_stopped` and one iteration of it
//! (`run_once`): poll (or skip a poll that cannot find anything new), turn
//! readiness into the fds' handles, queue the due timers, then run the
//! batch that was ready. ARCHITECTURE.md ("One iteration") gives the rules;
//! the per-callback timing used for slow-callback reports and debug mode is
//! in `slow_callbacks.rs`, off this path.
//!
//! `RunScratch` keeps the buffers one iteration needs from one to the next,
//! so that a busy loop allocates nothing per iteration.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pyo3::prelude::*;

use super::state::LoopState;
use super::CoreLoop;
use crate::handles::{release, Handle};
use crate::poller::{RawEvent, Ready};
use crate::stats::{add_seconds, bump, BatchTally};
use crate::sys::clock::monotonic;

/// asyncio never sleeps longer than a day in one poll.
const MAX_POLL_SECONDS: f64 = 24.0 * 3600.0;

/// While callbacks are ready and no fd but the loop's own self-pipe is
/// watched, the poller is asked again only once this much time has passed
/// since the last poll: a zero-timeout `epoll_wait` per iteration costs more
/// than a task step there, and nothing a program can observe is waiting on
/// it (signals wake the Python-level handlers without it). While any other
/// fd is watched, only the poll right after one that found I/O is skipped
/// (`RunScratch::after_io`): I/O is never more than two iterations away.
const BUSY_POLL_INTERVAL: f64 = 250e-6;

/// What `_run_until_stopped` keeps from one iteration to the next.
struct RunScratch {
    batch: VecDeque<Py<Handle>>,
    events: Vec<RawEvent>,
    ready_fds: Vec<Ready>,
    /// Cancelled timers popped with the due ones, released unlocked.
    dead: Vec<Py<Handle>>,
    last_poll: f64,
    /// The last iteration polled and got I/O: what its I/O callbacks
    /// scheduled (a task woken by `data_received`) runs next without polling
    /// again first, as libuv runs its ready queue before each poll.
    after_io: bool,
    /// When the last batch started (NaN before the first of this run: its
    /// lag counts 0).
    batch_start: f64,
    /// The last batch ran callbacks, whose running time is not counted yet:
    /// it ends at the next clock read.
    uncounted: bool,
}

impl CoreLoop {
    /// Run iterations until `stop()` is called. The Python `run_forever`
    /// around it does the per-run setup and teardown.
    pub(super) fn run_until_stopped(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        let mut rs = RunScratch {
            batch: VecDeque::new(),
            events: Vec::with_capacity(64),
            ready_fds: Vec::with_capacity(64),
            dead: Vec::new(),
            last_poll: f64::NEG_INFINITY,
            after_io: false,
            batch_start: f64::NAN,
            uncounted: false,
        };
        let outcome = loop {
            if let Err(e) = Self::run_once(slf, &mut rs) {
                break Err(e);
            }
            if this.stopping.load(Ordering::Relaxed) {
                break Ok(());
            }
        };
        if rs.uncounted {
            add_seconds(&this.stats.callback_time, monotonic() - rs.batch_start);
        }
        outcome?;
        this.stopping.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Turn poller reports into ready handles (asyncio's `_process_events`).
    fn queue_io(&self, py: Python<'_>, ready_fds: &mut Vec<Ready>) -> PyResult<()> {
        if ready_fds.is_empty() {
            return Ok(());
        }
        let mut stale: Vec<(RawFd, u32)> = Vec::new();
        {
            let mut st = self.state.lock();
            let LoopState { ready, fds, .. } = &mut *st;
            fds.queue_ready(py, ready_fds, ready, &mut stale);
        }
        for (fd, dir) in stale {
            // A cancelled reader/writer is unregistered, as asyncio does.
            self.unwatch(fd, dir)?;
        }
        Ok(())
    }

    /// One loop iteration: poll, queue due timers, run what was ready.
    fn run_once(slf: &Bound<'_, Self>, rs: &mut RunScratch) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let stats = &*this.stats;

        // One clock read per busy iteration (on some VMs it costs as much as
        // a task step's worth of bookkeeping); re-read only after blocking.
        // It also ends the previous batch, for the time spent in callbacks.
        let mut now = monotonic();
        if rs.uncounted {
            rs.uncounted = false;
            add_seconds(&stats.callback_time, now - rs.batch_start);
        }
        bump(&stats.iterations, 1);
        let mut st = this.state.lock();
        let purged = st.timers.purge_cancelled(&stats.heap_cancelled);
        let timeout = if !st.ready.is_empty() || this.stopping.load(Ordering::Relaxed) {
            Some(Duration::ZERO)
        } else {
            st.timers
                .next_deadline()
                .map(|when| Duration::from_secs_f64((when - now).clamp(0.0, MAX_POLL_SECONDS)))
        };
        // Busy: the poll does not block.
        let busy = timeout == Some(Duration::ZERO);
        // Skip a zero-timeout poll (see BUSY_POLL_INTERVAL) right after one
        // that found I/O: the kernel was asked one batch ago, and asyncio
        // would poll here only to find the answer unchanged most of the time.
        // The next iteration polls again, so I/O waits at most one batch
        // longer; a stopping loop always polls, as asyncio's last iteration does.
        let after_io = std::mem::take(&mut rs.after_io);
        let skip_poll = busy
            && ((after_io && !this.stopping.load(Ordering::Relaxed))
                || (!st.fds.watches_program_fds() && now - rs.last_poll < BUSY_POLL_INTERVAL));
        let timers;
        if skip_poll {
            // Busy, and no poll due: one lock does it all.
            timers = st.take_batch(stats, now, &mut rs.batch, &mut rs.dead);
            drop(st);
            purged.into_iter().for_each(release);
        } else {
            drop(st);
            purged.into_iter().for_each(release);
            bump(&stats.polls, 1);
            let polled = if busy {
                rs.last_poll = now;
                // Nothing to wait for: no need to let go of the GIL.
                this.poller.wait(&mut rs.events, timeout, &mut rs.ready_fds)
            } else {
                let poller = &this.poller;
                let (events, ready_fds) = (&mut rs.events, &mut rs.ready_fds);
                let r = py.detach(|| poller.wait(events, timeout, ready_fds));
                let before = now;
                now = monotonic();
                add_seconds(&stats.poll_time, now - before);
                rs.last_poll = now;
                r
            };
            match polled {
                Ok(()) => {
                    rs.after_io = !rs.ready_fds.is_empty();
                    this.queue_io(py, &mut rs.ready_fds)?
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => py.check_signals()?,
                Err(e) => return Err(e.into()),
            }
            timers = this
                .state
                .lock()
                .take_batch(stats, now, &mut rs.batch, &mut rs.dead);
        }
        if !rs.dead.is_empty() {
            rs.dead.drain(..).for_each(release);
        }
        // Lag of the non-timer callbacks. When the loop was busy, what is
        // ready now may have been scheduled (or its fd become ready) at any
        // time since the last batch started: the bound on how long it
        // waited. After blocking, it became ready while the loop waited.
        let ready_lag = if busy { now - rs.batch_start } else { 0.0 };
        rs.batch_start = now;
        let taken = rs.batch.len();
        if taken == 0 {
            return Ok(());
        }
        rs.uncounted = true;

        let debug = this.debug.load(Ordering::Relaxed);
        let threshold = this.slow.threshold();
        let mut tally = BatchTally::default();
        let outcome = if debug || threshold > 0.0 {
            let outcome = Self::run_batch_timed(slf, &mut rs.batch, timers, threshold, &mut tally);
            this.slow.end();
            outcome
        } else {
            Self::run_batch(py, &mut rs.batch, timers, &mut tally)
        };
        if let Err(e) = outcome {
            // KeyboardInterrupt/SystemExit: what was not run stays queued,
            // in order, as with asyncio's deque.
            let left = rs.batch.len();
            stats.add_interrupted_batch(taken, timers, left, ready_lag, &tally);
            let mut st = this.state.lock();
            while let Some(rest) = rs.batch.pop_back() {
                st.ready.push_front(rest);
            }
            return Err(e);
        }
        stats.add_batch(taken, timers, ready_lag, &tally);
        Ok(())
    }

    /// A cancelled handle in the batch (the last `timers` are timers).
    #[cold]
    pub(super) fn skip_cancelled(
        handle: Py<Handle>,
        left: usize,
        timers: usize,
        tally: &mut BatchTally,
    ) {
        tally.skipped += 1;
        tally.timers_skipped += u64::from(left < timers);
        release(handle);
    }

    /// Run the batch: the common path, with no clock read and nothing
    /// counted per callback.
    #[inline]
    fn run_batch(
        py: Python<'_>,
        batch: &mut VecDeque<Py<Handle>>,
        timers: usize,
        tally: &mut BatchTally,
    ) -> PyResult<()> {
        while let Some(handle) = batch.pop_front() {
            let h = handle.bind(py);
            if h.get().is_cancelled() {
                Self::skip_cancelled(handle, batch.len(), timers, tally);
                continue;
            }
            let outcome = Handle::run(h);
            release(handle);
            outcome?;
        }
        Ok(())
    }
}
