//! `ReadPipeCore` / `WritePipeCore`: the native halves of ferroloop's pipe
//! transports (`connect_read_pipe`, `connect_write_pipe`, and every
//! subprocess pipe). They follow asyncio's `_UnixReadPipeTransport` and
//! `_UnixWritePipeTransport` (unix_events.py) step for step, with the
//! stream transport's machinery (src/stream.rs): `read()` into the
//! per-thread buffer and a `bytes` of the exact size to `data_received`;
//! `write()` at once, the rest buffered (`WriteBuffer`, large `bytes`
//! referenced) and sent with one `writev()` when the fd is writable again;
//! flow control at the high/low marks; `connection_lost` exactly once. The
//! write end's write side is src/write_side.rs's, over a `PipeSink`
//! (`write` / `writev`).
//!
//! The objects users see are `ferroloop._pipe.ReadPipeTransport` /
//! `WritePipeTransport` (`asyncio.ReadTransport` / `WriteTransport`), which
//! keep construction (the file-kind checks), `repr`, `__del__`,
//! `_fatal_error`'s reporting and closing the pipe.
//!
//! Differences from asyncio, all in paths where asyncio misbehaves:
//! `connection_lost` is scheduled once even if `abort()` follows `close()`
//! (asyncio would call it twice and fail), the watched fd is never touched
//! after the transport let go of the pipe, and `write()` of a wrong type
//! raises `TypeError` (asyncio asserts, which `-O` removes).
//!
//! Locking: the state mutex is never held while Python code runs.

use std::os::fd::RawFd;

use parking_lot::Mutex;
use pyo3::exceptions::{PyBrokenPipeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyTuple, PyWeakrefMethods, PyWeakrefReference};
use pyo3::{PyTraverseError, PyVisit};

use crate::event_loop::CoreLoop;
use crate::poller::{READABLE, WRITABLE};
use crate::py_io::os_error;
use crate::sys::fd::{read_into, write_from, write_vectored};
use crate::sys::IoVec;
use crate::transport_common::{call_soon, fatal_error, read_to_bytes, schedule_connection_lost};
use crate::write_side::{Sink, WriteEnd, WriteRules, WriteSide};

/// The core holds its transport through a weak reference: what keeps an
/// open transport alive is what keeps asyncio's alive (its user, and the
/// loop's reader/writer handles, whose argument it is while the fd is
/// watched). So a transport dropped open is freed at once, and warns,
/// as asyncio's does, rather than by the cyclic GC.
fn weak(transport: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    Ok(PyWeakrefReference::new(transport)?.into_any().unbind())
}

fn upgrade(py: Python<'_>, weak: &Option<Py<PyAny>>) -> Option<Py<PyAny>> {
    let weak = weak.as_ref()?.bind(py).cast::<PyWeakrefReference>().ok()?;
    weak.upgrade().map(Bound::unbind)
}

/// In debug mode, `transport._log_closed_by_peer()` (asyncio's
/// "%r was closed by peer" info log).
fn log_closed_by_peer(loop_: &Bound<'_, CoreLoop>, transport: &Option<Py<PyAny>>) -> PyResult<()> {
    let py = loop_.py();
    let Some(transport) = transport else {
        return Ok(());
    };
    if loop_.call_method0(intern!(py, "get_debug"))?.is_truthy()? {
        transport
            .bind(py)
            .call_method0(intern!(py, "_log_closed_by_peer"))?;
    }
    Ok(())
}

/// Register `core._read_ready(transport)` / `core._write_ready(transport)`
/// as the fd's reader / writer; the loop's handle, holding the transport,
/// keeps it alive while the fd is watched. Nothing if it is gone.
fn watch_fd(
    core: &Bound<'_, PyAny>,
    loop_: &Bound<'_, CoreLoop>,
    fd: RawFd,
    dir: u32,
    transport: Option<Py<PyAny>>,
) -> PyResult<()> {
    let py = core.py();
    let Some(transport) = transport else {
        return Ok(());
    };
    let callback = if dir == READABLE {
        core.getattr(intern!(py, "_read_ready"))?
    } else {
        core.getattr(intern!(py, "_write_ready"))?
    };
    CoreLoop::watch(
        loop_,
        dir,
        fd,
        callback,
        PyTuple::new(py, [transport])?,
        None,
    )?;
    Ok(())
}

// -- the read end ----------------------------------------------------------

struct ReadState {
    transport: Option<Py<PyAny>>,
    protocol: Option<Py<PyAny>>,
    closing: bool,
    paused: bool,
    /// `_call_connection_lost` is scheduled (or ran).
    lost: bool,
}

#[pyclass(frozen, module = "ferroloop._ferroloop")]
pub struct ReadPipeCore {
    loop_: Py<CoreLoop>,
    fd: RawFd,
    /// The transport's `max_size`: what one `read()` asks for.
    max_size: usize,
    st: Mutex<ReadState>,
}

impl ReadPipeCore {
    /// Register `_read_ready(transport)` as the fd's reader (nothing if
    /// the transport is gone).
    fn watch(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        let transport = upgrade(slf.py(), &this.st.lock().transport);
        watch_fd(
            slf.as_any(),
            this.loop_.bind(slf.py()),
            this.fd,
            READABLE,
            transport,
        )
    }

    fn unwatch(&self, py: Python<'_>) -> PyResult<()> {
        self.loop_
            .bind(py)
            .get()
            .unwatch_if_open(self.fd, READABLE)?;
        Ok(())
    }

    /// End of file: asyncio schedules `eof_received` then
    /// `_call_connection_lost(None)`.
    fn on_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let loop_ = this.loop_.bind(py);
        let transport = upgrade(py, &this.st.lock().transport);
        log_closed_by_peer(loop_, &transport)?;
        let (protocol, lost_transport) = {
            let mut st = this.st.lock();
            st.closing = true;
            let first = !std::mem::replace(&mut st.lost, true);
            (
                st.protocol.as_ref().map(|p| p.clone_ref(py)),
                if first { transport } else { None },
            )
        };
        this.unwatch(py)?;
        if let Some(protocol) = protocol {
            let eof_received = protocol.bind(py).getattr(intern!(py, "eof_received"))?;
            call_soon(loop_, eof_received, PyTuple::empty(py), None)?;
        }
        schedule_connection_lost(loop_, lost_transport, py.None().into_bound(py), None)
    }
}

#[pymethods]
impl ReadPipeCore {
    #[new]
    fn new(
        loop_: &Bound<'_, CoreLoop>,
        fd: RawFd,
        transport: &Bound<'_, PyAny>,
        protocol: Py<PyAny>,
    ) -> PyResult<Self> {
        let max_size: usize = transport.getattr("max_size")?.extract()?;
        if max_size == 0 {
            return Err(PyValueError::new_err("max_size must be positive"));
        }
        Ok(ReadPipeCore {
            loop_: loop_.clone().unbind(),
            fd,
            max_size,
            st: Mutex::new(ReadState {
                transport: Some(weak(transport)?),
                protocol: Some(protocol),
                closing: false,
                paused: false,
                lost: false,
            }),
        })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.loop_)?;
        if let Some(st) = self.st.try_lock() {
            visit.call(&st.transport)?;
            visit.call(&st.protocol)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        let (t, p) = {
            let mut st = self.st.lock();
            (st.transport.take(), st.protocol.take())
        };
        drop((t, p));
    }

    /// The pipe is readable (registered as the fd's reader, with the
    /// transport as argument to keep it alive).
    #[pyo3(signature = (_transport=None))]
    fn _read_ready(slf: &Bound<'_, Self>, _transport: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let protocol = {
            let st = this.st.lock();
            if st.lost {
                return Ok(());
            }
            match &st.protocol {
                Some(p) => p.clone_ref(py),
                None => return Ok(()),
            }
        };
        let received = read_to_bytes(py, this.max_size, |buf| read_into(this.fd, buf));
        let data = match received {
            Ok(Some(data)) => data,
            Ok(None) => return Ok(()),
            Err(e) => {
                let transport = upgrade(py, &this.st.lock().transport);
                return fatal_error(
                    py,
                    transport,
                    os_error(py, e),
                    "Fatal read error on pipe transport",
                );
            }
        };
        let n = data.as_bytes().len();
        if n == 0 {
            return Self::on_eof(slf);
        }
        this.loop_.get().record_bytes_read(n);
        // As asyncio: an exception of data_received() goes to the loop's
        // exception handler ("Exception in callback ..."), the transport
        // stays open.
        protocol.call_method1(py, intern!(py, "data_received"), (data,))?;
        Ok(())
    }

    /// Start reading (scheduled after `connection_made`), unless paused or
    /// closed meanwhile.
    fn _start_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        if !slf.get().is_reading() {
            return Ok(());
        }
        Self::watch(slf)
    }

    fn is_reading(&self) -> bool {
        let st = self.st.lock();
        !st.paused && !st.closing
    }

    fn is_closing(&self) -> bool {
        self.st.lock().closing
    }

    /// True if reading was paused by this call.
    fn pause_reading(&self, py: Python<'_>) -> PyResult<bool> {
        {
            let mut st = self.st.lock();
            if st.paused || st.closing {
                return Ok(false);
            }
            st.paused = true;
        }
        self.unwatch(py)?;
        Ok(true)
    }

    /// True if reading was resumed by this call.
    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<bool> {
        {
            let mut st = slf.get().st.lock();
            if st.closing || !st.paused {
                return Ok(false);
            }
            st.paused = false;
        }
        Self::watch(slf)?;
        Ok(true)
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        if slf.get().is_closing() {
            return Ok(());
        }
        Self::_close(slf, slf.py().None().into_bound(slf.py()))
    }

    /// Stop reading and schedule `connection_lost(exc)` (once).
    fn _close(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let transport = {
            let mut st = this.st.lock();
            st.closing = true;
            if std::mem::replace(&mut st.lost, true) {
                None
            } else {
                upgrade(py, &st.transport)
            }
        };
        this.unwatch(py)?;
        schedule_connection_lost(this.loop_.bind(py), transport, exc, None)
    }

    fn set_protocol(&self, protocol: Py<PyAny>) {
        let old = self.st.lock().protocol.replace(protocol);
        drop(old);
    }

    fn get_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st.lock().protocol.as_ref().map(|p| p.clone_ref(py))
    }

    #[getter]
    fn _paused(&self) -> bool {
        self.st.lock().paused
    }

    /// The transport let go of the pipe (end of `_call_connection_lost`):
    /// drop the protocol and the transport; the fd is never touched again.
    fn _detach(&self) {
        let (t, p) = {
            let mut st = self.st.lock();
            st.closing = true;
            st.lost = true;
            (st.transport.take(), st.protocol.take())
        };
        drop((t, p));
    }
}

// -- the write end ---------------------------------------------------------

/// A pipe's `write` / `writev`.
#[derive(Clone, Copy)]
pub(crate) struct PipeSink(RawFd);

impl From<RawFd> for PipeSink {
    fn from(fd: RawFd) -> Self {
        PipeSink(fd)
    }
}

impl Sink for PipeSink {
    #[inline]
    fn send(self, data: &[u8]) -> std::io::Result<Option<usize>> {
        write_from(self.0, data)
    }

    #[inline]
    fn send_vectored(self, bufs: &[IoVec]) -> std::io::Result<Option<usize>> {
        write_vectored(self.0, bufs)
    }
}

struct WriteState {
    /// Weak, as the read end's (`weak`).
    transport: Option<Py<PyAny>>,
    protocol: Option<Py<PyAny>>,
    w: WriteSide,
}

#[pyclass(frozen, module = "ferroloop._ferroloop")]
pub struct WritePipeCore {
    loop_: Py<CoreLoop>,
    fd: RawFd,
    st: Mutex<WriteState>,
}

impl WritePipeCore {
    /// Register `_read_ready(transport)` / `_write_ready(transport)` as
    /// the fd's reader / writer (nothing if the transport is gone).
    fn watch(slf: &Bound<'_, Self>, dir: u32) -> PyResult<()> {
        let this = slf.get();
        let transport = this.transport(slf.py());
        watch_fd(
            slf.as_any(),
            this.loop_.bind(slf.py()),
            this.fd,
            dir,
            transport,
        )
    }
}

impl WriteEnd for WritePipeCore {
    type Sink = PipeSink;
    const RULES: WriteRules = WriteRules {
        write_error: "Fatal write error on pipe transport",
        lost_write_warning: "pipe closed by peer or os.write(pipe, data) raised exception.",
        drop_when_closing: true,
        count_failed_writes: true,
        count_close: false,
        resume_on_progress: false,
        close_stops_reader: false,
        close_removes_writer: false,
        writelines_empty_by_bytes: true,
        join_type_errors: true,
    };

    fn watched_fd(&self) -> (&Py<CoreLoop>, RawFd) {
        (&self.loop_, self.fd)
    }

    #[inline]
    fn with_side<R>(&self, f: impl FnOnce(&mut WriteSide) -> R) -> R {
        f(&mut self.st.lock().w)
    }

    fn transport(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        upgrade(py, &self.st.lock().transport)
    }

    fn protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st.lock().protocol.as_ref().map(|p| p.clone_ref(py))
    }

    fn context(&self) -> Option<&Py<PyAny>> {
        None
    }

    fn watch_writable(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::watch(slf, WRITABLE)
    }

    /// Everything written is out: finish a `write_eof()` / `close()` that
    /// was waiting for the buffer to drain.
    fn drained(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let transport = {
            let mut st = this.st.lock();
            let w = &mut st.w;
            if !w.closing || !w.out.is_empty() || w.lost {
                return Ok(());
            }
            w.mark_lost(&Self::RULES);
            upgrade(py, &st.transport)
        };
        this.unwatch(py, READABLE)?;
        if let Some(transport) = transport {
            transport.call_method1(py, intern!(py, "_call_connection_lost"), (py.None(),))?;
        }
        Ok(())
    }
}

#[pymethods]
impl WritePipeCore {
    #[new]
    fn new(
        loop_: &Bound<'_, CoreLoop>,
        fd: RawFd,
        transport: &Bound<'_, PyAny>,
        protocol: Py<PyAny>,
    ) -> PyResult<Self> {
        Ok(WritePipeCore {
            loop_: loop_.clone().unbind(),
            fd,
            st: Mutex::new(WriteState {
                transport: Some(weak(transport)?),
                protocol: Some(protocol),
                w: WriteSide::default(),
            }),
        })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.loop_)?;
        if let Some(st) = self.st.try_lock() {
            visit.call(&st.transport)?;
            visit.call(&st.protocol)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        let (t, p) = {
            let mut st = self.st.lock();
            (st.transport.take(), st.protocol.take())
        };
        drop((t, p));
    }

    /// Write now what the pipe takes; buffer the rest.
    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::write_data(slf, data)
    }

    /// asyncio writes `b"".join(list_of_data)`; this is one `writev` of
    /// the buffers, the rest buffered.
    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::write_lines(slf, list_of_data)
    }

    /// The pipe is writable again (registered while data is buffered).
    #[pyo3(signature = (_transport=None))]
    fn _write_ready(slf: &Bound<'_, Self>, _transport: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        Self::flush(slf)
    }

    /// The reader trick: the write end reads as ready once the read end is
    /// closed. Scheduled after `connection_made`.
    fn _start_watching_peer(slf: &Bound<'_, Self>) -> PyResult<()> {
        if slf.get().st.lock().w.lost {
            return Ok(());
        }
        Self::watch(slf, READABLE)
    }

    /// The pipe was closed by its peer.
    #[pyo3(signature = (_transport=None))]
    fn _read_ready(slf: &Bound<'_, Self>, _transport: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (transport, buffered) = {
            let st = this.st.lock();
            if st.w.lost {
                return Ok(());
            }
            (upgrade(py, &st.transport), !st.w.out.is_empty())
        };
        log_closed_by_peer(this.loop_.bind(py), &transport)?;
        let exc = if buffered {
            PyBrokenPipeError::new_err(()).into_value(py).into_any()
        } else {
            py.None()
        };
        Self::_close(slf, Some(exc.into_bound(py)))
    }

    /// `close()`: `connection_lost` once the buffer drains.
    fn write_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::close_when_drained(slf)
    }

    /// Close now, dropping buffered data; `connection_lost(exc)` is
    /// scheduled unless it already was.
    #[pyo3(signature = (exc=None))]
    fn _close(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let exc = exc.unwrap_or_else(|| slf.py().None().into_bound(slf.py()));
        Self::force_close(slf, exc)
    }

    fn is_closing(&self) -> bool {
        self.st.lock().w.closing
    }

    fn set_protocol(&self, protocol: Py<PyAny>) {
        let old = self.st.lock().protocol.replace(protocol);
        drop(old);
    }

    fn get_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.protocol(py)
    }

    fn get_write_buffer_size(&self) -> usize {
        self.st.lock().w.out.len()
    }

    /// The marks, already checked and floored by the Python transport
    /// (`ferroloop._transport_common.WriteBufferLimits`, asyncio's rule).
    fn set_write_buffer_limits(&self, py: Python<'_>, high: usize, low: usize) -> PyResult<()> {
        self.set_write_limits(py, high, low)
    }

    fn get_write_buffer_limits(&self) -> (usize, usize) {
        self.st.lock().w.flow.limits()
    }

    #[getter]
    fn _conn_lost(&self) -> usize {
        self.st.lock().w.conn_lost
    }

    #[getter]
    fn _protocol_paused(&self) -> bool {
        self.st.lock().w.flow.is_paused()
    }

    /// The transport let go of the pipe (end of `_call_connection_lost`):
    /// drop the protocol, the transport and the buffer; the fd is never
    /// touched again.
    fn _detach(&self) {
        let (t, p) = {
            let mut st = self.st.lock();
            st.w.detach(&Self::RULES);
            (st.transport.take(), st.protocol.take())
        };
        drop((t, p));
    }
}
