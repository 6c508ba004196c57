//! asyncio Futures and Tasks made from Rust, without a Python frame:
//! `create_future`, `create_task`'s common path, and the Futures the
//! transports and `sock_*` coroutines wait on (`new_future`): CPython's C
//! `Future` and `Task` unless replaced, looked up in asyncio on every call
//! as asyncio does.

use std::sync::atomic::Ordering;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple};

use super::CoreLoop;

/// `asyncio.<module>.<name>`, looked up per call as asyncio itself does:
/// `asyncio.tasks.Task` / `asyncio.futures.Future` may be replaced (tests
/// and instrumentation do).
#[inline]
fn asyncio_attr<'py>(
    py: Python<'py>,
    module: &str,
    name: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    static TASKS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    static FUTURES: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let (cell, path) = match module {
        "tasks" => (&TASKS, "asyncio.tasks"),
        _ => (&FUTURES, "asyncio.futures"),
    };
    cell.get_or_try_init(py, || py.import(path).map(Bound::unbind))?
        .bind(py)
        .getattr(name)
}

/// `asyncio.Future(loop=loop)`.
pub(crate) fn new_future<'py>(loop_: &Bound<'py, CoreLoop>) -> PyResult<Bound<'py, PyAny>> {
    static KWNAMES: PyOnceLock<Py<PyTuple>> = PyOnceLock::new();
    let py = loop_.py();
    let cls = asyncio_attr(py, "futures", pyo3::intern!(py, "Future"))?;
    let kwnames = KWNAMES.get_or_try_init(py, || PyTuple::new(py, ["loop"]).map(Bound::unbind))?;
    let argv = [loop_.as_ptr()];
    // SAFETY: `argv` holds a borrowed live reference for the call's duration.
    unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyObject_Vectorcall(cls.as_ptr(), argv.as_ptr(), 0, kwnames.as_ptr()),
        )
    }
}

impl CoreLoop {
    /// `asyncio.Task(coro, loop=self, name=name, context=context)` straight
    /// from Rust; a task factory, debug mode or other keyword arguments
    /// (3.14's `eager_start=`, ...) take asyncio's own Python path
    /// (`_create_task_py`), which knows each version's details and errors.
    #[inline]
    pub(super) fn new_task<'py>(
        slf: &Bound<'py, Self>,
        coro: &Bound<'py, PyAny>,
        name: Option<&Bound<'py, PyAny>>,
        context: Option<&Bound<'py, PyAny>>,
        task_kwargs: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed()?;
        let name = name.filter(|n| !n.is_none());
        let context = context.filter(|c| !c.is_none());
        if task_kwargs.is_some()
            || this.task_factory.lock().is_some()
            || this.debug.load(Ordering::Relaxed)
        {
            let kwargs = task_kwargs.unwrap_or_else(|| PyDict::new(py));
            if let Some(n) = name {
                kwargs.set_item("name", n)?;
            }
            if let Some(c) = context {
                kwargs.set_item("context", c)?;
            }
            return slf.call_method("_create_task_py", (coro,), Some(&kwargs));
        }
        static KWNAMES: PyOnceLock<[Py<PyTuple>; 4]> = PyOnceLock::new();
        let task_cls = asyncio_attr(py, "tasks", pyo3::intern!(py, "Task"))?;
        let kwnames = KWNAMES.get_or_try_init(py, || -> PyResult<_> {
            Ok([
                PyTuple::new(py, ["loop"])?.unbind(),
                PyTuple::new(py, ["loop", "name"])?.unbind(),
                PyTuple::new(py, ["loop", "context"])?.unbind(),
                PyTuple::new(py, ["loop", "name", "context"])?.unbind(),
            ])
        })?;
        let mut argv = [
            coro.as_ptr(),
            slf.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        ];
        for (slot, value) in argv[2..].iter_mut().zip(name.into_iter().chain(context)) {
            *slot = value.as_ptr();
        }
        let which = usize::from(name.is_some()) + 2 * usize::from(context.is_some());
        // SAFETY: `argv` holds borrowed live references for the call's
        // duration; one positional argument, the rest named by `kwnames`.
        unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                ffi::PyObject_Vectorcall(
                    task_cls.as_ptr(),
                    argv.as_ptr(),
                    1,
                    kwnames[which].as_ptr(),
                ),
            )
        }
    }
}
