//! The hot `sock_*` coroutines' native halves: `sock_recv`,
//! `sock_recv_into` and `sock_sendall`. Each first tries the syscall at once
//! (no exception object when it would block, unlike `socket.recv`); only if
//! the socket is not ready does it register a `SockWaiter` with the loop and
//! hand back its future. The `async def` wrappers in `ferroloop._loop` await
//! that future and call `SockWaiter.cancel()` if they are cancelled, so the
//! reader/writer is removed at once, as asyncio does.
//!
//! Results and errors are those of `socket.recv`/`send`: bytes or an int,
//! `OSError` subclasses from errno, `ValueError` for a negative size.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyBufferError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use crate::event_loop::{new_future, CoreLoop};
use crate::poller::{READABLE, WRITABLE};
use crate::py_io::os_error;
use crate::recv_buf::{with_recv_buf, SHARED_RECV_BUF};
use crate::sys::net::{recv_into_ptr, send_from_ptr};

fn recv_bytes<'py>(py: Python<'py>, fd: RawFd, n: usize) -> PyResult<Option<Bound<'py, PyBytes>>> {
    if n > SHARED_RECV_BUF {
        let mut buf = Vec::<u8>::with_capacity(n);
        let got = recv_into_ptr(fd, buf.as_mut_ptr(), n).map_err(|e| os_error(py, e))?;
        return Ok(got.map(|got| {
            // SAFETY: the kernel initialised `got` bytes.
            unsafe { buf.set_len(got) };
            PyBytes::new(py, &buf)
        }));
    }
    with_recv_buf(|buf| {
        let got = recv_into_ptr(fd, buf.as_mut_ptr(), n).map_err(|e| os_error(py, e))?;
        Ok(got.map(|got| PyBytes::new(py, &buf[..got])))
    })
}

fn sock_fd(sock: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    sock.call_method0(intern!(sock.py(), "fileno"))?.extract()
}

/// A contiguous byte view of any buffer object, as `memoryview(data)` in
/// asyncio (which sends its raw bytes whatever the item format).
fn byte_buffer(obj: &Bound<'_, PyAny>, writable: bool) -> PyResult<PyUntypedBuffer> {
    let buf = PyUntypedBuffer::get(obj)?;
    if !buf.is_c_contiguous() {
        return Err(PyBufferError::new_err("a contiguous buffer is required"));
    }
    if writable && buf.readonly() {
        // socket.recv_into's own error for a read-only buffer.
        return Err(PyTypeError::new_err(format!(
            "recv_into() argument 'buffer' must be read-write bytes-like object, not {}",
            obj.get_type().name()?
        )));
    }
    Ok(buf)
}

/// asyncio's `_ensure_fd_no_transport`: waiting on an fd that an open
/// transport owns is refused. Reads `loop._transports` (a
/// WeakValueDictionary) through its `data` dict, to stay in C.
fn ensure_fd_no_transport(loop_: &Bound<'_, CoreLoop>, fd: RawFd) -> PyResult<()> {
    let py = loop_.py();
    let refs = loop_
        .getattr(intern!(py, "_transports"))?
        .getattr(intern!(py, "data"))?;
    let Some(weak) = refs.cast::<PyDict>()?.get_item(fd)? else {
        return Ok(());
    };
    let transport = weak.call0()?;
    if transport.is_none()
        || transport
            .call_method0(intern!(py, "is_closing"))?
            .is_truthy()?
    {
        return Ok(());
    }
    Err(PyRuntimeError::new_err(format!(
        "File descriptor {fd} is used by transport {}",
        transport.repr()?
    )))
}

enum Op {
    /// Finished: nothing held (a buffer is released as soon as the call
    /// completes or is cancelled, so that the caller may release its own
    /// memoryview at once, as with asyncio's).
    Done,
    Recv {
        n: usize,
    },
    RecvInto {
        buf: PyUntypedBuffer,
        n: usize,
    },
    Send {
        buf: PyUntypedBuffer,
        sent: usize,
    },
}

/// Waits for readiness of one socket on behalf of one `sock_*` call, and
/// completes its future. Registered as the fd's reader or writer callback.
#[pyclass(frozen, module = "ferroloop._ferroloop")]
pub struct SockWaiter {
    loop_ref: Py<PyAny>,
    fut: Py<PyAny>,
    fd: RawFd,
    dir: u32,
    op: Mutex<Op>,
    finished: AtomicBool,
}

impl SockWaiter {
    /// Register a waiter for `op` and return it (Python awaits `.fut`).
    fn start(loop_: &Bound<'_, CoreLoop>, fd: RawFd, dir: u32, op: Op) -> PyResult<Py<SockWaiter>> {
        let py = loop_.py();
        ensure_fd_no_transport(loop_, fd)?;
        let fut = new_future(loop_)?;
        let waiter = Py::new(
            py,
            SockWaiter {
                loop_ref: CoreLoop::weak_self(loop_)?,
                fut: fut.unbind(),
                fd,
                dir,
                op: Mutex::new(op),
                finished: AtomicBool::new(false),
            },
        )?;
        CoreLoop::add_fd_callback(
            loop_,
            dir,
            &fd.into_pyobject(py)?.into_any(),
            waiter.bind(py).clone().into_any(),
            PyTuple::empty(py),
            None,
        )?;
        Ok(waiter)
    }

    /// Stop waiting: unregister, if the fd's callback is still this waiter.
    fn finish(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        if this.finished.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let op = std::mem::replace(&mut *this.op.lock(), Op::Done);
        drop(op); // unlocked: releasing a buffer may run Python code
        let loop_ = this.loop_ref.bind(slf.py()).call0()?;
        if let Ok(loop_) = loop_.cast::<CoreLoop>() {
            loop_
                .get()
                .remove_fd_callback_if(this.fd, this.dir, slf.as_any())?;
        }
        Ok(())
    }

    /// Try the operation; Some(result) when it completed.
    fn attempt<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let mut op = self.op.lock();
        match &mut *op {
            Op::Done => Ok(None),
            Op::Recv { n } => Ok(recv_bytes(py, self.fd, *n)?.map(Bound::into_any)),
            Op::RecvInto { buf, n } => {
                let got = recv_into_ptr(self.fd, buf.buf_ptr().cast(), *n)
                    .map_err(|e| os_error(py, e))?;
                got.map(|k| k.into_pyobject(py).map(Bound::into_any))
                    .transpose()
                    .map_err(Into::into)
            }
            Op::Send { buf, sent } => {
                let total = buf.len_bytes();
                // SAFETY: `sent < total`, inside the buffer we hold.
                let ptr = unsafe { (buf.buf_ptr() as *const u8).add(*sent) };
                if let Some(k) =
                    send_from_ptr(self.fd, ptr, total - *sent).map_err(|e| os_error(py, e))?
                {
                    *sent += k;
                }
                Ok((*sent == total).then(|| py.None().into_bound(py)))
            }
        }
    }
}

#[pymethods]
impl SockWaiter {
    /// The future's callbacks lead back to the coroutine that holds this
    /// waiter: let the GC see the cycle.
    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        visit.call(&self.loop_ref)?;
        visit.call(&self.fut)
    }

    /// The fd is ready: try again, and complete the future when done.
    fn __call__(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let fut = this.fut.bind(py);
        if fut.call_method0(intern!(py, "done"))?.is_truthy()? {
            return Self::finish(slf); // cancelled meanwhile
        }
        match this.attempt(py) {
            Ok(None) => Ok(()), // woken too early: keep waiting
            Ok(Some(result)) => {
                Self::finish(slf)?;
                fut.call_method1(intern!(py, "set_result"), (result,))?;
                Ok(())
            }
            Err(err) => {
                Self::finish(slf)?;
                fut.call_method1(intern!(py, "set_exception"), (err.into_value(py),))?;
                Ok(())
            }
        }
    }

    #[getter]
    fn fut(&self, py: Python<'_>) -> Py<PyAny> {
        self.fut.clone_ref(py)
    }

    /// The awaiting coroutine was cancelled (or failed): stop waiting now.
    fn cancel(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::finish(slf)
    }
}

/// `sock.recv(n)` now if data is there (bytes), else a `SockWaiter`.
#[pyfunction]
pub fn sock_recv<'py>(
    loop_: &Bound<'py, CoreLoop>,
    sock: &Bound<'py, PyAny>,
    n: isize,
) -> PyResult<Bound<'py, PyAny>> {
    let py = loop_.py();
    if n < 0 {
        return Err(PyValueError::new_err("negative buffersize in recv"));
    }
    let fd = sock_fd(sock)?;
    let n = n as usize;
    if let Some(data) = recv_bytes(py, fd, n)? {
        return Ok(data.into_any());
    }
    Ok(SockWaiter::start(loop_, fd, READABLE, Op::Recv { n })?
        .into_bound(py)
        .into_any())
}

/// `sock.recv_into(buf, nbytes)` now if data is there (an int), else a
/// `SockWaiter`.
#[pyfunction]
#[pyo3(signature = (loop_, sock, buf, nbytes=0))]
pub fn sock_recv_into<'py>(
    loop_: &Bound<'py, CoreLoop>,
    sock: &Bound<'py, PyAny>,
    buf: &Bound<'py, PyAny>,
    nbytes: isize,
) -> PyResult<Bound<'py, PyAny>> {
    let py = loop_.py();
    let view = byte_buffer(buf, true)?;
    let size = view.len_bytes();
    let n = match nbytes {
        0 => size,
        k if k < 0 => return Err(PyValueError::new_err("negative buffersize in recv_into")),
        k if k as usize > size => {
            return Err(PyValueError::new_err(
                "buffer too small for requested bytes",
            ))
        }
        k => k as usize,
    };
    let fd = sock_fd(sock)?;
    if let Some(got) = recv_into_ptr(fd, view.buf_ptr().cast(), n).map_err(|e| os_error(py, e))? {
        return Ok(got.into_pyobject(py)?.into_any());
    }
    Ok(
        SockWaiter::start(loop_, fd, READABLE, Op::RecvInto { buf: view, n })?
            .into_bound(py)
            .into_any(),
    )
}

/// Send all of `data` now if the kernel takes it (None), else a
/// `SockWaiter` that sends the rest as the socket drains.
#[pyfunction]
pub fn sock_sendall<'py>(
    loop_: &Bound<'py, CoreLoop>,
    sock: &Bound<'py, PyAny>,
    data: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = loop_.py();
    let view = byte_buffer(data, false)?;
    let total = view.len_bytes();
    let fd = sock_fd(sock)?;
    let mut sent = 0;
    while sent < total {
        // SAFETY: `sent < total`, inside the buffer we hold.
        let ptr = unsafe { (view.buf_ptr() as *const u8).add(sent) };
        match send_from_ptr(fd, ptr, total - sent).map_err(|e| os_error(py, e))? {
            Some(k) => sent += k,
            None => break,
        }
    }
    if sent == total {
        return Ok(None);
    }
    let waiter = SockWaiter::start(loop_, fd, WRITABLE, Op::Send { buf: view, sent })?;
    Ok(Some(waiter.into_bound(py).into_any()))
}
