//! Watching fds: `_add_reader` / `_add_writer` / `_remove_reader` /
//! `_remove_writer` (asyncio's selector-loop hooks) and what the native
//! transports and `sock_*` waiters call directly (`watch`, `unwatch`,
//! `remove_fd_callback_if`). Each change goes through the `FdTable`
//! (`fd_table.rs`) under the state lock; a handle it replaces or removes
//! is cancelled, as asyncio's `_remove_reader` does, and released after
//! the lock.

use std::os::fd::RawFd;
use std::sync::atomic::Ordering;

use pyo3::exceptions::{PyAttributeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyTuple};

use super::CoreLoop;
use crate::handles::{release, Handle};

/// `fd` may be an int or an object with `fileno()`, as in `selectors`.
pub(super) fn fileobj_to_fd(obj: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    let fd: i64 = if obj.is_instance_of::<PyInt>() {
        obj.extract()?
    } else {
        match obj.call_method0("fileno") {
            Ok(v) => v
                .extract()
                .map_err(|_| PyValueError::new_err(format!("Invalid file object: {obj}")))?,
            Err(e) if e.is_instance_of::<PyAttributeError>(obj.py()) => {
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

impl CoreLoop {
    /// Make `handle` the reader or writer (`dir`) of `fd`, or remove it
    /// (`None`); the handle it replaces is cancelled and released once the
    /// lock is let go of. True if there was one.
    fn replace_fd_handle(&self, fd: RawFd, dir: u32, handle: Option<Py<Handle>>) -> PyResult<bool> {
        let old = self.state.lock().fds.set(&self.poller, fd, dir, handle)?;
        let Some(old) = old else {
            return Ok(false);
        };
        old.get().set_cancelled();
        release(old);
        Ok(true)
    }

    /// `_add_reader` / `_add_writer`: `fd` an int or an object with
    /// `fileno()`.
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
        this.replace_fd_handle(fd, dir, Some(handle.clone_ref(py)))?;
        Ok(handle)
    }

    /// `_remove_reader` / `_remove_writer`.
    pub(super) fn remove_fd_callback(&self, dir: u32, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
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
        self.replace_fd_handle(fd, dir, None)
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
            let current = st.fds.callback(fd, dir);
            current.is_some_and(|h| h.get().callback_is(callback))
        };
        if matches && !self.closed.load(Ordering::Relaxed) {
            self.unwatch(fd, dir)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::CStr;

    use pyo3::exceptions::PyOSError;
    use pyo3::types::PyDict;

    use super::super::test_support::with_python;
    use super::*;

    /// `fileobj_to_fd` of what `expr` evaluates to, with `Fileno(x)` (whose
    /// `fileno()` returns `x`) and `Closed()` (whose `fileno()` raises
    /// OSError) in scope.
    fn fd_of(py: Python<'_>, expr: &CStr) -> PyResult<RawFd> {
        let globals = PyDict::new(py);
        py.run(
            c"class Fileno:
    def __init__(self, n): self.n = n
    def fileno(self): return self.n
class Closed:
    def fileno(self): raise OSError('closed')
",
            Some(&globals),
            None,
        )?;
        fileobj_to_fd(&py.eval(expr, Some(&globals), None)?)
    }

    /// The message of the ValueError that `r` must be.
    fn value_error(py: Python<'_>, r: PyResult<RawFd>) -> String {
        let e = r.unwrap_err();
        assert!(e.is_instance_of::<PyValueError>(py), "{e}");
        e.value(py).to_string()
    }

    #[test]
    fn an_fd_is_an_int_or_what_fileno_returns() {
        with_python(|py| {
            assert_eq!(fd_of(py, c"7").unwrap(), 7);
            assert_eq!(fd_of(py, c"Fileno(9)").unwrap(), 9);
            assert_eq!(fd_of(py, c"2**31 - 1").unwrap(), i32::MAX);
        });
    }

    #[test]
    fn a_bad_fd_is_a_value_error_in_selectors_words() {
        with_python(|py| {
            let msg = value_error(py, fd_of(py, c"-1"));
            assert_eq!(msg, "Invalid file descriptor: -1");
            let msg = value_error(py, fd_of(py, c"2**31"));
            assert_eq!(msg, "Invalid file descriptor: 2147483648");
            let msg = value_error(py, fd_of(py, c"Fileno(-3)"));
            assert_eq!(msg, "Invalid file descriptor: -3");
            let msg = value_error(py, fd_of(py, c"'x'"));
            assert_eq!(msg, "Invalid file object: 'x'");
            let msg = value_error(py, fd_of(py, c"Fileno('x')"));
            assert!(msg.starts_with("Invalid file object: <"), "{msg}");
        });
    }

    #[test]
    fn an_error_raised_by_fileno_comes_through() {
        with_python(|py| {
            let e = fd_of(py, c"Closed()").unwrap_err();
            assert!(e.is_instance_of::<PyOSError>(py), "{e}");
        });
    }
}
