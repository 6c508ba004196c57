//! `StreamCore`: the native half of ferroloop's stream transport (TCP and
//! Unix sockets). It reads straight from the socket into the protocol
//! (`data_received`, or `get_buffer`/`buffer_updated` for a
//! `BufferedProtocol`), writes at once when the kernel takes the data and
//! buffers only the rest, applies flow control (`pause_writing` /
//! `resume_writing`), and runs the close / abort / half-close state machine
//! of asyncio's `_SelectorSocketTransport`, step for step. The write side
//! is src/write_side.rs's, over a `SocketSink` (`send` / `sendmsg`); what is
//! the socket's own here is reading, `write_eof` and `sendfile`'s waiter.
//!
//! The object users see is `ferroloop._stream.SocketTransport`, an
//! `asyncio.Transport` subclass that owns one `StreamCore`. That Python
//! object keeps what is rare and version-specific (construction, `repr`,
//! `get_extra_info`, the `Server` bookkeeping, `_fatal_error`'s reporting,
//! closing the socket); every per-event path is here.
//!
//! Locking: the state mutex is never held while Python code runs (protocol
//! callbacks call back into `write`, `pause_reading`, `close`, ...).

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;
use pyo3::{PyTraverseError, PyVisit};

use crate::event_loop::{new_future, CoreLoop};
use crate::poller::{READABLE, WRITABLE};
use crate::py_io::{os_error, recv_new_bytes};
use crate::recv_buf::{DIRECT_READ_MIN, SHARED_RECV_BUF};
use crate::sys::net::{bytes_queued, recv_into_ptr, send_from_ptr, send_vectored, shutdown_write};
use crate::sys::IoVec;
use crate::transport_common::{fatal_error, read_to_bytes};
use crate::write_buffer::ByteView;
use crate::write_side::{Sink, WriteEnd, WriteRules, WriteSide};

/// A socket's `send` / `sendmsg`, without SIGPIPE.
#[derive(Clone, Copy)]
pub(crate) struct SocketSink(RawFd);

impl From<RawFd> for SocketSink {
    fn from(fd: RawFd) -> Self {
        SocketSink(fd)
    }
}

impl Sink for SocketSink {
    #[inline]
    fn send(self, data: &[u8]) -> std::io::Result<Option<usize>> {
        send_from_ptr(self.0, data.as_ptr(), data.len())
    }

    #[inline]
    fn send_vectored(self, bufs: &[IoVec]) -> std::io::Result<Option<usize>> {
        send_vectored(self.0, bufs)
    }
}

struct State {
    /// The Python `SocketTransport` that owns this core (for callbacks and
    /// error reports); None once the connection is lost.
    ///
    /// Held strongly, where a pipe core holds its transport weakly (and
    /// its fd handles carry it, src/pipe.rs `weak`). The fd's handles here
    /// are the core's own bound methods with no argument (the per-read
    /// path, and `_read_ready_cb`, which asyncio calls as is), and a
    /// socket transport dropped open lives until the cyclic GC breaks its
    /// cycle with the core, then warns: holding it weakly would free it at
    /// once, as asyncio does, but change when its `ResourceWarning` fires
    /// and its socket closes.
    transport: Option<Py<PyAny>>,
    protocol: Option<Py<PyAny>>,
    /// The protocol is an `asyncio.BufferedProtocol`.
    buffered: bool,
    /// `pause_reading()` is in effect.
    paused: bool,
    w: WriteSide,
}

#[pyclass(frozen, module = "ferroloop._ferroloop")]
pub struct StreamCore {
    loop_: Py<CoreLoop>,
    fd: RawFd,
    st: Mutex<State>,
    /// The last `data_received` read was at least `DIRECT_READ_MIN` bytes.
    large_reads: AtomicBool,
    /// The `contextvars.Context` the protocol's callbacks run in: its
    /// creator's (asyncio 3.15's rule, which `SocketTransport` follows on
    /// every version).
    context: Py<PyAny>,
}

fn is_buffered_protocol(protocol: &Bound<'_, PyAny>) -> PyResult<bool> {
    static BUFFERED: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let py = protocol.py();
    let cls = BUFFERED.get_or_try_init(py, || {
        py.import("asyncio.protocols")?
            .getattr("BufferedProtocol")
            .map(Bound::unbind)
    })?;
    protocol.is_instance(cls.bind(py))
}

impl StreamCore {
    /// asyncio's `_fatal_error`: report (through the Python transport,
    /// which knows each version's rules) and force-close. `SystemExit` and
    /// `KeyboardInterrupt` propagate instead.
    fn fatal_error(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        fatal_error(py, slf.get().transport(py), err, message)
    }

    fn watch(slf: &Bound<'_, Self>, dir: u32) -> PyResult<()> {
        let py = slf.py();
        let callback = if dir == READABLE {
            slf.getattr(intern!(py, "_read_ready"))?
        } else {
            slf.getattr(intern!(py, "_write_ready"))?
        };
        let this = slf.get();
        CoreLoop::watch(
            this.loop_.bind(py),
            dir,
            this.fd,
            callback,
            PyTuple::empty(py),
            Some(this.context.bind(py).clone()),
        )?;
        Ok(())
    }

    fn read_data(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let fd = slf.get().fd;
        // A connection whose last read was large (bulk transfer) asks how
        // much is queued and, when that is large too, receives straight
        // into the `bytes` it hands to the protocol.
        let queued = if slf.get().large_reads.load(Ordering::Relaxed) {
            bytes_queued(fd)
        } else {
            0
        };
        let received = if queued >= DIRECT_READ_MIN {
            recv_new_bytes(py, fd, queued.min(SHARED_RECV_BUF))?
        } else {
            read_to_bytes(py, SHARED_RECV_BUF, |buf| {
                recv_into_ptr(fd, buf.as_mut_ptr(), buf.len())
            })
        };
        let data = match received {
            Ok(Some(data)) => data,
            Ok(None) => return Ok(()),
            Err(e) => {
                return Self::fatal_error(
                    slf,
                    os_error(py, e),
                    "Fatal read error on socket transport",
                )
            }
        };
        if data.as_bytes().is_empty() {
            return Self::on_eof(slf, protocol);
        }
        slf.get()
            .large_reads
            .store(data.as_bytes().len() >= DIRECT_READ_MIN, Ordering::Relaxed);
        slf.get()
            .loop_
            .get()
            .record_bytes_read(data.as_bytes().len());
        if let Err(err) = protocol.call_method1(intern!(py, "data_received"), (data,)) {
            return Self::fatal_error(
                slf,
                err,
                "Fatal error: protocol.data_received() call failed.",
            );
        }
        Ok(())
    }

    fn read_into_buffer(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        const GET_BUFFER_FAILED: &str = "Fatal error: protocol.get_buffer() call failed.";
        let py = slf.py();
        let buf = match protocol.call_method1(intern!(py, "get_buffer"), (-1,)) {
            Ok(buf) => buf,
            Err(err) => return Self::fatal_error(slf, err, GET_BUFFER_FAILED),
        };
        match buf.len() {
            Ok(0) => {
                let err = PyRuntimeError::new_err("get_buffer() returned an empty buffer");
                return Self::fatal_error(slf, err, GET_BUFFER_FAILED);
            }
            Ok(_) => {}
            Err(err) => return Self::fatal_error(slf, err, GET_BUFFER_FAILED),
        }
        let received = match ByteView::new(&buf, ffi::PyBUF_WRITABLE) {
            // socket.recv_into's own error for anything but a writable buffer.
            Err(_) => Err(PyTypeError::new_err(format!(
                "recv_into() argument 'buffer' must be read-write bytes-like object, not {}",
                buf.get_type().name()?
            ))),
            // The view is released right after recv, before the protocol
            // runs again (it may resize its buffer).
            Ok(mut view) => recv_into_ptr(slf.get().fd, view.as_mut_ptr(), view.len())
                .map_err(|e| os_error(py, e)),
        };
        let nbytes = match received {
            Ok(Some(n)) => n,
            Ok(None) => return Ok(()),
            Err(err) => return Self::fatal_error(slf, err, "Fatal read error on socket transport"),
        };
        if nbytes == 0 {
            return Self::on_eof(slf, protocol);
        }
        slf.get().loop_.get().record_bytes_read(nbytes);
        if let Err(err) = protocol.call_method1(intern!(py, "buffer_updated"), (nbytes,)) {
            return Self::fatal_error(
                slf,
                err,
                "Fatal error: protocol.buffer_updated() call failed.",
            );
        }
        Ok(())
    }

    fn on_eof(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let keep_open = match protocol.call_method0(intern!(py, "eof_received")) {
            Ok(v) => v,
            Err(err) => {
                return Self::fatal_error(
                    slf,
                    err,
                    "Fatal error: protocol.eof_received() call failed.",
                )
            }
        };
        if keep_open.is_truthy()? {
            // The protocol may still write; nothing more can be read.
            slf.get().unwatch(py, READABLE)
        } else {
            Self::close(slf)
        }
    }
}

impl WriteEnd for StreamCore {
    type Sink = SocketSink;
    const RULES: WriteRules = WriteRules {
        write_error: "Fatal write error on socket transport",
        lost_write_warning: "socket.send() raised exception.",
        drop_when_closing: false,
        count_failed_writes: false,
        count_close: true,
        resume_on_progress: true,
        close_stops_reader: true,
        close_removes_writer: true,
        writelines_empty_by_bytes: false,
        join_type_errors: false,
    };

    fn watched_fd(&self) -> (&Py<CoreLoop>, RawFd) {
        (&self.loop_, self.fd)
    }

    #[inline]
    fn with_side<R>(&self, f: impl FnOnce(&mut WriteSide) -> R) -> R {
        f(&mut self.st.lock().w)
    }

    fn transport(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st.lock().transport.as_ref().map(|t| t.clone_ref(py))
    }

    fn protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st.lock().protocol.as_ref().map(|p| p.clone_ref(py))
    }

    fn context(&self) -> Option<&Py<PyAny>> {
        Some(&self.context)
    }

    fn watch_writable(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::watch(slf, WRITABLE)
    }

    /// Everything written is out: wake sendfile, finish a close or a
    /// `write_eof` that was waiting for the buffer to drain.
    fn drained(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (waiter, closing, eof, transport) = {
            let st = this.st.lock();
            (
                st.w.empty_waiter.as_ref().map(|w| w.clone_ref(py)),
                st.w.closing,
                st.w.eof,
                st.transport.as_ref().map(|t| t.clone_ref(py)),
            )
        };
        if let Some(waiter) = waiter {
            waiter.call_method1(py, intern!(py, "set_result"), (py.None(),))?;
        }
        if closing {
            if let Some(transport) = transport {
                transport.call_method1(py, intern!(py, "_call_connection_lost"), (py.None(),))?;
            }
        } else if eof {
            shutdown_write(this.fd).map_err(|e| os_error(py, e))?;
        }
        Ok(())
    }
}

#[pymethods]
impl StreamCore {
    #[new]
    fn new(
        loop_: &Bound<'_, CoreLoop>,
        fd: RawFd,
        transport: Py<PyAny>,
        protocol: &Bound<'_, PyAny>,
        context: Py<PyAny>,
    ) -> PyResult<Self> {
        Ok(StreamCore {
            loop_: loop_.clone().unbind(),
            fd,
            large_reads: AtomicBool::new(false),
            context,
            st: Mutex::new(State {
                transport: Some(transport),
                buffered: is_buffered_protocol(protocol)?,
                protocol: Some(protocol.clone().unbind()),
                paused: false,
                w: WriteSide::default(),
            }),
        })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.loop_)?;
        visit.call(&self.context)?;
        // Never block in the GC; a core in use elsewhere is skipped.
        if let Some(st) = self.st.try_lock() {
            visit.call(&st.transport)?;
            visit.call(&st.protocol)?;
            visit.call(&st.w.empty_waiter)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        let (t, p, w) = {
            let mut st = self.st.lock();
            (
                st.transport.take(),
                st.protocol.take(),
                st.w.empty_waiter.take(),
            )
        };
        drop((t, p, w));
    }

    fn set_protocol(&self, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let buffered = is_buffered_protocol(protocol)?;
        let old = {
            let mut st = self.st.lock();
            st.buffered = buffered;
            st.protocol.replace(protocol.clone().unbind())
        };
        drop(old);
        Ok(())
    }

    fn get_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.protocol(py)
    }

    /// The socket is readable (registered as the fd's reader).
    fn _read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (protocol, buffered) = {
            let st = slf.get().st.lock();
            if st.w.lost {
                return Ok(());
            }
            match &st.protocol {
                Some(p) => (p.clone_ref(py), st.buffered),
                None => return Ok(()),
            }
        };
        if buffered {
            Self::read_into_buffer(slf, protocol.bind(py))
        } else {
            Self::read_data(slf, protocol.bind(py))
        }
    }

    /// The socket is writable again (registered while data is buffered).
    fn _write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::flush(slf)
    }

    /// Send now what the kernel takes; buffer the rest.
    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::write_data(slf, data)
    }

    /// One vectored send of every buffer; the rest is buffered.
    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::write_lines(slf, list_of_data)
    }

    fn write_eof(&self, py: Python<'_>) -> PyResult<()> {
        {
            let mut st = self.st.lock();
            let w = &mut st.w;
            if w.closing || w.eof {
                return Ok(());
            }
            w.eof = true;
            if !w.out.is_empty() {
                return Ok(()); // shut down once the buffer drains
            }
        }
        shutdown_write(self.fd).map_err(|e| os_error(py, e))
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::close_when_drained(slf)
    }

    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::force_close(slf, slf.py().None().into_bound(slf.py()))
    }

    /// Close now, dropping buffered data; `connection_lost(exc)` is
    /// scheduled unless it already was.
    fn _force_close(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        Self::force_close(slf, exc)
    }

    fn is_closing(&self) -> bool {
        self.st.lock().w.closing
    }

    fn is_reading(&self) -> bool {
        let st = self.st.lock();
        !st.w.closing && !st.paused
    }

    fn pause_reading(&self, py: Python<'_>) -> PyResult<()> {
        {
            let mut st = self.st.lock();
            if st.w.closing || st.paused {
                return Ok(());
            }
            st.paused = true;
        }
        self.unwatch(py, READABLE)
    }

    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        {
            let mut st = slf.get().st.lock();
            if st.w.closing || !st.paused {
                return Ok(());
            }
            st.paused = false;
        }
        Self::watch(slf, READABLE)
    }

    /// Start reading (scheduled after `connection_made`), unless paused or
    /// closed meanwhile.
    fn _start_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        if !slf.get().is_reading() {
            return Ok(());
        }
        Self::watch(slf, READABLE)
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

    fn _make_empty_waiter<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if self.st.lock().w.empty_waiter.is_some() {
            return Err(PyRuntimeError::new_err("Empty waiter is already set"));
        }
        let waiter = new_future(self.loop_.bind(py))?;
        let drained = {
            let w = &mut self.st.lock().w;
            w.empty_waiter = Some(waiter.clone().unbind());
            w.out.is_empty()
        };
        if drained {
            waiter.call_method1(intern!(py, "set_result"), (py.None(),))?;
        }
        Ok(waiter)
    }

    fn _reset_empty_waiter(&self) {
        let old = self.st.lock().w.empty_waiter.take();
        drop(old);
    }

    #[getter]
    fn _empty_waiter(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st
            .lock()
            .w
            .empty_waiter
            .as_ref()
            .map(|w| w.clone_ref(py))
    }

    /// The connection is gone (end of `_call_connection_lost`): let go of
    /// the protocol and the transport; the fd is never touched again.
    fn _detach(&self) {
        let (t, p) = {
            let mut st = self.st.lock();
            st.w.detach(&Self::RULES);
            (st.transport.take(), st.protocol.take())
        };
        drop((t, p));
    }

    #[getter]
    fn _conn_lost(&self) -> usize {
        self.st.lock().w.conn_lost
    }

    #[getter]
    fn _paused(&self) -> bool {
        self.st.lock().paused
    }

    #[getter]
    fn _eof(&self) -> bool {
        self.st.lock().w.eof
    }

    #[getter]
    fn _protocol_paused(&self) -> bool {
        self.st.lock().w.flow.is_paused()
    }

    #[getter]
    fn _fd(&self) -> RawFd {
        self.fd
    }
}
