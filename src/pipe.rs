//! `ReadPipeCore` / `WritePipeCore`: the native halves of ferroloop's pipe
//! transports (`connect_read_pipe`, `connect_write_pipe`, and every
//! subprocess pipe). They follow asyncio's `_UnixReadPipeTransport` and
//! `_UnixWritePipeTransport` (unix_events.py) step for step, with the
//! stream transport's machinery (src/stream.rs): `read()` into the
//! per-thread buffer and a `bytes` of the exact size to `data_received`;
//! `write()` at once, the rest buffered (`WriteBuffer`, large `bytes`
//! referenced) and sent with one `writev()` when the fd is writable again;
//! flow control at the high/low marks (src/transport_common.rs);
//! `connection_lost` exactly once.
//!
//! The objects users see are `ferroloop._unix.ReadPipeTransport` /
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
use pyo3::exceptions::{PyBrokenPipeError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple, PyWeakrefMethods, PyWeakrefReference};
use pyo3::{PyTraverseError, PyVisit};

use crate::event_loop::CoreLoop;
use crate::poller::{READABLE, WRITABLE};
use crate::stream::{as_bytes_obj, check_write_type, ByteView};
use crate::syscalls::{os_error, retry_syscall, with_recv_buf, IOV_MAX, SHARED_RECV_BUF};
use crate::transport_common::{
    call_soon, count_lost_write, fatal_error, must_propagate, schedule_connection_lost,
    warn_lost_write, FlowControl, FlowControlled,
};
use crate::write_buffer::WriteBuffer;

fn read_into(fd: RawFd, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
    // SAFETY: `buf` is writable for its length.
    retry_syscall(|| unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })
}

fn write_from(fd: RawFd, data: &[u8]) -> std::io::Result<Option<usize>> {
    // SAFETY: `data` is readable for its length.
    retry_syscall(|| unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) })
}

fn write_vectored(fd: RawFd, bufs: &[libc::iovec]) -> std::io::Result<Option<usize>> {
    let count = bufs.len().min(IOV_MAX) as libc::c_int;
    // SAFETY: every iovec points into a buffer the caller holds.
    retry_syscall(|| unsafe { libc::writev(fd, bufs.as_ptr(), count) })
}

fn iovecs_of(slices: &[&[u8]]) -> Vec<libc::iovec> {
    slices
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| libc::iovec {
            iov_base: s.as_ptr().cast_mut().cast(),
            iov_len: s.len(),
        })
        .collect()
}

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
        let read = |buf: &mut [u8]| {
            read_into(this.fd, buf).map(|got| got.map(|n| PyBytes::new(py, &buf[..n])))
        };
        let received = if this.max_size <= SHARED_RECV_BUF {
            with_recv_buf(|buf| read(&mut buf[..this.max_size]))
        } else {
            read(&mut vec![0u8; this.max_size])
        };
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

struct WriteState {
    transport: Option<Py<PyAny>>,
    protocol: Option<Py<PyAny>>,
    out: WriteBuffer,
    conn_lost: usize,
    /// Set by `close()`, `write_eof()`, `abort()` or an error.
    closing: bool,
    /// `_call_connection_lost` is scheduled (or ran).
    lost: bool,
    flow: FlowControl,
}

#[pyclass(frozen, module = "ferroloop._ferroloop")]
pub struct WritePipeCore {
    loop_: Py<CoreLoop>,
    fd: RawFd,
    st: Mutex<WriteState>,
}

/// Data not yet written, and the `bytes` object it is a slice of (if any).
type Pending<'a, 'py> = (&'a [u8], Option<&'a Bound<'py, PyBytes>>);

impl WritePipeCore {
    fn transport(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        upgrade(py, &self.st.lock().transport)
    }

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

    fn unwatch(&self, py: Python<'_>, dir: u32) -> PyResult<()> {
        self.loop_.bind(py).get().unwatch_if_open(self.fd, dir)?;
        Ok(())
    }

    /// asyncio's checks before a write, in its order. Ok(false): drop the
    /// data (empty, or the pipe is closing or lost).
    /// Not StreamCore's: asyncio's pipe drops writes once closing, its
    /// socket raises after `write_eof()` or during `sendfile`.
    fn check_writable(&self, py: Python<'_>, empty: bool) -> PyResult<bool> {
        if empty {
            return Ok(false);
        }
        let warn = {
            let mut st = self.st.lock();
            if st.conn_lost == 0 && !st.closing {
                return Ok(true);
            }
            count_lost_write(&mut st.conn_lost)
        };
        if warn {
            warn_lost_write(
                py,
                "pipe closed by peer or os.write(pipe, data) raised exception.",
            )?;
        }
        Ok(false)
    }

    /// A write failed: count it and report (asyncio's `except BaseException`).
    fn write_failed(slf: &Bound<'_, Self>, err: PyErr) -> PyResult<()> {
        let py = slf.py();
        if must_propagate(py, &err) {
            return Err(err);
        }
        slf.get().st.lock().conn_lost += 1;
        fatal_error(
            py,
            slf.get().transport(py),
            err,
            "Fatal write error on pipe transport",
        )
    }

    /// Write `pending` now if nothing is buffered; buffer what is left,
    /// watching for writability if the buffer was empty; flow control.
    fn write_or_buffer(slf: &Bound<'_, Self>, pending: &[Pending<'_, '_>]) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let buffered = !this.st.lock().out.is_empty();
        let mut written = 0;
        if !buffered {
            let result = if pending.len() == 1 {
                write_from(this.fd, pending[0].0)
            } else {
                let slices: Vec<&[u8]> = pending.iter().map(|(s, _)| *s).collect();
                write_vectored(this.fd, &iovecs_of(&slices))
            };
            match result {
                Ok(Some(n)) => written = n,
                Ok(None) => {}
                Err(e) => return Self::write_failed(slf, os_error(py, e)),
            }
            if written > 0 {
                this.loop_.get().record_bytes_written(written);
            }
            let total: usize = pending.iter().map(|(s, _)| s.len()).sum();
            if written == total {
                return Ok(());
            }
            Self::watch(slf, WRITABLE)?;
        }
        {
            let mut st = this.st.lock();
            for (s, owner) in pending {
                let skip = written.min(s.len());
                written -= skip;
                st.out.push(&s[skip..], *owner);
            }
        }
        slf.get().maybe_pause_protocol(slf.py())
    }
}

impl FlowControlled for WritePipeCore {
    fn core_loop(&self) -> &Py<CoreLoop> {
        &self.loop_
    }

    #[inline]
    fn with_flow<R>(&self, f: impl FnOnce(&mut FlowControl, usize) -> R) -> R {
        let mut st = self.st.lock();
        let size = st.out.len();
        f(&mut st.flow, size)
    }

    fn flow_parties(&self, py: Python<'_>) -> Option<(Py<PyAny>, Py<PyAny>)> {
        let st = self.st.lock();
        match (&st.protocol, upgrade(py, &st.transport)) {
            (Some(p), Some(t)) => Some((p.clone_ref(py), t)),
            _ => None,
        }
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
                out: WriteBuffer::default(),
                conn_lost: 0,
                closing: false,
                lost: false,
                flow: FlowControl::default(),
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
        let py = slf.py();
        let view;
        let (bytes, owner) = match as_bytes_obj(data) {
            // bytes: no buffer view to acquire and release.
            Some(b) => (b.as_bytes(), Some(b)),
            None => {
                check_write_type(data)?;
                view = match ByteView::new(data, ffi::PyBUF_SIMPLE) {
                    Ok(view) => view,
                    Err(err) => {
                        // A non-contiguous memoryview: asyncio's os.write
                        // fails with this error, which closes the transport.
                        if !slf.get().check_writable(py, data.len()? == 0)? {
                            return Ok(());
                        }
                        return Self::write_failed(slf, err);
                    }
                };
                (view.as_slice(), None)
            }
        };
        // The common case while the pipe is full: append to the buffer
        // under one acquisition of the lock.
        let pause = {
            let mut st = slf.get().st.lock();
            if bytes.is_empty() || st.conn_lost > 0 || st.closing || st.out.is_empty() {
                None
            } else {
                st.out.push(bytes, owner);
                let size = st.out.len();
                Some(st.flow.should_pause(size))
            }
        };
        match pause {
            Some(true) => slf.get().notify_flow(py, intern!(py, "pause_writing")),
            Some(false) => Ok(()),
            None => {
                if !slf.get().check_writable(py, bytes.is_empty())? {
                    return Ok(());
                }
                Self::write_or_buffer(slf, &[(bytes, owner)])
            }
        }
    }

    /// asyncio writes `b"".join(list_of_data)`; this is one `writev` of
    /// the buffers, the rest buffered.
    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let mut items = Vec::new();
        let mut views = Vec::new();
        for (i, item) in list_of_data.try_iter()?.enumerate() {
            let item = item?;
            match ByteView::new(&item, ffi::PyBUF_SIMPLE) {
                Ok(view) => views.push(view),
                Err(_) => {
                    return Err(PyTypeError::new_err(format!(
                        "sequence item {i}: expected a bytes-like object, {} found",
                        item.get_type().name()?
                    )))
                }
            }
            items.push(item);
        }
        let total: usize = views.iter().map(ByteView::len).sum();
        if !slf.get().check_writable(py, total == 0)? {
            return Ok(());
        }
        let pending: Vec<Pending<'_, '_>> = views
            .iter()
            .zip(&items)
            .filter(|(v, _)| v.len() > 0)
            .map(|(v, item)| (v.as_slice(), as_bytes_obj(item)))
            .collect();
        Self::write_or_buffer(slf, &pending)
    }

    /// The pipe is writable again (registered while data is buffered).
    #[pyo3(signature = (_transport=None))]
    fn _write_ready(slf: &Bound<'_, Self>, _transport: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let written = {
            let mut st = this.st.lock();
            if st.lost {
                return Ok(());
            }
            if st.out.is_empty() {
                drop(st);
                return this.unwatch(py, WRITABLE);
            }
            let written = st.out.send_with(py, |iov| write_vectored(this.fd, iov));
            match written {
                Ok(Some(n)) => this.loop_.get().record_bytes_written(n),
                Err(_) => st.conn_lost += 1,
                Ok(None) => {}
            }
            written
        };
        match written {
            Ok(None) => Ok(()),
            Err(e) => {
                // Remove the writer here: _fatal_error() does not, as the
                // buffer is empty.
                this.unwatch(py, WRITABLE)?;
                fatal_error(
                    py,
                    this.transport(py),
                    os_error(py, e),
                    "Fatal write error on pipe transport",
                )
            }
            Ok(Some(_)) => {
                if !this.st.lock().out.is_empty() {
                    return Ok(());
                }
                this.unwatch(py, WRITABLE)?;
                this.maybe_resume_protocol(py)?; // may write more
                let transport = {
                    let mut st = this.st.lock();
                    if !st.closing || !st.out.is_empty() || st.lost {
                        return Ok(());
                    }
                    st.lost = true;
                    upgrade(py, &st.transport)
                };
                this.unwatch(py, READABLE)?;
                if let Some(transport) = transport {
                    transport.call_method1(
                        py,
                        intern!(py, "_call_connection_lost"),
                        (py.None(),),
                    )?;
                }
                Ok(())
            }
        }
    }

    /// The reader trick: the write end reads as ready once the read end is
    /// closed. Scheduled after `connection_made`.
    fn _start_watching_peer(slf: &Bound<'_, Self>) -> PyResult<()> {
        if slf.get().st.lock().lost {
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
            if st.lost {
                return Ok(());
            }
            (upgrade(py, &st.transport), !st.out.is_empty())
        };
        log_closed_by_peer(this.loop_.bind(py), &transport)?;
        let exc = if buffered {
            PyBrokenPipeError::new_err(()).into_value(py).into_any()
        } else {
            py.None()
        };
        Self::_close(slf, Some(exc.into_bound(py)))
    }

    fn write_eof(&self, py: Python<'_>) -> PyResult<()> {
        let transport = {
            let mut st = self.st.lock();
            if st.closing {
                return Ok(());
            }
            st.closing = true;
            if !st.out.is_empty() || st.lost {
                return Ok(()); // connection_lost once the buffer drains
            }
            st.lost = true;
            upgrade(py, &st.transport)
        };
        self.unwatch(py, READABLE)?;
        schedule_connection_lost(
            self.loop_.bind(py),
            transport,
            py.None().into_bound(py),
            None,
        )
    }

    /// Close now, dropping buffered data; `connection_lost(exc)` is
    /// scheduled unless it already was.
    #[pyo3(signature = (exc=None))]
    fn _close(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (had_buffer, transport) = {
            let mut st = this.st.lock();
            st.closing = true;
            let had_buffer = !st.out.is_empty();
            st.out.clear();
            let transport = if std::mem::replace(&mut st.lost, true) {
                None
            } else {
                upgrade(py, &st.transport)
            };
            (had_buffer, transport)
        };
        if had_buffer {
            this.unwatch(py, WRITABLE)?;
        }
        this.unwatch(py, READABLE)?;
        let exc = exc.unwrap_or_else(|| py.None().into_bound(py));
        schedule_connection_lost(this.loop_.bind(py), transport, exc, None)
    }

    fn is_closing(&self) -> bool {
        self.st.lock().closing
    }

    fn set_protocol(&self, protocol: Py<PyAny>) {
        let old = self.st.lock().protocol.replace(protocol);
        drop(old);
    }

    fn get_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st.lock().protocol.as_ref().map(|p| p.clone_ref(py))
    }

    fn get_write_buffer_size(&self) -> usize {
        self.st.lock().out.len()
    }

    /// The marks, already checked and floored by the Python transport
    /// (`ferroloop._transports.write_buffer_limits`, asyncio's rule).
    fn set_write_buffer_limits(&self, py: Python<'_>, high: usize, low: usize) -> PyResult<()> {
        self.set_limits(py, high, low)
    }

    fn get_write_buffer_limits(&self) -> (usize, usize) {
        self.st.lock().flow.limits()
    }

    #[getter]
    fn _conn_lost(&self) -> usize {
        self.st.lock().conn_lost
    }

    #[getter]
    fn _protocol_paused(&self) -> bool {
        self.st.lock().flow.is_paused()
    }

    /// The transport let go of the pipe (end of `_call_connection_lost`):
    /// drop the protocol, the transport and the buffer; the fd is never
    /// touched again.
    fn _detach(&self) {
        let (t, p) = {
            let mut st = self.st.lock();
            st.out.clear();
            st.closing = true;
            st.lost = true;
            (st.transport.take(), st.protocol.take())
        };
        drop((t, p));
    }
}
