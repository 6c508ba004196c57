//! The write side of the stream and pipe transports (src/stream.rs,
//! src/pipe.rs), written once: the write buffer, the flow-control marks and
//! `pause_writing()` / `resume_writing()`, the count of writes after the
//! connection was lost, the closing / EOF / lost state, `write()`,
//! `writelines()`, the vectored flush when the fd is writable again, and
//! `close()` / `abort()` as they concern buffered data.
//!
//! What differs between a socket and a pipe is, first, the syscalls: a
//! `Sink` (`send`/`sendmsg` for a socket, `write`/`writev` for a pipe),
//! chosen at compile time (the cores are generic over it, no dynamic
//! dispatch). Then the few rules in which asyncio's
//! `_SelectorSocketTransport` and `_UnixWritePipeTransport` disagree, each
//! named in `WriteRules`. A core (`WriteEnd`) says where its state is, how
//! it watches its fd and what happens once its buffer drains; the rest is
//! here.
//!
//! The Python buffers written from (`ByteView`, `as_bytes_obj`) are
//! src/write_buffer.rs's.

use std::io;
use std::os::fd::RawFd;

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::boolean_struct::True;
use pyo3::types::PyString;
use pyo3::PyClass;

use crate::event_loop::CoreLoop;
use crate::poller::{READABLE, WRITABLE};
use crate::py_io::os_error;
use crate::sys::fd::io_vec;
use crate::sys::IoVec;
use crate::transport_common::{
    fatal_error, must_propagate, report_callback_failure, schedule_connection_lost,
};
use crate::write_buffer::{as_bytes_obj, check_write_type, ByteView, Pending, WriteBuffer};

fn iovecs(pending: &[Pending<'_, '_>]) -> Vec<IoVec> {
    pending.iter().map(|(s, _)| io_vec(s)).collect()
}

// -- the sink and the rules ----------------------------------------------------

/// Where a transport's bytes go: one small function per syscall. As in
/// src/sys/, `Ok(None)` is "would block" and `EINTR` is retried.
pub(crate) trait Sink: Copy {
    /// One buffer (`send`, `write`).
    fn send(self, data: &[u8]) -> io::Result<Option<usize>>;
    /// Several buffers at once (`sendmsg`, `writev`); at most `IOV_MAX`
    /// of them are used.
    fn send_vectored(self, bufs: &[IoVec]) -> io::Result<Option<usize>>;
}

/// Where asyncio's socket transport (`selector_events`) and write pipe
/// transport (`unix_events`) disagree; each core follows its own.
pub(crate) struct WriteRules {
    /// `_fatal_error`'s message when a write fails.
    pub(crate) write_error: &'static str,
    /// The warning after more than 5 writes to a lost connection.
    pub(crate) lost_write_warning: &'static str,
    /// Writes are dropped (and counted as lost) once closing (the pipe);
    /// the socket keeps sending what is written between `close()` and the
    /// drain.
    pub(crate) drop_when_closing: bool,
    /// A failed write counts in `_conn_lost` (the pipe's `_conn_lost += 1`
    /// before `_fatal_error`).
    pub(crate) count_failed_writes: bool,
    /// `_conn_lost` also counts `connection_lost` being scheduled by
    /// `close()` / `abort()` (the socket's `_conn_lost` doubles as "lost").
    pub(crate) count_close: bool,
    /// `resume_writing()` may follow any progress of the flush (the
    /// socket), or only a drained buffer (the pipe).
    pub(crate) resume_on_progress: bool,
    /// `close()` stops reading (the socket). A write pipe's reader only
    /// watches for the peer closing, until the connection is lost.
    pub(crate) close_stops_reader: bool,
    /// Closing with nothing buffered also removes the fd's writer (the
    /// socket's `close()`); a pipe's `write_eof()` leaves it (none of its
    /// own is registered then, and another may be: asyncio's rule).
    pub(crate) close_removes_writer: bool,
    /// `writelines()` has nothing to write when it has no bytes (the
    /// pipe's `b"".join`), not only when it has no items (the socket's).
    pub(crate) writelines_empty_by_bytes: bool,
    /// `writelines()` of a non-buffer raises `b"".join`'s `TypeError`
    /// (the pipe), else the buffer protocol's own (the socket).
    pub(crate) join_type_errors: bool,
}

// -- the state -------------------------------------------------------------------

/// asyncio's `constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES`.
const LOG_THRESHOLD_FOR_CONNLOST_WRITES: usize = 5;

/// asyncio's default high-water mark (`_FlowControlMixin`).
pub(crate) const DEFAULT_HIGH_WATER: usize = 64 * 1024;

/// The write-buffer marks and whether `pause_writing()` is in effect
/// (asyncio's `transports._FlowControlMixin` decisions).
pub(crate) struct FlowControl {
    high_water: usize,
    low_water: usize,
    /// `pause_writing()` was called on the protocol.
    paused: bool,
}

impl Default for FlowControl {
    fn default() -> Self {
        FlowControl {
            high_water: DEFAULT_HIGH_WATER,
            low_water: DEFAULT_HIGH_WATER / 4,
            paused: false,
        }
    }
}

impl FlowControl {
    /// The buffer holds `size` bytes: true if the protocol is to be paused
    /// now (above the high mark, not paused yet); it counts as paused from
    /// here on.
    #[inline]
    pub(crate) fn should_pause(&mut self, size: usize) -> bool {
        let pause = size > self.high_water && !self.paused;
        self.paused |= pause;
        pause
    }

    /// The buffer holds `size` bytes: true if the protocol is to be resumed
    /// now (paused, and at or below the low mark).
    #[inline]
    pub(crate) fn should_resume(&mut self, size: usize) -> bool {
        let resume = self.paused && size <= self.low_water;
        self.paused &= !resume;
        resume
    }

    /// The marks, already checked and floored by the Python transport
    /// (`ferroloop._transport_common.WriteBufferLimits`, asyncio's rule).
    pub(crate) fn set_limits(&mut self, high: usize, low: usize) {
        self.high_water = high;
        self.low_water = low;
    }

    /// `(low, high)`, as `get_write_buffer_limits()`.
    pub(crate) fn limits(&self) -> (usize, usize) {
        (self.low_water, self.high_water)
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused
    }
}

/// The write side's state, under its core's lock.
#[derive(Default)]
pub(crate) struct WriteSide {
    pub(crate) out: WriteBuffer,
    pub(crate) flow: FlowControl,
    /// asyncio's `_conn_lost`: writes after the connection was lost, and
    /// what `WriteRules` says counts too.
    pub(crate) conn_lost: usize,
    /// Set by `close()`, `abort()`, an error (and a pipe's `write_eof()`).
    pub(crate) closing: bool,
    /// `connection_lost` is scheduled (or ran): the fd is not written again.
    pub(crate) lost: bool,
    /// A socket's `write_eof()` was called.
    pub(crate) eof: bool,
    /// asyncio's `_empty_waiter`: a future `loop.sendfile` awaits until
    /// the buffer is empty (sockets only).
    pub(crate) empty_waiter: Option<Py<PyAny>>,
}

/// What `write()` / `writelines()` may do with their data.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    Write,
    /// Nothing to write.
    Nothing,
    /// Dropped: the connection is lost (or closing, by the rules).
    Lost,
    /// Dropped, and past asyncio's threshold for saying so.
    LostWarn,
    AfterEof,
    DuringSendfile,
}

/// What a flush did under the lock.
enum Flushed {
    Lost,
    Empty,
    Blocked,
    Sent,
    Failed(io::Error),
}

/// What `WriteSide::offer` did with a write.
#[derive(Debug)]
pub(crate) enum Step {
    Refused(Admit),
    /// Nothing left to buffer; so many bytes went out now.
    Sent(usize),
    /// The rest is buffered; `watch`: the buffer was empty (watch for
    /// writability), `pause`: `pause_writing()` is due.
    Buffered {
        sent: usize,
        watch: bool,
        pause: bool,
    },
    Failed(io::Error),
}

impl WriteSide {
    /// asyncio's checks before a write, in its order.
    pub(crate) fn admit(&mut self, rules: &WriteRules, empty: bool) -> Admit {
        if self.eof {
            return Admit::AfterEof;
        }
        if self.empty_waiter.is_some() {
            return Admit::DuringSendfile;
        }
        if empty {
            return Admit::Nothing;
        }
        if self.conn_lost == 0 && !(rules.drop_when_closing && self.closing) {
            return Admit::Write;
        }
        self.conn_lost += 1;
        if self.conn_lost > LOG_THRESHOLD_FOR_CONNLOST_WRITES {
            Admit::LostWarn
        } else {
            Admit::Lost
        }
    }

    /// Buffer what a send of `pending` left, `sent` bytes having gone;
    /// false if nothing was left.
    pub(crate) fn push_rest(&mut self, pending: &[Pending<'_, '_>], mut sent: usize) -> bool {
        let before = self.out.len();
        for (s, owner) in pending {
            let skip = sent.min(s.len());
            sent -= skip;
            self.out.push(&s[skip..], *owner);
        }
        self.out.len() != before
    }

    /// A write of `pending` (`empty`: nothing to write, by the caller's
    /// rule): admitted, it is sent now through `sink` if nothing is
    /// buffered (one call, vectored for several buffers), and what is left
    /// is buffered.
    pub(crate) fn offer<S: Sink>(
        &mut self,
        rules: &WriteRules,
        sink: S,
        pending: &[Pending<'_, '_>],
        empty: bool,
    ) -> Step {
        match self.admit(rules, empty) {
            Admit::Write => {}
            refused => return Step::Refused(refused),
        }
        let watch = self.out.is_empty();
        let sent = if watch {
            let sent = match pending {
                [(one, _)] => sink.send(one),
                _ => sink.send_vectored(&iovecs(pending)),
            };
            match sent {
                Ok(Some(n)) => n,
                Ok(None) => 0,
                Err(e) => return Step::Failed(e),
            }
        } else {
            0
        };
        if !self.push_rest(pending, sent) {
            return Step::Sent(sent);
        }
        let pause = self.flow.should_pause(self.out.len());
        Step::Buffered { sent, watch, pause }
    }

    /// One vectored send of the buffer through `sink`: what it took is
    /// dropped; after an error, everything is (asyncio clears its buffer).
    pub(crate) fn send_buffered<S: Sink>(
        &mut self,
        py: Python<'_>,
        sink: S,
    ) -> io::Result<Option<usize>> {
        self.out.send_with(py, |iov| sink.send_vectored(iov))
    }

    /// `connection_lost` is now scheduled (or running).
    pub(crate) fn mark_lost(&mut self, rules: &WriteRules) {
        self.lost = true;
        if rules.count_close {
            self.conn_lost += 1;
        }
    }

    /// The transport let go of the fd: never write it again.
    pub(crate) fn detach(&mut self, rules: &WriteRules) {
        self.out.clear();
        self.closing = true;
        self.lost = true;
        if rules.count_close {
            self.conn_lost = self.conn_lost.max(1);
        }
    }
}

// -- the core's side ---------------------------------------------------------------

/// A transport core with a write side (`StreamCore`, `WritePipeCore`):
/// what it provides, and the write paths built on it.
pub(crate) trait WriteEnd: PyClass<Frozen = True> + Sync + Sized {
    type Sink: Sink + From<RawFd>;
    const RULES: WriteRules;

    /// The loop and the fd it watches for this core.
    fn watched_fd(&self) -> (&Py<CoreLoop>, RawFd);
    /// Under the core's lock: `f(write side)`.
    fn with_side<R>(&self, f: impl FnOnce(&mut WriteSide) -> R) -> R;
    /// The Python transport (None once it is gone).
    fn transport(&self, py: Python<'_>) -> Option<Py<PyAny>>;
    /// The protocol (None once it is gone).
    fn protocol(&self, py: Python<'_>) -> Option<Py<PyAny>>;
    /// The context `connection_lost` is scheduled in.
    fn context(&self) -> Option<&Py<PyAny>>;
    /// Register `_write_ready` as the fd's writer.
    fn watch_writable(slf: &Bound<'_, Self>) -> PyResult<()>;
    /// The buffer drained (writer removed, `resume_writing()` decided):
    /// finish what waited for it.
    fn drained(slf: &Bound<'_, Self>) -> PyResult<()>;

    fn core_loop(&self) -> &Py<CoreLoop> {
        self.watched_fd().0
    }

    #[inline]
    fn sink(&self) -> Self::Sink {
        Self::Sink::from(self.watched_fd().1)
    }

    /// Stop watching the fd in direction `dir` (nothing once the loop is
    /// closed).
    fn unwatch(&self, py: Python<'_>, dir: u32) -> PyResult<()> {
        let (loop_, fd) = self.watched_fd();
        loop_.bind(py).get().unwatch_if_open(fd, dir)?;
        Ok(())
    }

    // -- flow control --

    /// `pause_writing()` if the buffer is above the high mark.
    fn maybe_pause_protocol(&self, py: Python<'_>) -> PyResult<()> {
        if self.with_side(|w| w.flow.should_pause(w.out.len())) {
            self.notify_flow(py, intern!(py, "pause_writing"))
        } else {
            Ok(())
        }
    }

    /// `resume_writing()` if paused and the buffer is at or below the low mark.
    fn maybe_resume_protocol(&self, py: Python<'_>) -> PyResult<()> {
        if self.with_side(|w| w.flow.should_resume(w.out.len())) {
            self.notify_flow(py, intern!(py, "resume_writing"))
        } else {
            Ok(())
        }
    }

    /// New marks, then `pause_writing()` if the buffer is now above them.
    fn set_write_limits(&self, py: Python<'_>, high: usize, low: usize) -> PyResult<()> {
        self.with_side(|w| w.flow.set_limits(high, low));
        self.maybe_pause_protocol(py)
    }

    /// `protocol.<method>()`; a failure goes to the exception handler, as
    /// in asyncio's `_FlowControlMixin`. Nothing once either is gone.
    fn notify_flow(&self, py: Python<'_>, method: &Bound<'_, PyString>) -> PyResult<()> {
        let (Some(protocol), Some(transport)) = (self.protocol(py), self.transport(py)) else {
            return Ok(());
        };
        let Err(err) = protocol.bind(py).call_method0(method) else {
            return Ok(());
        };
        let message = format!("protocol.{}() failed", method.to_str()?);
        report_callback_failure(
            self.core_loop().bind(py),
            err,
            &message,
            transport,
            protocol,
        )
    }

    // -- writing --

    /// asyncio's checks before a write. Ok(false): drop the data.
    fn check_writable(&self, py: Python<'_>, method: &str, empty: bool) -> PyResult<bool> {
        let admit = self.with_side(|w| w.admit(&Self::RULES, empty));
        refused(py, &Self::RULES, method, admit)
    }

    /// A write failed: count it if the rules say so, and report
    /// (`_fatal_error`, which closes).
    fn write_failed(slf: &Bound<'_, Self>, err: PyErr) -> PyResult<()> {
        let py = slf.py();
        if must_propagate(py, &err) {
            return Err(err);
        }
        let this = slf.get();
        if Self::RULES.count_failed_writes {
            this.with_side(|w| w.conn_lost += 1);
        }
        fatal_error(py, this.transport(py), err, Self::RULES.write_error)
    }

    /// `write(data)`: send now what the kernel takes; buffer the rest.
    fn write_data(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let view;
        let (bytes, owner) = match as_bytes_obj(data) {
            // bytes: no buffer view to acquire and release.
            Some(b) => (b.as_bytes(), Some(b)),
            None => {
                check_write_type(data)?;
                view = match ByteView::new(data, ffi::PyBUF_SIMPLE) {
                    Ok(view) => view,
                    Err(err) => {
                        // A non-contiguous memoryview: asyncio's send
                        // fails with this error, which closes the transport.
                        if !slf
                            .get()
                            .check_writable(slf.py(), "write", data.len()? == 0)?
                        {
                            return Ok(());
                        }
                        return Self::write_failed(slf, err);
                    }
                };
                (view.as_slice(), None)
            }
        };
        Self::write_pending(slf, "write", &[(bytes, owner)], bytes.is_empty())
    }

    /// `writelines(list_of_data)`: one vectored send of every buffer; the
    /// rest is buffered.
    fn write_lines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut items = Vec::new();
        let mut views = Vec::new();
        for (i, item) in list_of_data.try_iter()?.enumerate() {
            let item = item?;
            match ByteView::new(&item, ffi::PyBUF_SIMPLE) {
                Ok(view) => views.push(view),
                Err(_) if Self::RULES.join_type_errors => {
                    return Err(PyTypeError::new_err(format!(
                        "sequence item {i}: expected a bytes-like object, {} found",
                        item.get_type().name()?
                    )))
                }
                Err(err) => return Err(err),
            }
            items.push(item);
        }
        let empty = if Self::RULES.writelines_empty_by_bytes {
            views.iter().all(|v| v.len() == 0)
        } else {
            views.is_empty()
        };
        let pending: Vec<Pending<'_, '_>> = views
            .iter()
            .zip(&items)
            .filter(|(v, _)| v.len() > 0)
            .map(|(v, item)| (v.as_slice(), as_bytes_obj(item)))
            .collect();
        Self::write_pending(slf, "writelines", &pending, empty)
    }

    /// Send `pending` now if nothing is buffered, else buffer it; watch for
    /// writability when the buffer stops being empty; flow control. One
    /// acquisition of the lock.
    fn write_pending(
        slf: &Bound<'_, Self>,
        method: &str,
        pending: &[Pending<'_, '_>],
        empty: bool,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let sink = this.sink();
        let step = this.with_side(|w| w.offer(&Self::RULES, sink, pending, empty));
        let written = |n| {
            if n > 0 {
                this.core_loop().get().record_bytes_written(n);
            }
        };
        match step {
            Step::Sent(n) => {
                written(n);
                Ok(())
            }
            Step::Refused(admit) => refused(py, &Self::RULES, method, admit).map(drop),
            Step::Failed(e) => Self::write_failed(slf, os_error(py, e)),
            Step::Buffered { sent, watch, pause } => {
                written(sent);
                if watch {
                    Self::watch_writable(slf)?;
                }
                if pause {
                    this.notify_flow(py, intern!(py, "pause_writing"))?;
                }
                Ok(())
            }
        }
    }

    /// The fd is writable again (registered while data is buffered): one
    /// vectored send of the buffer.
    fn flush(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let sink = this.sink();
        let flushed = this.with_side(|w| {
            if w.lost {
                return Flushed::Lost;
            }
            if w.out.is_empty() {
                return Flushed::Empty;
            }
            match w.send_buffered(py, sink) {
                Ok(Some(n)) => {
                    this.core_loop().get().record_bytes_written(n);
                    Flushed::Sent
                }
                Ok(None) => Flushed::Blocked,
                Err(e) => {
                    if Self::RULES.count_failed_writes {
                        w.conn_lost += 1;
                    }
                    Flushed::Failed(e)
                }
            }
        });
        match flushed {
            Flushed::Lost | Flushed::Blocked => Ok(()),
            // Nothing buffered: stop watching.
            Flushed::Empty => this.unwatch(py, WRITABLE),
            Flushed::Failed(e) => {
                // Remove the writer here: _fatal_error() does not, as the
                // buffer is empty.
                this.unwatch(py, WRITABLE)?;
                let err = os_error(py, e);
                let waiter = this.with_side(|w| w.empty_waiter.as_ref().map(|w| w.clone_ref(py)));
                let exc = waiter.as_ref().map(|_| err.value(py).clone());
                fatal_error(py, this.transport(py), err, Self::RULES.write_error)?;
                if let (Some(waiter), Some(exc)) = (waiter, exc) {
                    waiter.call_method1(py, intern!(py, "set_exception"), (exc,))?;
                }
                Ok(())
            }
            Flushed::Sent => {
                if Self::RULES.resume_on_progress {
                    this.maybe_resume_protocol(py)?; // may write more
                }
                if !this.with_side(|w| w.out.is_empty()) {
                    return Ok(());
                }
                this.unwatch(py, WRITABLE)?;
                if !Self::RULES.resume_on_progress {
                    this.maybe_resume_protocol(py)?; // may write more
                }
                Self::drained(slf)
            }
        }
    }

    // -- closing --

    /// `close()` (a socket's) / `write_eof()` (a pipe's): `connection_lost`
    /// now if nothing is buffered, else once the buffer drains.
    fn close_when_drained(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let lost_now = this.with_side(|w| {
            if w.closing {
                return None;
            }
            w.closing = true;
            let lost_now = w.out.is_empty();
            if lost_now {
                w.mark_lost(&Self::RULES);
            }
            Some(lost_now)
        });
        let Some(lost_now) = lost_now else {
            return Ok(());
        };
        if lost_now || Self::RULES.close_stops_reader {
            this.unwatch(py, READABLE)?;
        }
        if !lost_now {
            return Ok(());
        }
        if Self::RULES.close_removes_writer {
            this.unwatch(py, WRITABLE)?;
        }
        schedule_connection_lost(
            this.core_loop().bind(py),
            this.transport(py),
            py.None().into_bound(py),
            this.context(),
        )
    }

    /// Close now, dropping buffered data; `connection_lost(exc)` is
    /// scheduled unless it already was.
    fn force_close(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let closed = this.with_side(|w| {
            if w.lost {
                return None;
            }
            let had_buffer = !w.out.is_empty();
            w.out.clear();
            let was_closing = std::mem::replace(&mut w.closing, true);
            w.mark_lost(&Self::RULES);
            Some((had_buffer, was_closing))
        });
        let Some((had_buffer, was_closing)) = closed else {
            return Ok(());
        };
        if had_buffer {
            this.unwatch(py, WRITABLE)?;
        }
        if !(was_closing && Self::RULES.close_stops_reader) {
            this.unwatch(py, READABLE)?;
        }
        schedule_connection_lost(
            this.core_loop().bind(py),
            this.transport(py),
            exc,
            this.context(),
        )
    }
}

/// What the caller of a refused write sees: an error, a warning, or
/// nothing. Ok(true) only for `Admit::Write`.
fn refused(py: Python<'_>, rules: &WriteRules, method: &str, admit: Admit) -> PyResult<bool> {
    match admit {
        Admit::Write => Ok(true),
        Admit::Nothing | Admit::Lost => Ok(false),
        Admit::LostWarn => {
            py.import("asyncio.log")?
                .getattr("logger")?
                .call_method1("warning", (rules.lost_write_warning,))?;
            Ok(false)
        }
        Admit::AfterEof => Err(PyRuntimeError::new_err(format!(
            "Cannot call {method}() after write_eof()"
        ))),
        Admit::DuringSendfile => Err(PyRuntimeError::new_err(format!(
            "unable to {method}; sendfile is in progress"
        ))),
    }
}

#[cfg(test)]
mod tests;
