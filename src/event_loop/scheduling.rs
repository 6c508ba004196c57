//! Scheduling: turning `call_soon`, `call_soon_threadsafe`, `call_later`
//! and `call_at` into handles on the ready queue or the timer heap —
//! asyncio's argument checks, the `Handle` / `TimerHandle` itself (its
//! Context copy, its weak reference to the loop, debug mode's source
//! traceback) and the GC bookkeeping of a handle the loop holds. The fd
//! watchers in `io_watch.rs` make their handles here too.
//!
//! `schedule_soon` is the hottest path in the crate (every task step and
//! every done callback goes through it): keep it to the checks, the
//! handle (and its Context copy) and one lock.

use std::sync::atomic::Ordering;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::CoreLoop;
use crate::handles::{gc_untrack, Handle, TimerHandle};

/// `contextvars.copy_context()`: every handle given no context gets one.
#[inline]
fn copy_context(py: Python<'_>) -> PyResult<Py<PyAny>> {
    // SAFETY: returns a new reference or NULL with an exception set.
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent()).map(Bound::unbind) }
}

impl CoreLoop {
    #[inline]
    pub(super) fn check_closed(&self) -> PyResult<()> {
        if self.closed.load(Ordering::Relaxed) {
            Err(PyRuntimeError::new_err("Event loop is closed"))
        } else {
            Ok(())
        }
    }

    /// asyncio's checks: callbacks are always checked cheaply (a coroutine
    /// object is not callable); debug mode adds the thread check and the
    /// coroutine-function check, exactly as asyncio does.
    fn check_call(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        method: &str,
    ) -> PyResult<()> {
        let this = slf.get();
        this.check_closed()?;
        if this.debug.load(Ordering::Relaxed) {
            if method != "call_soon_threadsafe" {
                slf.call_method0("_check_thread")?;
            }
            slf.call_method1("_check_callback", (callback, method))?;
        } else if !callback.is_callable() {
            slf.call_method1("_check_callback", (callback, method))?;
            return Err(PyTypeError::new_err(format!(
                "a callable object was expected by {method}()"
            )));
        }
        Ok(())
    }

    fn new_handle(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Handle> {
        let py = slf.py();
        let source_traceback = if slf.get().debug.load(Ordering::Relaxed) {
            Some(
                crate::handles::glue(py, "extract_source_traceback")?
                    .call0()?
                    .unbind(),
            )
        } else {
            None
        };
        let loop_ref = Self::weak_self(slf)?;
        // Last, with nothing fallible after it: an untracked Context must
        // reach a Handle (whose Drop tracks it again) before it can be freed.
        let (context, owns_context) = match context {
            Some(c) if !c.is_none() => (c.unbind(), false),
            _ => {
                let copy = copy_context(py)?;
                // Only this handle holds the copy: hidden from the GC with it.
                gc_untrack(&copy);
                (copy, true)
            }
        };
        Ok(Handle::new(
            callback.unbind(),
            args.unbind(),
            context,
            loop_ref,
            owns_context,
            source_traceback,
        ))
    }

    /// `weakref.ref(loop)`, made once: what handles and waiters hold.
    pub(crate) fn weak_self(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let weak = slf.get().self_ref.get_or_try_init(py, || {
            // SAFETY: returns a new reference or NULL with an exception set.
            unsafe {
                Bound::from_owned_ptr_or_err(
                    py,
                    ffi::PyWeakref_NewRef(slf.as_ptr(), std::ptr::null_mut()),
                )
                .map(Bound::unbind)
            }
        })?;
        Ok(weak.clone_ref(py))
    }

    /// A new handle object, hidden from the GC while the loop holds it.
    pub(super) fn new_queued_handle(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        let handle = Py::new(slf.py(), Self::new_handle(slf, callback, args, context)?)?;
        gc_untrack(&handle);
        Ok(handle)
    }

    #[inline]
    fn push_ready(&self, handle: Py<Handle>) {
        self.state.lock().ready.push_back(handle);
    }

    /// `call_soon` / `call_soon_threadsafe` (their Python entry points are
    /// in `fastcall.rs`).
    pub(crate) fn schedule_soon(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
        threadsafe: bool,
    ) -> PyResult<Py<Handle>> {
        let method = if threadsafe {
            "call_soon_threadsafe"
        } else {
            "call_soon"
        };
        Self::check_call(slf, &callback, method)?;
        let py = slf.py();
        let handle = Self::new_queued_handle(slf, callback, args, context)?;
        let this = slf.get();
        this.push_ready(handle.clone_ref(py));
        if threadsafe {
            this.poller.wake();
        }
        Ok(handle)
    }

    /// `when_obj` is what `TimerHandle.when()` returns: the caller's own
    /// number, as in asyncio (`call_at(100, ...)`'s `when()` is `100`).
    pub(super) fn schedule_at(
        slf: &Bound<'_, Self>,
        when: f64,
        when_obj: Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        if when.is_nan() {
            return Err(PyValueError::new_err("the time of a timer cannot be NaN"));
        }
        Self::check_call(slf, &callback, "call_at")?;
        let py = slf.py();
        let this = slf.get();
        let base = Self::new_handle(slf, callback, args, context)?;
        let init = PyClassInitializer::from(base)
            .add_subclass(TimerHandle::new(when_obj.unbind(), this.stats.clone()));
        let timer = Py::new(py, init)?;
        gc_untrack(&timer);
        let base = timer.bind(py).as_super().get();
        base.set_scheduled(true);
        let as_handle: Py<Handle> = timer.bind(py).as_super().clone().unbind();
        this.state.lock().timers.push(when, as_handle);
        this.stats.timers_scheduled.fetch_add(1, Ordering::Relaxed);
        Ok(timer)
    }
}
