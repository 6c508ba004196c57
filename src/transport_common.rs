//! What the stream and pipe transports' cores (src/stream.rs, src/pipe.rs)
//! share besides their write side (src/write_side.rs):
//! - the error rules of a protocol callback: which exceptions escape
//!   (`must_propagate`), the report of one that raised
//!   (`loop.call_exception_handler`);
//! - their calls into the Python transport: `_fatal_error` and scheduling
//!   `_call_connection_lost`;
//! - reading for `data_received`: one read into the reusable per-thread
//!   buffer, a `bytes` of the exact size (`read_to_bytes`).

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use crate::event_loop::CoreLoop;
use crate::recv_buf::{with_recv_buf, SHARED_RECV_BUF};

/// Is `err` one that asyncio lets escape from a transport callback?
pub(crate) fn must_propagate(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py)
}

/// A protocol callback raised: `loop.call_exception_handler({message,
/// exception, transport, protocol})`; `SystemExit` and
/// `KeyboardInterrupt` propagate instead.
pub(crate) fn report_callback_failure(
    loop_: &Bound<'_, CoreLoop>,
    err: PyErr,
    message: &str,
    transport: Py<PyAny>,
    protocol: Py<PyAny>,
) -> PyResult<()> {
    let py = loop_.py();
    if must_propagate(py, &err) {
        return Err(err);
    }
    let context = PyDict::new(py);
    context.set_item("message", message)?;
    context.set_item("exception", err.into_value(py))?;
    context.set_item("transport", transport)?;
    context.set_item("protocol", protocol)?;
    loop_.call_method1(intern!(py, "call_exception_handler"), (context,))?;
    Ok(())
}

/// `transport._fatal_error(exc, message)` (the Python side reports, by
/// its version's rules, and closes); `SystemExit` and `KeyboardInterrupt`
/// propagate instead.
pub(crate) fn fatal_error(
    py: Python<'_>,
    transport: Option<Py<PyAny>>,
    err: PyErr,
    message: &str,
) -> PyResult<()> {
    if must_propagate(py, &err) {
        return Err(err);
    }
    let Some(transport) = transport else {
        return Ok(());
    };
    transport.call_method1(
        py,
        intern!(py, "_fatal_error"),
        (err.into_value(py), message),
    )?;
    Ok(())
}

/// `loop.call_soon(callback, *args, context=context)`.
pub(crate) fn call_soon(
    loop_: &Bound<'_, CoreLoop>,
    callback: Bound<'_, PyAny>,
    args: Bound<'_, PyTuple>,
    context: Option<&Py<PyAny>>,
) -> PyResult<()> {
    let context = context.map(|c| c.bind(loop_.py()).clone());
    CoreLoop::schedule_soon(loop_, callback, args, context, false)?;
    Ok(())
}

/// `loop.call_soon(transport._call_connection_lost, exc, context=context)`
/// (nothing if the transport is gone).
pub(crate) fn schedule_connection_lost(
    loop_: &Bound<'_, CoreLoop>,
    transport: Option<Py<PyAny>>,
    exc: Bound<'_, PyAny>,
    context: Option<&Py<PyAny>>,
) -> PyResult<()> {
    let py = loop_.py();
    let Some(transport) = transport else {
        return Ok(());
    };
    let callback = transport
        .bind(py)
        .getattr(intern!(py, "_call_connection_lost"))?;
    call_soon(loop_, callback, PyTuple::new(py, [exc])?, context)
}

/// One `read` (a `recv`, a pipe's `read`) of at most `max` bytes into this
/// thread's reusable buffer (or, for a larger `max`, a buffer of its own),
/// as a `bytes` of the exact size: what the stream and pipe transports
/// hand `data_received`. Empty at end of file; Ok(None): would block.
pub(crate) fn read_to_bytes<'py>(
    py: Python<'py>,
    max: usize,
    read: impl FnOnce(&mut [u8]) -> std::io::Result<Option<usize>>,
) -> std::io::Result<Option<Bound<'py, PyBytes>>> {
    let take = |buf: &mut [u8]| read(buf).map(|got| got.map(|n| PyBytes::new(py, &buf[..n])));
    if max <= SHARED_RECV_BUF {
        with_recv_buf(|buf| take(&mut buf[..max]))
    } else {
        take(&mut vec![0u8; max])
    }
}
