//! The socket syscalls the native transports and `sock_*` calls make, and
//! the one reusable receive buffer per thread. Knows nothing of asyncio:
//! "would block" is `Ok(None)`, `EINTR` is retried, any other failure is an
//! `io::Error` that `os_error` turns into the `OSError` subclass Python's
//! own `socket` module would raise (same errno, same message).

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Reads of up to this size go through one reusable per-thread buffer and
/// are copied into a `bytes` of the exact length (a 256 KiB `recv` of a
/// 1 KiB message then costs one small copy, not a 256 KiB allocation).
pub(crate) const SHARED_RECV_BUF: usize = 256 * 1024;

/// Linux's IOV_MAX: the most buffers one `writev` takes.
pub(crate) const IOV_MAX: usize = 1024;

thread_local! {
    static RECV_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Run `f` with this thread's receive buffer (`SHARED_RECV_BUF` bytes).
pub(crate) fn with_recv_buf<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    RECV_BUF.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < SHARED_RECV_BUF {
            buf.resize(SHARED_RECV_BUF, 0);
        }
        f(&mut buf)
    })
}

/// Ok(None) means "would block".
pub(crate) fn retry_syscall(mut f: impl FnMut() -> isize) -> io::Result<Option<usize>> {
    loop {
        let r = f();
        if r >= 0 {
            return Ok(Some(r as usize));
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(err),
        }
    }
}

pub(crate) fn recv_into_ptr(fd: RawFd, ptr: *mut u8, len: usize) -> io::Result<Option<usize>> {
    // SAFETY: the caller guarantees `ptr` is writable for `len` bytes.
    retry_syscall(|| unsafe { libc::recv(fd, ptr.cast(), len, 0) })
}

/// Reads at least this large skip the shared buffer: the transport asks the
/// kernel how much is queued (`FIONREAD`) and receives straight into a
/// `bytes` of that size. Above this size the copy saved is worth more than
/// the extra syscall; below it copying is cheaper.
pub(crate) const DIRECT_READ_MIN: usize = 32 * 1024;

extern "C" {
    // In every CPython's C API (not in PyO3's bindings): shrink a `bytes`
    // object nothing else references yet.
    fn _PyBytes_Resize(bytes: *mut *mut ffi::PyObject, newsize: ffi::Py_ssize_t) -> i32;
}

/// Once per process, at the first loop's creation: keep glibc's malloc from
/// returning the heap top to the kernel after every large message and
/// faulting it back in for the next. With glibc's defaults (mmap above
/// 128 KiB, trim when 128 KiB at the top are free), 100 KiB requests through
/// asyncio's streams took 8-15 minor page faults each in the echo
/// benchmark's server; with blocks up to 1 MiB served from the heap and
/// trimming past 4 MiB free, none. (glibc's own dynamic thresholds get there only by
/// chance, after freeing an mmapped block.) Skipped when the user tuned
/// malloc (`MALLOC_*_` variables, `glibc.malloc` tunables) or set
/// `FERROLOOP_MALLOC_TUNING=0`.
pub(crate) fn tune_malloc_for_large_messages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let user_tuned = std::env::vars_os().any(|(name, value)| {
                let name = name.to_string_lossy();
                (name.starts_with("MALLOC_") && name.ends_with('_'))
                    || (name == "GLIBC_TUNABLES"
                        && value.to_string_lossy().contains("glibc.malloc."))
                    || (name == "FERROLOOP_MALLOC_TUNING" && value == "0")
            });
            if !user_tuned {
                // SAFETY: mallopt only sets allocator parameters.
                unsafe {
                    libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
                    libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 20);
                }
            }
        });
    }
}

/// Bytes queued in a socket's (or pipe's) receive buffer: `FIONREAD`.
pub(crate) fn bytes_queued(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } < 0 {
        return 0;
    }
    n.max(0) as usize
}

/// `recv` of up to `len` bytes into a new `bytes` object of that size,
/// shrunk to what arrived (no copy through the shared buffer).
pub(crate) fn recv_new_bytes<'py>(
    py: Python<'py>,
    fd: RawFd,
    len: usize,
) -> PyResult<io::Result<Option<Bound<'py, PyBytes>>>> {
    // SAFETY: a NULL source gives an uninitialised `bytes` of `len` bytes,
    // owned here alone until it is returned: it may be filled and resized.
    unsafe {
        let mut obj = ffi::PyBytes_FromStringAndSize(std::ptr::null(), len as ffi::Py_ssize_t);
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        let got = match recv_into_ptr(fd, ffi::PyBytes_AsString(obj).cast(), len) {
            Ok(Some(got)) => got,
            other => {
                ffi::Py_DECREF(obj);
                return Ok(other.map(|_| None));
            }
        };
        if got < len && _PyBytes_Resize(&mut obj, got as ffi::Py_ssize_t) < 0 {
            // (On failure the object is freed and `obj` set to NULL.)
            return Err(PyErr::fetch(py));
        }
        Ok(Ok(Some(
            Bound::from_owned_ptr(py, obj).cast_into_unchecked(),
        )))
    }
}

/// `send` without SIGPIPE: a closed peer is an `EPIPE` error, as in Python.
pub(crate) fn send_from_ptr(fd: RawFd, ptr: *const u8, len: usize) -> io::Result<Option<usize>> {
    // SAFETY: the caller guarantees `ptr` is readable for `len` bytes.
    retry_syscall(|| unsafe { libc::send(fd, ptr.cast(), len, libc::MSG_NOSIGNAL) })
}

/// `sendmsg` of several buffers at once (at most `IOV_MAX` are used).
pub(crate) fn send_vectored(fd: RawFd, bufs: &[libc::iovec]) -> io::Result<Option<usize>> {
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = bufs.as_ptr().cast_mut();
    msg.msg_iovlen = bufs.len().min(IOV_MAX) as _;
    // SAFETY: every iovec points into a buffer the caller holds.
    retry_syscall(|| unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) })
}

/// `shutdown(fd, SHUT_WR)`.
pub(crate) fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: a plain syscall on an fd number.
    if unsafe { libc::shutdown(fd, libc::SHUT_WR) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The `OSError` Python's `socket` module raises for this failure:
/// `OSError(errno, strerror)`, which Python maps to its subclass
/// (`ConnectionResetError`, `BrokenPipeError`, ...).
pub(crate) fn os_error(py: Python<'_>, err: io::Error) -> PyErr {
    let Some(code) = err.raw_os_error() else {
        return err.into();
    };
    // SAFETY: errno is thread-local; PyErr_SetFromErrno reads it and sets
    // the exception, which is fetched at once.
    unsafe {
        *libc::__errno_location() = code;
        ffi::PyErr_SetFromErrno(ffi::PyExc_OSError);
    }
    PyErr::fetch(py)
}
