//! What the stream and pipe transports' cores (src/stream.rs, src/pipe.rs)
//! share:
//! - write flow control: the high/low marks, the "protocol is paused" flag
//!   and asyncio's pause/resume decisions (`transports._FlowControlMixin`),
//!   the `pause_writing()` / `resume_writing()` calls themselves;
//! - the error rules of a protocol callback: which exceptions escape
//!   (`must_propagate`), the report of one that raised
//!   (`loop.call_exception_handler`);
//! - their calls into the Python transport: `_fatal_error` and scheduling
//!   `_call_connection_lost`;
//! - the count of writes after the connection was lost, and asyncio's
//!   warning past its threshold.
//!
//! A core says where its marks and buffer are and who its protocol and
//! transport are (`FlowControlled`); the decisions are taken here, under
//! the core's own lock, in the same single acquisition as before.

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use crate::event_loop::CoreLoop;

/// asyncio's default high-water mark (`_FlowControlMixin`).
pub(crate) const DEFAULT_HIGH_WATER: usize = 64 * 1024;

/// asyncio's `constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES`.
const LOG_THRESHOLD_FOR_CONNLOST_WRITES: usize = 5;

/// Is `err` one that asyncio lets escape from a transport callback?
pub(crate) fn must_propagate(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py)
}

/// The write-buffer marks and whether `pause_writing()` is in effect.
pub(crate) struct FlowControl {
    high_water: usize,
    low_water: usize,
    /// `pause_writing()` was called on the protocol.
    paused: bool,
}

impl Default for FlowControl {
    fn default() -> Self {
        FlowControl {
            high_water: DEFAULT_HIGH_WATER,
            low_water: DEFAULT_HIGH_WATER / 4,
            paused: false,
        }
    }
}

impl FlowControl {
    /// The buffer holds `size` bytes: true if the protocol is to be paused
    /// now (above the high mark, not paused yet); it counts as paused from
    /// here on.
    #[inline]
    pub(crate) fn should_pause(&mut self, size: usize) -> bool {
        let pause = size > self.high_water && !self.paused;
        self.paused |= pause;
        pause
    }

    /// The buffer holds `size` bytes: true if the protocol is to be resumed
    /// now (paused, and at or below the low mark).
    #[inline]
    pub(crate) fn should_resume(&mut self, size: usize) -> bool {
        let resume = self.paused && size <= self.low_water;
        self.paused &= !resume;
        resume
    }

    /// The marks, already checked and floored by the Python transport
    /// (`ferroloop._transports.WriteBufferLimits`, asyncio's rule).
    pub(crate) fn set_limits(&mut self, high: usize, low: usize) {
        self.high_water = high;
        self.low_water = low;
    }

    /// `(low, high)`, as `get_write_buffer_limits()`.
    pub(crate) fn limits(&self) -> (usize, usize) {
        (self.low_water, self.high_water)
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused
    }
}

/// A transport core with a write buffer under flow control.
pub(crate) trait FlowControlled {
    fn core_loop(&self) -> &Py<CoreLoop>;

    /// Under the core's lock: `f(marks, bytes buffered)`.
    fn with_flow<R>(&self, f: impl FnOnce(&mut FlowControl, usize) -> R) -> R;

    /// The protocol and the transport (None once either is gone).
    fn flow_parties(&self, py: Python<'_>) -> Option<(Py<PyAny>, Py<PyAny>)>;

    /// `pause_writing()` if the buffer is above the high mark.
    fn maybe_pause_protocol(&self, py: Python<'_>) -> PyResult<()> {
        if self.with_flow(|flow, size| flow.should_pause(size)) {
            self.notify_flow(py, intern!(py, "pause_writing"))
        } else {
            Ok(())
        }
    }

    /// `resume_writing()` if paused and the buffer is at or below the low mark.
    fn maybe_resume_protocol(&self, py: Python<'_>) -> PyResult<()> {
        if self.with_flow(|flow, size| flow.should_resume(size)) {
            self.notify_flow(py, intern!(py, "resume_writing"))
        } else {
            Ok(())
        }
    }

    /// New marks, then `pause_writing()` if the buffer is now above them.
    fn set_limits(&self, py: Python<'_>, high: usize, low: usize) -> PyResult<()> {
        self.with_flow(|flow, _| flow.set_limits(high, low));
        self.maybe_pause_protocol(py)
    }

    /// `protocol.<method>()`; a failure goes to the exception handler, as
    /// in asyncio's `_FlowControlMixin`.
    fn notify_flow(&self, py: Python<'_>, method: &Bound<'_, PyString>) -> PyResult<()> {
        let Some((protocol, transport)) = self.flow_parties(py) else {
            return Ok(());
        };
        let Err(err) = protocol.bind(py).call_method0(method) else {
            return Ok(());
        };
        let message = format!("protocol.{}() failed", method.to_str()?);
        report_callback_failure(
            self.core_loop().bind(py),
            err,
            &message,
            transport,
            protocol,
        )
    }
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

/// A write after the connection was lost: count it in `conn_lost`; true
/// once there were more than asyncio's threshold (then, with the core's
/// lock released, `warn_lost_write`).
pub(crate) fn count_lost_write(conn_lost: &mut usize) -> bool {
    *conn_lost += 1;
    *conn_lost > LOG_THRESHOLD_FOR_CONNLOST_WRITES
}

/// asyncio's `logger.warning(message)` about writes after the connection
/// was lost (its socket and pipe transports word it apart).
pub(crate) fn warn_lost_write(py: Python<'_>, message: &str) -> PyResult<()> {
    py.import("asyncio.log")?
        .getattr("logger")?
        .call_method1("warning", (message,))?;
    Ok(())
}
