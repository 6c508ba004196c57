//! ferroloop's native core, exposed to Python as `ferroloop._ferroloop`.
//!
//! Layers (see ARCHITECTURE.md), each using only those below it:
//! - `sys`: everything that talks to the OS (epoll, sockets, the clock,
//!   malloc), no Python;
//! - `poller` (the loop's view of `sys::poll`), `recv_buf` (the per-thread
//!   receive buffer), `py_io` (errno → `OSError`, received `bytes`);
//! - `stats` (counters, slow-callback watch), then `handles` (callbacks run
//!   in their contexts), then `timers` (the heap of handles);
//! - `event_loop` ties them into `CoreLoop`, the base class of the
//!   Python-level `ferroloop.Loop`; the transports and `sock_api` sit on it.
//!
//! No module outside `sys` calls `libc`.

pub mod datagram;
pub mod event_loop;
pub mod fastcall;
pub mod handles;
pub mod pipe;
pub mod poller;
pub mod py_io;
pub mod recv_buf;
pub mod sock_api;
pub mod stats;
pub mod stream;
pub mod sys;
pub mod timers;
pub mod transport_common;
pub mod write_buffer;
pub mod write_side;

use pyo3::prelude::*;

#[pymodule(gil_used = false)]
fn _ferroloop(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<event_loop::CoreLoop>()?;
    fastcall::install(&m.py().get_type::<event_loop::CoreLoop>())?;
    m.add_class::<handles::Handle>()?;
    m.add_class::<handles::TimerHandle>()?;
    m.add_class::<stats::SlowWatcher>()?;
    m.add_class::<sock_api::SockWaiter>()?;
    m.add_class::<stream::StreamCore>()?;
    m.add_class::<pipe::ReadPipeCore>()?;
    m.add_class::<pipe::WritePipeCore>()?;
    m.add_class::<datagram::DatagramCore>()?;
    m.add_function(wrap_pyfunction!(sock_api::sock_recv, m)?)?;
    m.add_function(wrap_pyfunction!(sock_api::sock_recv_into, m)?)?;
    m.add_function(wrap_pyfunction!(sock_api::sock_sendall, m)?)?;
    Ok(())
}
