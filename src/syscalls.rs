//! Transitional: the old home of the socket syscalls, errno → `OSError`,
//! the receive buffer and malloc tuning, which now live in `crate::sys`
//! (syscalls, no Python), `crate::py_io` (OSError, `bytes`) and
//! `crate::recv_buf`. Only re-exports remain here, for the files being
//! restructured in parallel.
//!
//! transitional: callers in stream.rs/pipe.rs/event_loop.rs move to sys::
//! in phase 2 (then this file is deleted): stream.rs and pipe.rs import
//! the names below from here, write_buffer.rs imports `IOV_MAX`, and
//! event_loop.rs calls `syscalls::tune_malloc_for_large_messages`.

pub(crate) use crate::py_io::{os_error, recv_new_bytes};
pub(crate) use crate::recv_buf::{with_recv_buf, DIRECT_READ_MIN, SHARED_RECV_BUF};
pub(crate) use crate::sys::malloc::tune_malloc_for_large_messages;
pub(crate) use crate::sys::net::{
    bytes_queued, recv_into_ptr, send_from_ptr, send_vectored, shutdown_write,
};
pub(crate) use crate::sys::{retry_syscall, IOV_MAX};
