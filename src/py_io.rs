//! Where the OS's answers become Python objects: an `io::Error` from
//! `crate::sys` becomes the `OSError` (subclass) Python's own `socket`
//! module would raise, and a `recv` can land straight in a new `bytes`.
//! (The syscalls themselves are in `crate::sys`, which has no Python.)

use std::io;
use std::os::fd::RawFd;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::sys::net::recv_into_ptr;

extern "C" {
    // In every CPython's C API (not in PyO3's bindings): shrink a `bytes`
    // object nothing else references yet.
    fn _PyBytes_Resize(bytes: *mut *mut ffi::PyObject, newsize: ffi::Py_ssize_t) -> i32;
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
        crate::sys::set_errno(code);
        ffi::PyErr_SetFromErrno(ffi::PyExc_OSError);
    }
    PyErr::fetch(py)
}
