//! `Handle` and `TimerHandle`: a scheduled callback, its arguments and the
//! `contextvars.Context` it runs in. Running a handle is the hottest path of
//! the loop, so it enters the context and calls the callback through the C
//! API directly (no bound `Context.run` method, no argument re-packing).
//!
//! What a handle must not do: touch loop state. Error reporting and repr go
//! through small Python helpers (`ferroloop._glue`) so that messages match
//! the running CPython's asyncio to the letter.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;
use pyo3::{PyTraverseError, PyVisit};

use crate::stats::LoopStats;

/// Python helpers from `ferroloop._glue`, looked up once per interpreter.
pub(crate) fn glue<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    static GLUE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let module = GLUE.get_or_try_init(py, || py.import("ferroloop._glue").map(Bound::unbind))?;
    module.bind(py).getattr(name)
}

/// The callable and its arguments: released on `cancel()`, as asyncio
/// does, so that a cancelled timer left in the heap keeps nothing alive.
struct Call {
    func: Py<PyAny>,
    args: Py<PyTuple>,
}

#[pyclass(subclass, frozen, weakref, module = "ferroloop._ferroloop")]
pub struct Handle {
    call: Mutex<Option<Call>>,
    context: Py<PyAny>,
    /// A weak reference to the loop: queued handles must not keep their
    /// loop alive (see `gc_untrack`), and only error paths and `_loop` use it.
    loop_ref: Py<PyAny>,
    cancelled: AtomicBool,
    /// True while a TimerHandle sits in its loop's timer heap.
    scheduled: AtomicBool,
    /// `context` is the copy made for this handle (and hidden from the GC
    /// while queued), not the caller's own Context.
    owns_context: bool,
    /// Where the handle was created; recorded in debug mode only.
    source_traceback: Option<Py<PyAny>>,
}

impl Handle {
    pub(crate) fn new(
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        context: Py<PyAny>,
        loop_ref: Py<PyAny>,
        owns_context: bool,
        source_traceback: Option<Py<PyAny>>,
    ) -> Handle {
        Handle {
            call: Mutex::new(Some(Call {
                func: callback,
                args,
            })),
            context,
            loop_ref,
            cancelled: AtomicBool::new(false),
            scheduled: AtomicBool::new(false),
            owns_context,
            source_traceback,
        }
    }

    #[inline]
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Mark cancelled and release the callable; true if this call did it.
    pub(crate) fn set_cancelled(&self) -> bool {
        if self.cancelled.swap(true, Ordering::Relaxed) {
            return false;
        }
        let released = self.call.lock().take();
        // Dropped here, unlocked: releasing may run arbitrary __del__ code.
        drop(released);
        true
    }

    pub(crate) fn set_scheduled(&self, scheduled: bool) {
        self.scheduled.store(scheduled, Ordering::Relaxed);
    }

    /// Show the GC what this handle refers to (its own `__traverse__`, and
    /// the loop's on behalf of handles that only the loop holds).
    pub(crate) fn visit_contents(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        // Never block in the GC; a handle being run or cancelled right now
        // in another thread is skipped this time.
        if let Some(call) = self.call.try_lock() {
            if let Some(c) = call.as_ref() {
                visit.call(&c.func)?;
                visit.call(&c.args)?;
            }
        }
        visit.call(&self.context)?;
        visit.call(&self.loop_ref)?;
        visit.call(&self.source_traceback)
    }

    /// Is `callback` (by identity) what this handle calls?
    pub(crate) fn callback_is(&self, callback: &Bound<'_, PyAny>) -> bool {
        self.call
            .lock()
            .as_ref()
            .is_some_and(|c| c.func.as_ptr() == callback.as_ptr())
    }

    fn call_parts(&self, py: Python<'_>) -> Option<(Py<PyAny>, Py<PyTuple>)> {
        let call = self.call.lock();
        call.as_ref()
            .map(|c| (c.func.clone_ref(py), c.args.clone_ref(py)))
    }

    /// Run the callback in its context. An ordinary exception goes to the
    /// loop's exception handler, as asyncio's `Handle._run` does; only
    /// `SystemExit` and `KeyboardInterrupt` come back as `Err`.
    #[inline]
    pub(crate) fn run(slf: &Bound<'_, Handle>) -> PyResult<()> {
        let Some((func, args)) = slf.get().call_parts(slf.py()) else {
            return Ok(()); // cancelled
        };
        Self::run_parts(slf, &func, &args)
    }

    /// `run`, also returning the callable it ran (which the handle itself
    /// may have let go of meanwhile: a reader removing itself): for the
    /// slow-callback report. (A `Bound`: dropping it skips the check a
    /// `Py` makes of whether the GIL is held.)
    #[inline]
    pub(crate) fn run_keep<'py>(
        slf: &Bound<'py, Handle>,
    ) -> (PyResult<()>, Option<Bound<'py, PyAny>>) {
        let py = slf.py();
        let Some((func, args)) = slf.get().call_parts(py) else {
            return (Ok(()), None); // cancelled
        };
        let (func, args) = (func.into_bound(py), args.into_bound(py));
        (
            Self::run_parts(slf, func.as_unbound(), args.as_unbound()),
            Some(func),
        )
    }

    #[inline(always)]
    fn run_parts(slf: &Bound<'_, Handle>, func: &Py<PyAny>, args: &Py<PyTuple>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let ctx = this.context.as_ptr();
        // SAFETY: all pointers are live references owned by `this`; the
        // context is exited on every path after a successful enter.
        let result = unsafe {
            if ffi::PyContext_Enter(ctx) < 0 {
                std::ptr::null_mut()
            } else {
                let res = call_with_tuple(func.as_ptr(), args.as_ptr());
                if ffi::PyContext_Exit(ctx) < 0 && !res.is_null() {
                    ffi::Py_DECREF(res);
                    std::ptr::null_mut()
                } else {
                    res
                }
            }
        };
        if !result.is_null() {
            // SAFETY: a new reference returned by the call.
            unsafe { ffi::Py_DECREF(result) };
            return Ok(());
        }
        let err = PyErr::fetch(py);
        if err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py) {
            return Err(err);
        }
        let loop_ = this.loop_ref.bind(py).call0()?;
        glue(py, "report_callback_error")?.call1((loop_, slf, err.into_value(py)))?;
        Ok(())
    }
}

/// `func(*args)`. Up to `VECTORCALL_MAX` arguments go by vectorcall from
/// a stack array: `PyObject_Call` would unpack the tuple into one on the
/// heap path (the C Task's wake-ups and done callbacks take one argument).
///
/// # Safety
/// `func` and `args` (a tuple) are live; the thread is attached.
#[inline(always)]
unsafe fn call_with_tuple(
    func: *mut ffi::PyObject,
    args: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    const VECTORCALL_MAX: usize = 4;
    let n = ffi::PyTuple_GET_SIZE(args) as usize;
    if n == 0 {
        return ffi::PyObject_CallNoArgs(func);
    }
    if n > VECTORCALL_MAX {
        return ffi::PyObject_Call(func, args, std::ptr::null_mut());
    }
    // Slot 0 is free for the callee (PY_VECTORCALL_ARGUMENTS_OFFSET); the
    // tuple keeps the items alive for the call.
    let mut stack = [std::ptr::null_mut(); VECTORCALL_MAX + 1];
    for (i, slot) in stack[1..=n].iter_mut().enumerate() {
        *slot = ffi::PyTuple_GET_ITEM(args, i as ffi::Py_ssize_t);
    }
    ffi::PyObject_Vectorcall(
        func,
        stack.as_ptr().add(1),
        n | ffi::PY_VECTORCALL_ARGUMENTS_OFFSET,
        std::ptr::null_mut(),
    )
}

/// Handles queued inside the loop are hidden from the cyclic GC: every
/// collection would otherwise traverse each pending handle (measured: a
/// third of `call_soon`'s cost with many callbacks queued). The loop's own
/// `__traverse__` visits the contents of the handles only it holds, so
/// cycles through them are still found.
pub(crate) fn gc_untrack<T>(obj: &Py<T>) {
    // SAFETY: `obj` is a live GC object; untracking an object is always
    // allowed and PyO3's dealloc untracks again harmlessly.
    unsafe { ffi::PyObject_GC_UnTrack(obj.as_ptr().cast()) };
}

impl Drop for Handle {
    /// The Context copy must be tracked again before it is released: its
    /// dealloc unlinks it from the GC's list unconditionally.
    fn drop(&mut self) {
        if self.owns_context {
            gc_track(self.context.as_ptr());
        }
    }
}

/// Hand `obj` back to the cyclic GC if it is untracked.
fn gc_track(obj: *mut ffi::PyObject) {
    // SAFETY: `obj` is live; tracking is checked first, as tracking an
    // object twice is a fatal error.
    unsafe {
        if ffi::PyObject_GC_IsTracked(obj) == 0 {
            ffi::PyObject_GC_Track(obj.cast());
        }
    }
}

/// The loop lets go of a handle. If it outlives the loop's reference, it
/// and its Context copy go back to the GC now; if not, its `Drop` re-tracks
/// the copy as it dies.
#[inline]
pub(crate) fn release(handle: Py<Handle>) {
    let ptr = handle.as_ptr();
    // SAFETY: reading the refcount of a live object.
    if unsafe { ffi::Py_REFCNT(ptr) } > 1 {
        gc_track(ptr);
        if handle.get().owns_context {
            gc_track(handle.get().context.as_ptr());
        }
    }
    drop(handle);
}

#[pymethods]
impl Handle {
    /// Handles are part of reference cycles (an object that keeps the
    /// TimerHandle of its own bound method), so the GC must see inside them.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.visit_contents(&visit)
    }

    fn cancel(&self) {
        self.set_cancelled();
    }

    fn cancelled(&self) -> bool {
        self.is_cancelled()
    }

    fn get_context(&self, py: Python<'_>) -> Py<PyAny> {
        self.context.clone_ref(py)
    }

    /// asyncio's private entry point, used by some libraries and tests.
    fn _run(slf: &Bound<'_, Handle>) -> PyResult<()> {
        Handle::run(slf)
    }

    /// None once cancelled, as in asyncio.
    #[getter]
    fn _callback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.call_parts(py).map(|(func, _)| func)
    }

    #[getter]
    fn _args(&self, py: Python<'_>) -> Option<Py<PyTuple>> {
        self.call_parts(py).map(|(_, args)| args)
    }

    #[getter]
    fn _context(&self, py: Python<'_>) -> Py<PyAny> {
        self.context.clone_ref(py)
    }

    #[getter]
    fn _loop<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.loop_ref.bind(py).call0()
    }

    #[getter]
    fn _cancelled(&self) -> bool {
        self.is_cancelled()
    }

    /// Where the handle was created (debug mode), else None, as in asyncio.
    #[getter]
    fn _source_traceback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.source_traceback.as_ref().map(|t| t.clone_ref(py))
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        glue(slf.py(), "handle_repr")?.call1((slf,))?.extract()
    }
}

/// A handle scheduled for a point in time (`loop.time()` clock).
#[pyclass(extends = Handle, frozen, module = "ferroloop._ferroloop")]
pub struct TimerHandle {
    /// The deadline as the caller gave it (int or float).
    when: Py<PyAny>,
    /// The loop's statistics, and its count of cancelled handles still in
    /// its heap.
    stats: Arc<LoopStats>,
}

impl TimerHandle {
    pub(crate) fn new(when: Py<PyAny>, stats: Arc<LoopStats>) -> TimerHandle {
        TimerHandle { when, stats }
    }
}

#[pymethods]
impl TimerHandle {
    /// asyncio's TimerHandle hashes by deadline.
    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        self.when.bind(py).hash()
    }

    /// asyncio's TimerHandle ordering: by deadline; equal when deadline,
    /// callback, arguments and cancelled state are equal.
    fn __richcmp__(
        slf: &Bound<'_, Self>,
        other: &Bound<'_, PyAny>,
        op: pyo3::basic::CompareOp,
    ) -> PyResult<Py<PyAny>> {
        use pyo3::basic::CompareOp::*;
        let py = slf.py();
        let Ok(other) = other.cast::<TimerHandle>() else {
            return Ok(py.NotImplemented());
        };
        let (a, b) = (slf.get().when.bind(py), other.get().when.bind(py));
        let equal = || -> PyResult<bool> {
            let (x, y) = (slf.as_super(), other.as_super());
            Ok(a.eq(b)?
                && x.getattr("_callback")?.eq(y.getattr("_callback")?)?
                && x.getattr("_args")?.eq(y.getattr("_args")?)?
                && x.get().is_cancelled() == y.get().is_cancelled())
        };
        let result = match op {
            Lt => a.lt(b)?,
            Le => a.lt(b)? || equal()?,
            Gt => b.lt(a)?,
            Ge => b.lt(a)? || equal()?,
            Eq => equal()?,
            Ne => !equal()?,
        };
        Ok(pyo3::types::PyBool::new(py, result)
            .to_owned()
            .into_any()
            .unbind())
    }

    fn cancel(slf: &Bound<'_, Self>) {
        let base = slf.as_super().get();
        if base.set_cancelled() && base.scheduled.load(Ordering::Relaxed) {
            let stats = &slf.get().stats;
            stats.heap_cancelled.fetch_add(1, Ordering::Relaxed);
            stats.timers_cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn when(&self, py: Python<'_>) -> Py<PyAny> {
        self.when.clone_ref(py)
    }

    #[getter]
    fn _when(&self, py: Python<'_>) -> Py<PyAny> {
        self.when.clone_ref(py)
    }

    #[getter]
    fn _scheduled(slf: &Bound<'_, Self>) -> bool {
        slf.as_super().get().scheduled.load(Ordering::Relaxed)
    }
}
