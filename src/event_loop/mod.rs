//! `CoreLoop`: the part of the event loop that runs on every iteration.
//! It owns the ready queue, the timer heap, the fd → reader/writer table and
//! the poller, and implements the scheduling methods (`call_soon`,
//! `call_later`, `call_at`, `call_soon_threadsafe`, `time`, `stop`) and the
//! run loop itself (`_run_until_stopped`).
//!
//! Everything else asyncio's loop does (run_until_complete, tasks, exception
//! handler, executors, DNS, sockets, transports) lives in Python subclasses
//! (`ferroloop._loop.Loop`) that call into this core.
//!
//! Locking: all mutable state sits in one `parking_lot::Mutex`, taken for a
//! few instructions at a time and *never* held while Python code runs —
//! callbacks call back into `call_soon`, and releasing a Python reference can
//! run `__del__`, so handles removed under the lock are dropped after it.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyInt, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::handles::{gc_untrack, release, Handle, TimerHandle};
use crate::poller::{Poller, Ready, READABLE, WRITABLE};
use crate::stats::{add_seconds, bump, BatchTally, CycleClock, LoopStats, SlowWatch, SlowWatcher};
use crate::timers::{monotonic, TimerHeap, CLOCK_RESOLUTION};

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

#[derive(Default)]
struct FdEntry {
    reader: Option<Py<Handle>>,
    writer: Option<Py<Handle>>,
    /// The interest last given to the poller.
    mask: u32,
}

#[derive(Default)]
struct LoopState {
    ready: VecDeque<Py<Handle>>,
    timers: TimerHeap,
    /// Indexed by fd: fds are small, dense integers.
    fds: Vec<Option<FdEntry>>,
    /// How many entries of `fds` are in use.
    watched: usize,
    /// asyncio's self-pipe: watched, but not a program's I/O.
    internal_fd: Option<RawFd>,
}

impl LoopState {
    /// Is any fd watched on behalf of the program (not the loop itself)?
    fn watches_program_fds(&self) -> bool {
        let internal = self
            .internal_fd
            .is_some_and(|fd| matches!(self.fds.get(fd as usize), Some(Some(_))));
        self.watched > usize::from(internal)
    }
}

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

/// What `_run_until_stopped` keeps from one iteration to the next.
struct RunScratch {
    batch: VecDeque<Py<Handle>>,
    events: Vec<libc::epoll_event>,
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

/// `fd` may be an int or an object with `fileno()`, as in `selectors`.
fn fileobj_to_fd(obj: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    let fd: i64 = if obj.is_instance_of::<PyInt>() {
        obj.extract()?
    } else {
        match obj.call_method0("fileno") {
            Ok(v) => v
                .extract()
                .map_err(|_| PyValueError::new_err(format!("Invalid file object: {obj}")))?,
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyAttributeError>(obj.py()) => {
                return Err(PyValueError::new_err(format!(
                    "Invalid file object: {}",
                    obj.repr()?
                )))
            }
            Err(e) => return Err(e),
        }
    };
    if fd < 0 || fd > i32::MAX as i64 {
        return Err(PyValueError::new_err(format!(
            "Invalid file descriptor: {fd}"
        )));
    }
    Ok(fd as RawFd)
}

/// `asyncio.<module>.<name>`, looked up per call as asyncio itself does:
/// `asyncio.tasks.Task` / `asyncio.futures.Future` may be replaced (tests
/// and instrumentation do).
fn asyncio_attr<'py>(
    py: Python<'py>,
    module: &str,
    name: &Bound<'py, pyo3::types::PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    static TASKS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    static FUTURES: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let (cell, path) = match module {
        "tasks" => (&TASKS, "asyncio.tasks"),
        _ => (&FUTURES, "asyncio.futures"),
    };
    cell.get_or_try_init(py, || py.import(path).map(Bound::unbind))?
        .bind(py)
        .getattr(name)
}

/// `asyncio.Future(loop=loop)`.
pub(crate) fn new_future<'py>(loop_: &Bound<'py, CoreLoop>) -> PyResult<Bound<'py, PyAny>> {
    static KWNAMES: PyOnceLock<Py<PyTuple>> = PyOnceLock::new();
    let py = loop_.py();
    let cls = asyncio_attr(py, "futures", pyo3::intern!(py, "Future"))?;
    let kwnames = KWNAMES.get_or_try_init(py, || PyTuple::new(py, ["loop"]).map(Bound::unbind))?;
    let argv = [loop_.as_ptr()];
    // SAFETY: `argv` holds a borrowed live reference for the call's duration.
    unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyObject_Vectorcall(cls.as_ptr(), argv.as_ptr(), 0, kwnames.as_ptr()),
        )
    }
}

fn dec_saturating(counter: &AtomicUsize) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
}

fn copy_context(py: Python<'_>) -> PyResult<Py<PyAny>> {
    // SAFETY: returns a new reference or NULL with an exception set.
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent()).map(Bound::unbind) }
}

impl CoreLoop {
    fn check_closed(&self) -> PyResult<()> {
        if self.closed.load(Ordering::Relaxed) {
            Err(PyRuntimeError::new_err("Event loop is closed"))
        } else {
            Ok(())
        }
    }

    /// asyncio's checks: callbacks are always checked cheaply (a coroutine
    /// object is not callable); debug mode adds the thread check and the
    /// coroutine-function check, exactly as asyncio does.
    fn check_call(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        method: &str,
    ) -> PyResult<()> {
        let this = slf.get();
        this.check_closed()?;
        if this.debug.load(Ordering::Relaxed) {
            if method != "call_soon_threadsafe" {
                slf.call_method0("_check_thread")?;
            }
            slf.call_method1("_check_callback", (callback, method))?;
        } else if !callback.is_callable() {
            slf.call_method1("_check_callback", (callback, method))?;
            return Err(PyTypeError::new_err(format!(
                "a callable object was expected by {method}()"
            )));
        }
        Ok(())
    }

    fn new_handle(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Handle> {
        let py = slf.py();
        let source_traceback = if slf.get().debug.load(Ordering::Relaxed) {
            Some(
                crate::handles::glue(py, "extract_source_traceback")?
                    .call0()?
                    .unbind(),
            )
        } else {
            None
        };
        let loop_ref = Self::weak_self(slf)?;
        // Last, with nothing fallible after it: an untracked Context must
        // reach a Handle (whose Drop tracks it again) before it can be freed.
        let (context, owns_context) = match context {
            Some(c) if !c.is_none() => (c.unbind(), false),
            _ => {
                let copy = copy_context(py)?;
                // Only this handle holds the copy: hidden from the GC with it.
                gc_untrack(&copy);
                (copy, true)
            }
        };
        Ok(Handle::new(
            callback.unbind(),
            args.unbind(),
            context,
            loop_ref,
            owns_context,
            source_traceback,
        ))
    }

    /// `weakref.ref(loop)`, made once: what handles and waiters hold.
    pub(crate) fn weak_self(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let weak = slf.get().self_ref.get_or_try_init(py, || {
            // SAFETY: returns a new reference or NULL with an exception set.
            unsafe {
                Bound::from_owned_ptr_or_err(
                    py,
                    ffi::PyWeakref_NewRef(slf.as_ptr(), std::ptr::null_mut()),
                )
                .map(Bound::unbind)
            }
        })?;
        Ok(weak.clone_ref(py))
    }

    /// A new handle object, hidden from the GC while the loop holds it.
    fn new_queued_handle(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        let handle = Py::new(slf.py(), Self::new_handle(slf, callback, args, context)?)?;
        gc_untrack(&handle);
        Ok(handle)
    }

    fn push_ready(&self, handle: Py<Handle>) {
        self.state.lock().ready.push_back(handle);
    }

    /// Register `handle` as the reader or writer of `fd`, returning the
    /// handle it replaces (to be cancelled by the caller, unlocked).
    fn set_fd_handle(
        &self,
        fd: RawFd,
        dir: u32,
        handle: Option<Py<Handle>>,
    ) -> PyResult<Option<Py<Handle>>> {
        let mut st = self.state.lock();
        let idx = fd as usize;
        if st.fds.len() <= idx {
            if handle.is_none() {
                return Ok(None);
            }
            st.fds.resize_with(idx + 1, || None);
        }
        let LoopState { fds, watched, .. } = &mut *st;
        let slot = &mut fds[idx];
        if slot.is_none() {
            *watched += 1;
        }
        let entry = slot.get_or_insert_with(FdEntry::default);
        let was = entry.mask;
        let new_mask = if handle.is_some() {
            was | dir
        } else {
            was & !dir
        };
        let target = if dir == READABLE {
            &mut entry.reader
        } else {
            &mut entry.writer
        };
        if handle.is_some() || new_mask != was {
            if let Err(e) = self.poller.set_interest(fd, was, new_mask) {
                // Refused (a regular file: EPERM): leave no trace of the fd.
                if entry.reader.is_none() && entry.writer.is_none() {
                    *slot = None;
                    *watched -= 1;
                }
                return Err(e.into());
            }
        }
        let old = std::mem::replace(target, handle);
        entry.mask = new_mask;
        if entry.reader.is_none() && entry.writer.is_none() {
            *slot = None;
            *watched -= 1;
        }
        Ok(old)
    }

    pub(crate) fn add_fd_callback(
        slf: &Bound<'_, Self>,
        dir: u32,
        fd: &Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        Self::watch(slf, dir, fileobj_to_fd(fd)?, callback, args, context)
    }

    /// Call `callback(*args)` whenever `fd` is ready in direction `dir`
    /// (in `context`, or a copy of the current one), replacing (and
    /// cancelling) any callback it had there.
    pub(crate) fn watch(
        slf: &Bound<'_, Self>,
        dir: u32,
        fd: RawFd,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed()?;
        let handle = Self::new_queued_handle(slf, callback, args, context)?;
        let old = this.set_fd_handle(fd, dir, Some(handle.clone_ref(py)))?;
        if let Some(old) = old {
            old.get().set_cancelled();
            release(old);
        }
        Ok(handle)
    }

    fn remove_fd_callback(&self, dir: u32, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.unwatch_if_open(fileobj_to_fd(fd)?, dir)
    }

    /// `unwatch`, as asyncio's `_remove_reader`: nothing once closed.
    pub(crate) fn unwatch_if_open(&self, fd: RawFd, dir: u32) -> PyResult<bool> {
        if self.closed.load(Ordering::Relaxed) {
            return Ok(false);
        }
        self.unwatch(fd, dir)
    }

    /// Stop watching `fd` in direction `dir`; the removed handle is
    /// cancelled, as asyncio's `_remove_reader` does. True if there was one.
    pub(crate) fn unwatch(&self, fd: RawFd, dir: u32) -> PyResult<bool> {
        let Some(old) = self.set_fd_handle(fd, dir, None)? else {
            return Ok(false);
        };
        old.get().set_cancelled();
        release(old);
        Ok(true)
    }

    /// Remove the reader/writer of `fd` if its callback is `callback`
    /// (a waiter removing itself must not remove a newer registration).
    pub(crate) fn remove_fd_callback_if(
        &self,
        fd: RawFd,
        dir: u32,
        callback: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let matches = {
            let st = self.state.lock();
            let entry = st.fds.get(fd as usize).and_then(Option::as_ref);
            let current = entry.and_then(|e| {
                if dir == READABLE {
                    e.reader.as_ref()
                } else {
                    e.writer.as_ref()
                }
            });
            current.is_some_and(|h| h.get().callback_is(callback))
        };
        if matches && !self.closed.load(Ordering::Relaxed) {
            self.unwatch(fd, dir)?;
        }
        Ok(())
    }

    /// Queue the timers due by `now`, then take everything ready as this
    /// iteration's batch (callbacks scheduled while it runs wait for the
    /// next iteration, as in asyncio). The live due timers are the batch's
    /// last entries; their number is returned, and their lag (`now - when`)
    /// recorded. Cancelled due timers go to `dead`, to be released unlocked.
    fn take_batch(
        &self,
        st: &mut LoopState,
        now: f64,
        batch: &mut VecDeque<Py<Handle>>,
        dead: &mut Vec<Py<Handle>>,
    ) -> usize {
        let lag = &self.stats.lag;
        let others = st.ready.len();
        let end_time = now + CLOCK_RESOLUTION;
        while let Some(entry) = st.timers.pop_due(end_time) {
            let timer = entry.handle.get();
            timer.set_scheduled(false);
            if timer.is_cancelled() {
                dec_saturating(&self.stats.heap_cancelled);
                dead.push(entry.handle);
                continue;
            }
            lag.record(now - entry.when, 1);
            st.ready.push_back(entry.handle);
        }
        let timers = st.ready.len() - others;
        std::mem::swap(&mut st.ready, batch);
        timers
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
            for r in ready_fds.drain(..) {
                let Some(Some(entry)) = fds.get(r.fd as usize) else {
                    continue;
                };
                for (dir, h) in [(READABLE, &entry.reader), (WRITABLE, &entry.writer)] {
                    if r.mask & dir == 0 {
                        continue;
                    }
                    if let Some(h) = h {
                        if h.get().is_cancelled() {
                            stale.push((r.fd, dir));
                        } else {
                            ready.push_back(h.clone_ref(py));
                        }
                    }
                }
            }
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
                || (!st.watches_program_fds() && now - rs.last_poll < BUSY_POLL_INTERVAL));
        let timers;
        if skip_poll {
            // Busy, and no poll due: one lock does it all.
            timers = this.take_batch(&mut st, now, &mut rs.batch, &mut rs.dead);
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
            timers = this.take_batch(&mut this.state.lock(), now, &mut rs.batch, &mut rs.dead);
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
    fn skip_cancelled(handle: Py<Handle>, left: usize, timers: usize, tally: &mut BatchTally) {
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

    /// Run the batch timing each callback: ferroloop's slow-callback reports
    /// (`threshold` > 0, timed with the cycle counter) and/or debug mode
    /// (asyncio's `slow_callback_duration` warnings, timed as asyncio does).
    #[inline(never)]
    fn run_batch_timed(
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

#[pymethods]
impl CoreLoop {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        crate::syscalls::tune_malloc_for_large_messages();
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
        let fd_handles = st
            .fds
            .iter()
            .flatten()
            .flat_map(|e| e.reader.iter().chain(e.writer.iter()));
        for h in st.ready.iter().chain(st.timers.iter()).chain(fd_handles) {
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
    /// from Rust; a task factory, debug mode or other keyword arguments
    /// (3.14's `eager_start=`, ...) take asyncio's own Python path
    /// (`_create_task_py`), which knows each version's details and errors.
    #[pyo3(signature = (coro, *, name=None, context=None, **task_kwargs))]
    fn create_task<'py>(
        slf: &Bound<'py, Self>,
        coro: &Bound<'py, PyAny>,
        name: Option<&Bound<'py, PyAny>>,
        context: Option<&Bound<'py, PyAny>>,
        task_kwargs: Option<Bound<'py, pyo3::types::PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed()?;
        let name = name.filter(|n| !n.is_none());
        let context = context.filter(|c| !c.is_none());
        if task_kwargs.is_some()
            || this.task_factory.lock().is_some()
            || this.debug.load(Ordering::Relaxed)
        {
            let kwargs = task_kwargs.unwrap_or_else(|| pyo3::types::PyDict::new(py));
            if let Some(n) = name {
                kwargs.set_item("name", n)?;
            }
            if let Some(c) = context {
                kwargs.set_item("context", c)?;
            }
            return slf.call_method("_create_task_py", (coro,), Some(&kwargs));
        }
        static KWNAMES: PyOnceLock<[Py<PyTuple>; 4]> = PyOnceLock::new();
        let task_cls = asyncio_attr(py, "tasks", pyo3::intern!(py, "Task"))?;
        let kwnames = KWNAMES.get_or_try_init(py, || -> PyResult<_> {
            Ok([
                PyTuple::new(py, ["loop"])?.unbind(),
                PyTuple::new(py, ["loop", "name"])?.unbind(),
                PyTuple::new(py, ["loop", "context"])?.unbind(),
                PyTuple::new(py, ["loop", "name", "context"])?.unbind(),
            ])
        })?;
        let mut argv = [
            coro.as_ptr(),
            slf.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        ];
        for (slot, value) in argv[2..].iter_mut().zip(name.into_iter().chain(context)) {
            *slot = value.as_ptr();
        }
        let which = usize::from(name.is_some()) + 2 * usize::from(context.is_some());
        // SAFETY: `argv` holds borrowed live references for the call's
        // duration; one positional argument, the rest named by `kwnames`.
        unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                ffi::PyObject_Vectorcall(
                    task_cls.as_ptr(),
                    argv.as_ptr(),
                    1,
                    kwnames[which].as_ptr(),
                ),
            )
        }
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

    /// Release every queued handle and the poller (end of `close()`).
    fn _close_core(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let (ready, timers, fds) = {
            let mut st = self.state.lock();
            (std::mem::take(&mut st.ready), st.timers.take_all(), {
                st.watched = 0;
                std::mem::take(&mut st.fds)
            })
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
        let entry = st.fds.get(fd as usize)?.as_ref()?;
        Some((
            entry.mask,
            entry.reader.as_ref().map(|h| h.clone_ref(py)),
            entry.writer.as_ref().map(|h| h.clone_ref(py)),
        ))
    }

    /// Mark `fd` (asyncio's self-pipe) as the loop's own: watching it alone
    /// does not make every busy iteration poll.
    fn _set_internal_fd(&self, fd: RawFd) {
        self.state.lock().internal_fd = Some(fd);
    }

    /// Every fd with a reader or writer.
    fn _fds(&self) -> Vec<RawFd> {
        let st = self.state.lock();
        st.fds
            .iter()
            .enumerate()
            .filter_map(|(fd, e)| e.as_ref().map(|_| fd as RawFd))
            .collect()
    }

    /// `loop.stats()`'s raw material (`ferroloop._telemetry` shapes it).
    fn _stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        self.check_closed()?;
        let s = &*self.stats;
        let d = pyo3::types::PyDict::new(py);
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
        (
            st.ready.len(),
            st.timers.len(),
            st.fds.iter().filter(|e| e.is_some()).count(),
        )
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

    /// `call_soon` / `call_soon_threadsafe` (their Python entry points are
    /// in `fastcall.rs`).
    pub(crate) fn schedule_soon(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
        threadsafe: bool,
    ) -> PyResult<Py<Handle>> {
        let method = if threadsafe {
            "call_soon_threadsafe"
        } else {
            "call_soon"
        };
        Self::check_call(slf, &callback, method)?;
        let py = slf.py();
        let handle = Self::new_queued_handle(slf, callback, args, context)?;
        let this = slf.get();
        this.push_ready(handle.clone_ref(py));
        if threadsafe {
            this.poller.wake();
        }
        Ok(handle)
    }
    /// `when_obj` is what `TimerHandle.when()` returns: the caller's own
    /// number, as in asyncio (`call_at(100, ...)`'s `when()` is `100`).
    fn schedule_at(
        slf: &Bound<'_, Self>,
        when: f64,
        when_obj: Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        if when.is_nan() {
            return Err(PyValueError::new_err("the time of a timer cannot be NaN"));
        }
        Self::check_call(slf, &callback, "call_at")?;
        let py = slf.py();
        let this = slf.get();
        let base = Self::new_handle(slf, callback, args, context)?;
        let init = PyClassInitializer::from(base)
            .add_subclass(TimerHandle::new(when_obj.unbind(), this.stats.clone()));
        let timer = Py::new(py, init)?;
        gc_untrack(&timer);
        let base = timer.bind(py).as_super().get();
        base.set_scheduled(true);
        let as_handle: Py<Handle> = timer.bind(py).as_super().clone().unbind();
        this.state.lock().timers.push(when, as_handle);
        this.stats.timers_scheduled.fetch_add(1, Ordering::Relaxed);
        Ok(timer)
    }
}

/// Hand every handle the loop still holds back to the GC and drop them
/// (timers taken out of the heap are no longer scheduled).
fn release_all(ready: VecDeque<Py<Handle>>, timers: Vec<Py<Handle>>, fds: Vec<Option<FdEntry>>) {
    ready.into_iter().for_each(release);
    for timer in timers {
        timer.get().set_scheduled(false);
        release(timer);
    }
    for entry in fds.into_iter().flatten() {
        entry.reader.into_iter().for_each(release);
        entry.writer.into_iter().for_each(release);
    }
}

impl Drop for CoreLoop {
    /// A loop collected without `close()` still hands its handles back.
    fn drop(&mut self) {
        self.slow.set_gone();
        let mut st = std::mem::take(self.state.get_mut());
        let timers = st.timers.take_all();
        Python::attach(|_py| {
            release_all(st.ready, timers, st.fds);
            drop(self.slow.take_sample(u64::MAX));
        });
    }
}
