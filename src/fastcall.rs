//! Hand-written vectorcall entry points for `call_soon` and
//! `call_soon_threadsafe`, the methods CPython's C Task and Future call for
//! every step and every done callback. PyO3's generic argument parsing
//! (keyword matching, `*args` collection, trampoline bookkeeping) costs
//! about 300 instructions per call there — a fifth of what the loop itself
//! adds to a task step — so these two parse their arguments directly.
//!
//! Installed on `CoreLoop` as ordinary method descriptors at import time
//! (`install`); behaviour and errors are those of the PyO3 signature
//! `(callback, *args, context=None)`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyTuple, PyType};

use crate::event_loop::CoreLoop;

/// The first `"context"` keyword name seen that is not the interned one:
/// the C Task's and Future's (see `schedule`).
static TASK_CONTEXT_NAME: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Parse `(callback, *args, context=None)` from a vectorcall and schedule.
///
/// # Safety
/// `args` holds `nargs` positional then `len(kwnames)` keyword values, all
/// borrowed and live for the call; `slf` is a `CoreLoop` (the method
/// descriptor checks the type before calling us).
unsafe fn schedule(
    py: Python<'_>,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
    threadsafe: bool,
) -> PyResult<Py<PyAny>> {
    let method = if threadsafe {
        "call_soon_threadsafe"
    } else {
        "call_soon"
    };
    let nargs = ffi::PyVectorcall_NARGS(nargsf as usize);
    let mut context = None;
    if !kwnames.is_null() {
        let context_name = pyo3::intern!(py, "context").as_ptr();
        let task_context_name = TASK_CONTEXT_NAME
            .get(py)
            .map_or(ptr::null_mut(), Py::as_ptr);
        for i in 0..ffi::PyTuple_GET_SIZE(kwnames) {
            let name = ffi::PyTuple_GET_ITEM(kwnames, i);
            // Python call sites pass interned names (the same object as
            // ours); the C Task and Future pass a string of their own, the
            // same one every time: after one comparison, it is known by its
            // address (kept alive here, so that no other object takes it).
            let is_context = name == context_name
                || name == task_context_name
                || (ffi::PyUnicode_Check(name) != 0
                    && ffi::PyUnicode_CompareWithASCIIString(name, c"context".as_ptr()) == 0
                    && {
                        let _ =
                            TASK_CONTEXT_NAME.set(py, Bound::from_borrowed_ptr(py, name).unbind());
                        true
                    });
            if !is_context {
                let name = Bound::from_borrowed_ptr(py, name);
                return Err(PyTypeError::new_err(format!(
                    "{method}() got an unexpected keyword argument '{name}'"
                )));
            }
            context = Some(Bound::from_borrowed_ptr(py, *args.offset(nargs + i)));
        }
    }
    if nargs < 1 {
        return Err(PyTypeError::new_err(format!(
            "{method}() missing 1 required positional argument: 'callback'"
        )));
    }
    let callback = Bound::from_borrowed_ptr(py, *args);
    let rest = std::slice::from_raw_parts(args.add(1), (nargs - 1) as usize);
    let cb_args = if rest.is_empty() {
        PyTuple::empty(py)
    } else {
        // Filled directly: PyO3's iterator-based constructor checks the
        // iterator's length as it goes, on every done callback.
        let tuple =
            Bound::from_owned_ptr_or_err(py, ffi::PyTuple_New(rest.len() as ffi::Py_ssize_t))?;
        for (i, &item) in rest.iter().enumerate() {
            ffi::Py_INCREF(item);
            ffi::PyTuple_SET_ITEM(tuple.as_ptr(), i as ffi::Py_ssize_t, item);
        }
        tuple.cast_into_unchecked::<PyTuple>()
    };
    let slf = Bound::from_borrowed_ptr(py, slf).cast_into_unchecked::<CoreLoop>();
    CoreLoop::schedule_soon(&slf, callback, cb_args, context, threadsafe).map(Py::into_any)
}

/// The C-level shell: no panic may unwind into CPython.
unsafe fn entry(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
    threadsafe: bool,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls methods with the thread attached.
    let py = Python::assume_attached();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        schedule(py, slf, args, nargsf, kwnames, threadsafe)
    }));
    let err = match outcome {
        Ok(Ok(handle)) => return handle.into_ptr(),
        Ok(Err(err)) => err,
        Err(_) => PanicException::new_err("ferroloop panicked while scheduling a callback"),
    };
    err.restore(py);
    std::ptr::null_mut()
}

unsafe extern "C" fn call_soon(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    entry(slf, args, nargsf, kwnames, false)
}

unsafe extern "C" fn call_soon_threadsafe(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    entry(slf, args, nargsf, kwnames, true)
}

/// Put the two methods on `CoreLoop`.
pub fn install(ty: &Bound<'_, PyType>) -> PyResult<()> {
    let methods: [(&'static std::ffi::CStr, ffi::PyCFunctionFastWithKeywords, &'static std::ffi::CStr); 2] = [
        (
            c"call_soon",
            call_soon,
            c"call_soon($self, callback, *args, context=None)\n--\n\nRun callback(*args) on the next iteration, in context (default: a copy of the current one).",
        ),
        (
            c"call_soon_threadsafe",
            call_soon_threadsafe,
            c"call_soon_threadsafe($self, callback, *args, context=None)\n--\n\nLike call_soon(), callable from any thread; wakes the loop.",
        ),
    ];
    let py = ty.py();
    for (name, func, doc) in methods {
        // The definition must outlive the type: leaked once per process.
        let def: &'static mut ffi::PyMethodDef = Box::leak(Box::new(ffi::PyMethodDef {
            ml_name: name.as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunctionFastWithKeywords: func,
            },
            ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
            ml_doc: doc.as_ptr(),
        }));
        // SAFETY: `ty` is a live type object and `def` is 'static.
        let descr = unsafe {
            Bound::from_owned_ptr_or_err(py, ffi::PyDescr_NewMethod(ty.as_ptr().cast(), def))?
        };
        ty.setattr(name.to_str().expect("ASCII"), descr)?;
    }
    Ok(())
}
