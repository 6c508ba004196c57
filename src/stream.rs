//! `StreamCore`: the native half of ferroloop's stream transport (TCP and
//! Unix sockets). It reads straight from the socket into the protocol
//! (`data_received`, or `get_buffer`/`buffer_updated` for a
//! `BufferedProtocol`), writes at once when the kernel takes the data and
//! buffers only the rest, applies flow control (`pause_writing` /
//! `resume_writing`; the marks and decisions are src/transport_common.rs's),
//! and runs the close / abort / half-close state machine of asyncio's
//! `_SelectorSocketTransport`, step for step.
//!
//! The object users see is `ferroloop._transports.SocketTransport`, an
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
use pyo3::types::{PyBytes, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::event_loop::{new_future, CoreLoop};
use crate::poller::{READABLE, WRITABLE};
use crate::syscalls::{
    bytes_queued, os_error, recv_into_ptr, recv_new_bytes, send_from_ptr, send_vectored,
    shutdown_write, with_recv_buf, DIRECT_READ_MIN, SHARED_RECV_BUF,
};
use crate::transport_common::{
    count_lost_write, fatal_error, schedule_connection_lost, warn_lost_write, FlowControl,
    FlowControlled,
};
use crate::write_buffer::WriteBuffer;

struct State {
    /// The Python `SocketTransport` that owns this core (for callbacks and
    /// error reports); None once the connection is lost.
    transport: Option<Py<PyAny>>,
    protocol: Option<Py<PyAny>>,
    /// The protocol is an `asyncio.BufferedProtocol`.
    buffered: bool,
    out: WriteBuffer,
    /// Set when `connection_lost` is scheduled; counts writes after it.
    conn_lost: usize,
    closing: bool,
    /// `pause_reading()` is in effect.
    paused: bool,
    /// `write_eof()` was called.
    eof: bool,
    flow: FlowControl,
    /// asyncio's `_empty_waiter`: a future `loop.sendfile` awaits until the
    /// write buffer is empty.
    empty_waiter: Option<Py<PyAny>>,
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

/// A contiguous byte view of a buffer object: what `write` sends
/// (`PyBUF_SIMPLE`) or what `recv_into` fills (`PyBUF_WRITABLE`).
pub(crate) struct ByteView {
    view: ffi::Py_buffer,
}

impl ByteView {
    pub(crate) fn new(obj: &Bound<'_, PyAny>, flags: std::os::raw::c_int) -> PyResult<ByteView> {
        // SAFETY: a zeroed Py_buffer is what PyObject_GetBuffer fills in.
        let mut view: ffi::Py_buffer = unsafe { std::mem::zeroed() };
        // SAFETY: `obj` is live; on success the buffer is released in Drop.
        if unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &mut view, flags) } < 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(ByteView { view })
    }

    pub(crate) fn len(&self) -> usize {
        self.view.len as usize
    }

    /// Only for a view acquired with `PyBUF_WRITABLE`.
    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.view.buf.cast()
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        if self.view.len == 0 {
            return &[];
        }
        // SAFETY: PyBUF_SIMPLE gives `len` contiguous bytes at `buf`, valid
        // until the buffer is released.
        unsafe { std::slice::from_raw_parts(self.view.buf as *const u8, self.view.len as usize) }
    }
}

impl Drop for ByteView {
    fn drop(&mut self) {
        // SAFETY: acquired in `new`, released once.
        unsafe { ffi::PyBuffer_Release(&mut self.view) };
    }
}

pub(crate) fn check_write_type(data: &Bound<'_, PyAny>) -> PyResult<()> {
    let p = data.as_ptr();
    // SAFETY: type checks on a live object.
    let ok = unsafe {
        ffi::PyBytes_Check(p) != 0
            || ffi::PyByteArray_Check(p) != 0
            || ffi::PyMemoryView_Check(p) != 0
    };
    if ok {
        return Ok(());
    }
    // The running asyncio's own words (3.14.x reworded them).
    let err = crate::handles::glue(data.py(), "write_type_error")?.call1((data,))?;
    Err(PyErr::from_value(err))
}

impl StreamCore {
    /// asyncio's `_fatal_error`: report (through the Python transport,
    /// which knows each version's rules) and force-close. `SystemExit` and
    /// `KeyboardInterrupt` propagate instead.
    fn fatal_error(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        let transport = slf
            .get()
            .st
            .lock()
            .transport
            .as_ref()
            .map(|t| t.clone_ref(py));
        fatal_error(py, transport, err, message)
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

    fn unwatch(&self, py: Python<'_>, dir: u32) -> PyResult<()> {
        self.loop_.bind(py).get().unwatch_if_open(self.fd, dir)?;
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
            with_recv_buf(|buf| {
                recv_into_ptr(fd, buf.as_mut_ptr(), buf.len())
                    .map(|got| got.map(|n| PyBytes::new(py, &buf[..n])))
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

    /// Everything written is out: wake sendfile, finish a close or a
    /// `write_eof` that was waiting for the buffer to drain.
    fn on_drained(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (waiter, closing, eof, transport) = {
            let st = this.st.lock();
            if !st.out.is_empty() {
                return Ok(()); // resume_writing() wrote more
            }
            (
                st.empty_waiter.as_ref().map(|w| w.clone_ref(py)),
                st.closing,
                st.eof,
                st.transport.as_ref().map(|t| t.clone_ref(py)),
            )
        };
        this.unwatch(py, WRITABLE)?;
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

    /// Checks shared by `write` and `writelines`, in asyncio's order.
    /// Ok(false): drop the data (empty, or the connection is lost).
    fn check_writable(&self, py: Python<'_>, method: &str, empty: bool) -> PyResult<bool> {
        let warn = {
            let mut st = self.st.lock();
            if st.eof {
                return Err(PyRuntimeError::new_err(format!(
                    "Cannot call {method}() after write_eof()"
                )));
            }
            if st.empty_waiter.is_some() {
                return Err(PyRuntimeError::new_err(format!(
                    "unable to {method}; sendfile is in progress"
                )));
            }
            if empty {
                return Ok(false);
            }
            if st.conn_lost == 0 {
                return Ok(true);
            }
            count_lost_write(&mut st.conn_lost)
        };
        if warn {
            warn_lost_write(py, "socket.send() raised exception.")?;
        }
        Ok(false)
    }

    /// Buffer what a direct send left (`rest`: slices, each with its
    /// `bytes` owner if it has one), start watching for writability if the
    /// buffer was empty, and apply flow control.
    fn buffer_rest(slf: &Bound<'_, Self>, rest: &[Pending<'_, '_>]) -> PyResult<()> {
        if rest.iter().all(|(r, _)| r.is_empty()) {
            return Ok(());
        }
        let was_empty = {
            let mut st = slf.get().st.lock();
            let was_empty = st.out.is_empty();
            for (r, owner) in rest {
                st.out.push(r, *owner);
            }
            was_empty
        };
        if was_empty {
            Self::watch(slf, WRITABLE)?;
        }
        slf.get().maybe_pause_protocol(slf.py())
    }
}

impl FlowControlled for StreamCore {
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
        match (&st.protocol, &st.transport) {
            (Some(p), Some(t)) => Some((p.clone_ref(py), t.clone_ref(py))),
            _ => None,
        }
    }
}

/// Data not yet sent, and the `bytes` object it is a slice of (if any).
type Pending<'a, 'py> = (&'a [u8], Option<&'a Bound<'py, PyBytes>>);

/// `obj` as `bytes`, if it is exactly one: immutable, so it may be
/// referenced instead of copied, and freeing it runs no Python code (a
/// subclass's `__del__` could call back into a transport whose lock is
/// held; on 3.12+ its `__buffer__` may also export other bytes).
pub(crate) fn as_bytes_obj<'a, 'py>(obj: &'a Bound<'py, PyAny>) -> Option<&'a Bound<'py, PyBytes>> {
    obj.cast_exact::<PyBytes>().ok()
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
                out: WriteBuffer::default(),
                conn_lost: 0,
                closing: false,
                paused: false,
                eof: false,
                flow: FlowControl::default(),
                empty_waiter: None,
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
            visit.call(&st.empty_waiter)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        let (t, p, w) = {
            let mut st = self.st.lock();
            (
                st.transport.take(),
                st.protocol.take(),
                st.empty_waiter.take(),
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
        self.st.lock().protocol.as_ref().map(|p| p.clone_ref(py))
    }

    /// The socket is readable (registered as the fd's reader).
    fn _read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (protocol, buffered) = {
            let st = slf.get().st.lock();
            if st.conn_lost > 0 {
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
        let py = slf.py();
        let this = slf.get();
        let sent = {
            let mut st = this.st.lock();
            if st.conn_lost > 0 {
                return Ok(());
            }
            if st.out.is_empty() {
                drop(st);
                return this.unwatch(py, WRITABLE);
            }
            let sent = st.out.send_with(py, |iov| send_vectored(this.fd, iov));
            if let Ok(Some(n)) = sent {
                this.loop_.get().record_bytes_written(n);
            }
            sent
        };
        match sent {
            Ok(None) => Ok(()),
            Ok(Some(_)) => {
                this.maybe_resume_protocol(py)?; // may write more
                Self::on_drained(slf)
            }
            Err(e) => {
                this.unwatch(py, WRITABLE)?;
                let exc = os_error(py, e).into_value(py).into_bound(py);
                let waiter = this
                    .st
                    .lock()
                    .empty_waiter
                    .as_ref()
                    .map(|w| w.clone_ref(py));
                Self::fatal_error(
                    slf,
                    PyErr::from_value(exc.clone().into_any()),
                    "Fatal write error on socket transport",
                )?;
                if let Some(waiter) = waiter {
                    waiter.call_method1(py, intern!(py, "set_exception"), (exc,))?;
                }
                Ok(())
            }
        }
    }

    /// Send now what the kernel takes; buffer the rest.
    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        check_write_type(data)?;
        let view = match ByteView::new(data, ffi::PyBUF_SIMPLE) {
            Ok(view) => view,
            Err(err) => {
                // A non-contiguous memoryview: asyncio's send fails with
                // this error, which closes the transport.
                if !this.check_writable(py, "write", data.len()? == 0)? {
                    return Ok(());
                }
                return Self::fatal_error(slf, err, "Fatal write error on socket transport");
            }
        };
        let bytes = view.as_slice();
        if !this.check_writable(py, "write", bytes.is_empty())? {
            return Ok(());
        }
        let owner = as_bytes_obj(data);
        let sent = {
            let st = this.st.lock();
            if !st.out.is_empty() {
                drop(st);
                return Self::buffer_rest(slf, &[(bytes, owner)]);
            }
            send_from_ptr(this.fd, bytes.as_ptr(), bytes.len())
        };
        match sent {
            Ok(Some(n)) => {
                this.loop_.get().record_bytes_written(n);
                Self::buffer_rest(slf, &[(&bytes[n..], owner)])
            }
            Ok(None) => Self::buffer_rest(slf, &[(bytes, owner)]),
            Err(e) => Self::fatal_error(
                slf,
                os_error(py, e),
                "Fatal write error on socket transport",
            ),
        }
    }

    /// One vectored send of every buffer; the rest is buffered.
    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let mut items = Vec::new();
        let mut views = Vec::new();
        for item in list_of_data.try_iter()? {
            let item = item?;
            views.push(ByteView::new(&item, ffi::PyBUF_SIMPLE)?);
            items.push(item);
        }
        if !this.check_writable(py, "writelines", views.is_empty())? {
            return Ok(());
        }
        let slices: Vec<&[u8]> = views.iter().map(ByteView::as_slice).collect();
        let sent = {
            let st = this.st.lock();
            if !st.out.is_empty() {
                drop(st);
                let rest: Vec<Pending<'_, '_>> = slices
                    .iter()
                    .zip(&items)
                    .map(|(s, o)| (*s, as_bytes_obj(o)))
                    .collect();
                return Self::buffer_rest(slf, &rest);
            }
            let iov: Vec<libc::iovec> = slices
                .iter()
                .map(|s| libc::iovec {
                    iov_base: s.as_ptr().cast_mut().cast(),
                    iov_len: s.len(),
                })
                .collect();
            send_vectored(this.fd, &iov)
        };
        let mut n = match sent {
            Ok(Some(n)) => {
                this.loop_.get().record_bytes_written(n);
                n
            }
            Ok(None) => 0,
            Err(e) => {
                return Self::fatal_error(
                    slf,
                    os_error(py, e),
                    "Fatal write error on socket transport",
                )
            }
        };
        let mut rest: Vec<Pending<'_, '_>> = Vec::with_capacity(slices.len());
        for (s, item) in slices.iter().zip(&items) {
            let skip = n.min(s.len());
            n -= skip;
            rest.push((&s[skip..], as_bytes_obj(item)));
        }
        Self::buffer_rest(slf, &rest)
    }

    fn write_eof(&self, py: Python<'_>) -> PyResult<()> {
        {
            let mut st = self.st.lock();
            if st.closing || st.eof {
                return Ok(());
            }
            st.eof = true;
            if !st.out.is_empty() {
                return Ok(()); // shut down once the buffer drains
            }
        }
        shutdown_write(self.fd).map_err(|e| os_error(py, e))
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let lost = {
            let mut st = this.st.lock();
            if st.closing {
                return Ok(());
            }
            st.closing = true;
            if st.out.is_empty() {
                st.conn_lost += 1;
                Some(st.transport.as_ref().map(|t| t.clone_ref(py)))
            } else {
                None // connection_lost once the buffer drains
            }
        };
        this.unwatch(py, READABLE)?;
        if let Some(transport) = lost {
            this.unwatch(py, WRITABLE)?;
            schedule_connection_lost(
                this.loop_.bind(py),
                transport,
                py.None().into_bound(py),
                Some(&this.context),
            )?;
        }
        Ok(())
    }

    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::_force_close(slf, slf.py().None().into_bound(slf.py()))
    }

    /// Close now, dropping buffered data; `connection_lost(exc)` is
    /// scheduled unless it already was.
    fn _force_close(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (had_buffer, was_closing, transport) = {
            let mut st = this.st.lock();
            if st.conn_lost > 0 {
                return Ok(());
            }
            let had_buffer = !st.out.is_empty();
            st.out.clear();
            let was_closing = std::mem::replace(&mut st.closing, true);
            st.conn_lost += 1;
            (
                had_buffer,
                was_closing,
                st.transport.as_ref().map(|t| t.clone_ref(py)),
            )
        };
        if had_buffer {
            this.unwatch(py, WRITABLE)?;
        }
        if !was_closing {
            this.unwatch(py, READABLE)?;
        }
        schedule_connection_lost(this.loop_.bind(py), transport, exc, Some(&this.context))
    }

    fn is_closing(&self) -> bool {
        self.st.lock().closing
    }

    fn is_reading(&self) -> bool {
        let st = self.st.lock();
        !st.closing && !st.paused
    }

    fn pause_reading(&self, py: Python<'_>) -> PyResult<()> {
        {
            let mut st = self.st.lock();
            if st.closing || st.paused {
                return Ok(());
            }
            st.paused = true;
        }
        self.unwatch(py, READABLE)
    }

    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        {
            let mut st = slf.get().st.lock();
            if st.closing || !st.paused {
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

    fn _make_empty_waiter<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if self.st.lock().empty_waiter.is_some() {
            return Err(PyRuntimeError::new_err("Empty waiter is already set"));
        }
        let waiter = new_future(self.loop_.bind(py))?;
        let drained = {
            let mut st = self.st.lock();
            st.empty_waiter = Some(waiter.clone().unbind());
            st.out.is_empty()
        };
        if drained {
            waiter.call_method1(intern!(py, "set_result"), (py.None(),))?;
        }
        Ok(waiter)
    }

    fn _reset_empty_waiter(&self) {
        let old = self.st.lock().empty_waiter.take();
        drop(old);
    }

    #[getter]
    fn _empty_waiter(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st
            .lock()
            .empty_waiter
            .as_ref()
            .map(|w| w.clone_ref(py))
    }

    /// The connection is gone (end of `_call_connection_lost`): let go of
    /// the protocol and the transport; the fd is never touched again.
    fn _detach(&self) {
        let (t, p) = {
            let mut st = self.st.lock();
            st.out.clear();
            st.conn_lost = st.conn_lost.max(1);
            st.closing = true;
            (st.transport.take(), st.protocol.take())
        };
        drop((t, p));
    }

    #[getter]
    fn _conn_lost(&self) -> usize {
        self.st.lock().conn_lost
    }

    #[getter]
    fn _paused(&self) -> bool {
        self.st.lock().paused
    }

    #[getter]
    fn _eof(&self) -> bool {
        self.st.lock().eof
    }

    #[getter]
    fn _protocol_paused(&self) -> bool {
        self.st.lock().flow.is_paused()
    }

    #[getter]
    fn _fd(&self) -> RawFd {
        self.fd
    }
}
