//! `CoreLoop`: the part of the event loop that runs on every iteration,
//! and the base class of the Python-level `ferroloop.Loop`. This file holds
//! the object itself and its Python-facing API (`#[pymethods]`: one block,
//! each method a short delegation to the part that owns the work):
//!
//! - `state.rs`: `LoopState`, what the one lock guards (ready queue, timer
//!   heap, fd table), and how due timers join the ready queue;
//! - `fd_table.rs`: `FdTable`, fd → reader/writer handles and the interest
//!   given to the poller;
//! - `scheduling.rs`: `call_soon` / `call_at`'s handles, and asyncio's
//!   checks on them;
//! - `io_watch.rs`: `_add_reader` & co. and the transports' `watch` /
//!   `unwatch` over the fd table;
//! - `run_loop.rs`: `_run_until_stopped` and one iteration (`run_once`);
//! - `slow_callbacks.rs`: running a batch with per-callback timing
//!   (slow-callback reports, debug mode);
//! - `tasks.rs`: asyncio Futures and Tasks made without a Python frame.
//!
//! Everything else asyncio's loop does (run_until_complete, the exception
//! handler, executors, DNS, sockets, transports) lives in Python subclasses
//! (`ferroloop._loop.Loop`) that call into this core.
//!
//! Locking: all mutable state sits in one `parking_lot::Mutex`, taken for a
//! few instructions at a time and *never* held while Python code runs —
//! callbacks call back into `call_soon`, and releasing a Python reference can
//! run `__del__`, so handles removed under the lock are dropped after it.

mod fd_table;
mod io_watch;
mod run_loop;
mod scheduling;
mod slow_callbacks;
mod state;
mod tasks;
#[cfg(test)]
mod test_support;

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::handles::{release, Handle, TimerHandle};
use crate::poller::{Poller, READABLE, WRITABLE};
use crate::stats::{LoopStats, SlowWatch, SlowWatcher};
use crate::sys::clock::monotonic;
use crate::sys::clock::CycleClock;
use state::LoopState;
pub(crate) use tasks::new_future;

#[pyclass(subclass, frozen, weakref, module = "ferroloop._ferroloop")]
pub struct CoreLoop {
    /// `weakref.ref(self)`, made once and shared by every handle.
    self_ref: PyOnceLock<Py<PyAny>>,
    state: Mutex<LoopState>,
    poller: Poller,
    stopping: AtomicBool,
    closed: AtomicBool,
    debug: AtomicBool,
    /// `loop._task_factory` (None: asyncio.Task), kept natively so that
    /// `create_task` can skip Python on the common path.
    task_factory: Mutex<Option<Py<PyAny>>>,
    /// `loop.stats()`'s counters, and the count of cancelled timers still
    /// in the heap (shared with every TimerHandle).
    stats: Arc<LoopStats>,
    /// Slow-callback reports (`loop.set_slow_callback_threshold`), shared
    /// with the watchdog thread's `SlowWatcher`.
    slow: Arc<SlowWatch>,
}

#[pymethods]
impl CoreLoop {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        crate::sys::malloc::tune_malloc_for_large_messages();
        Ok(CoreLoop {
            self_ref: PyOnceLock::new(),
            task_factory: Mutex::new(None),
            state: Mutex::new(LoopState::default()),
            poller: Poller::new()?,
            stopping: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            debug: AtomicBool::new(false),
            stats: Arc::new(LoopStats::new(monotonic())),
            slow: Arc::new(SlowWatch::default()),
        })
    }

    /// Handles are hidden from the GC while queued (see `gc_untrack`); on
    /// their behalf the loop shows the GC what they refer to — for those
    /// only the loop holds, so that nothing reachable from elsewhere is ever
    /// mistaken for garbage. An abandoned, unclosed loop is thus collected
    /// (with asyncio's ResourceWarning) like asyncio's own.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // Never block in the GC: a loop busy in another thread is skipped.
        let Some(st) = self.state.try_lock() else {
            return Ok(());
        };
        let handles = st.ready.iter().chain(st.timers.iter());
        for h in handles.chain(st.fds.handles()) {
            // SAFETY: reading the refcount of a live object.
            if unsafe { ffi::Py_REFCNT(h.as_ptr()) } == 1 {
                h.get().visit_contents(&visit)?;
            }
        }
        Ok(())
    }

    fn time(&self) -> f64 {
        monotonic()
    }

    #[pyo3(signature = (delay, callback, *args, context=None))]
    fn call_later(
        slf: &Bound<'_, Self>,
        delay: Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        if delay.is_none() {
            return Err(PyTypeError::new_err("delay must not be None"));
        }
        let delay: f64 = delay.extract()?;
        let when = monotonic() + delay;
        Self::schedule_at(
            slf,
            when,
            when.into_pyobject(slf.py())?.into_any(),
            callback,
            args,
            context,
        )
    }

    #[pyo3(signature = (when, callback, *args, context=None))]
    fn call_at(
        slf: &Bound<'_, Self>,
        when: Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        if when.is_none() {
            return Err(PyTypeError::new_err("when cannot be None"));
        }
        let when_f64: f64 = when.extract()?;
        Self::schedule_at(slf, when_f64, when, callback, args, context)
    }

    fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    #[getter]
    fn _stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    #[setter(_stopping)]
    fn set_stopping(&self, value: bool) {
        self.stopping.store(value, Ordering::Relaxed);
    }

    #[getter]
    fn _closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    #[setter(_closed)]
    fn set_closed(&self, value: bool) {
        self.closed.store(value, Ordering::Relaxed);
    }

    #[getter]
    fn _task_factory(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.task_factory.lock().as_ref().map(|f| f.clone_ref(py))
    }

    #[setter(_task_factory)]
    fn set_task_factory_slot(&self, factory: Option<Py<PyAny>>) {
        let old = std::mem::replace(&mut *self.task_factory.lock(), factory);
        drop(old); // unlocked: may run __del__
    }

    /// `asyncio.Future(loop=self)`, without a Python frame.
    fn create_future<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        new_future(slf)
    }

    /// `asyncio.Task(coro, loop=self, name=name, context=context)` straight
    /// from Rust, or asyncio's own path when it must (`tasks.rs`).
    #[pyo3(signature = (coro, *, name=None, context=None, **task_kwargs))]
    fn create_task<'py>(
        slf: &Bound<'py, Self>,
        coro: &Bound<'py, PyAny>,
        name: Option<&Bound<'py, PyAny>>,
        context: Option<&Bound<'py, PyAny>>,
        task_kwargs: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::new_task(slf, coro, name, context, task_kwargs)
    }

    /// Native: CPython's C Future and Task ask it on every creation.
    fn get_debug(&self) -> bool {
        self.debug.load(Ordering::Relaxed)
    }

    #[getter]
    fn _debug(&self) -> bool {
        self.debug.load(Ordering::Relaxed)
    }

    #[setter(_debug)]
    fn set_debug_flag(&self, value: bool) {
        self.debug.store(value, Ordering::Relaxed);
    }

    /// Register `callback(*args)` to run whenever `fd` is readable; returns
    /// the Handle (asyncio's selector loop contract). `context` is 3.15's
    /// (a transport's callbacks run in its creator's context).
    #[pyo3(signature = (fd, callback, *args, context=None))]
    fn _add_reader(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        Self::add_fd_callback(slf, READABLE, fd, callback, args, context)
    }

    #[pyo3(signature = (fd, callback, *args, context=None))]
    fn _add_writer(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        Self::add_fd_callback(slf, WRITABLE, fd, callback, args, context)
    }

    fn _remove_reader(&self, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.remove_fd_callback(READABLE, fd)
    }

    fn _remove_writer(&self, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.remove_fd_callback(WRITABLE, fd)
    }

    /// Wake the loop from another thread (asyncio's self-pipe write).
    fn _write_to_self(&self) {
        self.poller.wake();
    }

    /// Run iterations until `stop()` is called. The Python `run_forever`
    /// around it does the per-run setup and teardown.
    fn _run_until_stopped(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::run_until_stopped(slf)
    }

    /// Release every queued handle and the poller (end of `close()`).
    fn _close_core(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let (ready, timers, fds) = {
            let mut st = self.state.lock();
            let fds = st.fds.take_handles();
            (std::mem::take(&mut st.ready), st.timers.take_all(), fds)
        };
        self.stats.heap_cancelled.store(0, Ordering::Relaxed);
        self.slow.set_gone();
        drop(self.slow.take_sample(u64::MAX));
        self.poller.close();
        release_all(ready, timers, fds);
    }

    /// The poller interest and handles of `fd`, or None: what the
    /// selector view (`ferroloop._loop._SelectorView`) reports.
    #[allow(clippy::type_complexity)]
    fn _fd_key(
        &self,
        py: Python<'_>,
        fd: RawFd,
    ) -> Option<(u32, Option<Py<Handle>>, Option<Py<Handle>>)> {
        let st = self.state.lock();
        let (mask, reader, writer) = st.fds.key(fd)?;
        Some((
            mask,
            reader.map(|h| h.clone_ref(py)),
            writer.map(|h| h.clone_ref(py)),
        ))
    }

    /// Mark `fd` (asyncio's self-pipe) as the loop's own: watching it alone
    /// does not make every busy iteration poll.
    fn _set_internal_fd(&self, fd: RawFd) {
        self.state.lock().fds.set_internal_fd(fd);
    }

    /// Every fd with a reader or writer.
    fn _fds(&self) -> Vec<RawFd> {
        self.state.lock().fds.fds().collect()
    }

    /// `loop.stats()`'s raw material (`ferroloop._telemetry` shapes it).
    fn _stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.check_closed()?;
        let s = &*self.stats;
        let d = PyDict::new(py);
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        d.set_item("iterations", load(&s.iterations))?;
        d.set_item("callbacks", load(&s.callbacks))?;
        d.set_item("timers_scheduled", load(&s.timers_scheduled))?;
        d.set_item("timers_fired", load(&s.timers_fired))?;
        d.set_item("timers_cancelled", load(&s.timers_cancelled))?;
        d.set_item("polls", load(&s.polls))?;
        d.set_item("poll_time", f64::from_bits(load(&s.poll_time)))?;
        d.set_item("callback_time", f64::from_bits(load(&s.callback_time)))?;
        d.set_item("bytes_read", load(&s.bytes_read))?;
        d.set_item("bytes_written", load(&s.bytes_written))?;
        d.set_item("connections_accepted", load(&s.accepted))?;
        d.set_item("slow_callbacks", load(&s.slow_callbacks))?;
        let since = f64::from_bits(load(&s.since));
        d.set_item("elapsed", monotonic() - since)?;
        let (count, sum, max, buckets) = s.lag.snapshot();
        d.set_item("lag_count", count)?;
        d.set_item("lag_sum", sum)?;
        d.set_item("lag_max", max)?;
        d.set_item("lag_buckets", buckets)?;
        Ok(d)
    }

    fn _reset_stats(&self) -> PyResult<()> {
        self.check_closed()?;
        self.stats.reset(monotonic());
        Ok(())
    }

    /// A connection accepted by a server (asyncio's accept path, in Python).
    fn _record_accepted(&self) {
        self.record_accepted();
    }

    /// Slow-callback reports: `seconds` > 0 turns them on, 0 off.
    fn _set_slow_threshold(&self, py: Python<'_>, seconds: f64) {
        if seconds > 0.0 {
            self.slow.set_threshold(seconds, CycleClock::get(py));
        } else {
            self.slow.turn_off();
        }
    }

    /// What the watchdog thread waits on (without the GIL).
    fn _slow_watcher(&self) -> SlowWatcher {
        SlowWatcher::new(self.slow.clone())
    }

    /// For the watchdog thread: where callback `seq` is blocked (a stack),
    /// kept for its report if it is still running. True if kept.
    fn _slow_sample(&self, seq: u64, stack: Py<PyAny>) -> bool {
        self.slow.store_sample(seq, stack)
    }

    /// Counts for tests and `repr`: (ready, timers, fds with a callback).
    fn _core_counts(&self) -> (usize, usize, usize) {
        let st = self.state.lock();
        (st.ready.len(), st.timers.len(), st.fds.len())
    }
}

impl CoreLoop {
    /// Transports: `n` bytes read from a socket (any thread; cheap).
    #[inline]
    pub(crate) fn record_bytes_read(&self, n: usize) {
        self.stats.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Transports: `n` bytes written to a socket (any thread; cheap).
    #[inline]
    pub(crate) fn record_bytes_written(&self, n: usize) {
        self.stats
            .bytes_written
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Servers: one connection accepted (any thread; cheap).
    #[inline]
    pub(crate) fn record_accepted(&self) {
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
    }
}

/// Hand every handle the loop still holds back to the GC and drop them
/// (timers taken out of the heap are no longer scheduled).
fn release_all(
    ready: VecDeque<Py<Handle>>,
    timers: Vec<Py<Handle>>,
    fd_handles: impl IntoIterator<Item = Py<Handle>>,
) {
    ready.into_iter().for_each(release);
    for timer in timers {
        timer.get().set_scheduled(false);
        release(timer);
    }
    fd_handles.into_iter().for_each(release);
}

impl Drop for CoreLoop {
    /// A loop collected without `close()` still hands its handles back.
    fn drop(&mut self) {
        self.slow.set_gone();
        let mut st = std::mem::take(self.state.get_mut());
        let timers = st.timers.take_all();
        Python::attach(|_py| {
            release_all(st.ready, timers, st.fds.take_handles());
            drop(self.slow.take_sample(u64::MAX));
        });
    }
}
