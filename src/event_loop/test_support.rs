//! What the unit tests of this module's parts share: handles to put in the
//! loop's structures without a running loop.

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::handles::Handle;

/// Run `test` with an attached interpreter (`cargo test` embeds one).
pub(super) fn with_python(test: impl FnOnce(Python<'_>)) {
    Python::initialize();
    Python::attach(test);
}

/// A handle whose callback is `None`, with no loop: enough for the
/// structures, which never run it.
pub(super) fn handle(py: Python<'_>) -> Py<Handle> {
    let h = Handle::new(
        py.None(),
        PyTuple::empty(py).unbind(),
        py.None(),
        py.None(),
        false,
        None,
    );
    Py::new(py, h).unwrap()
}

/// The same handle object?
pub(super) fn same(a: &Py<Handle>, b: &Py<Handle>) -> bool {
    a.as_ptr() == b.as_ptr()
}
