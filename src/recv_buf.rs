//! The per-thread receive buffer, and the read sizes around it.
//!
//! Reads of up to `SHARED_RECV_BUF` bytes go through one reusable buffer
//! per thread and are copied into a `bytes` of the exact length (a 256 KiB
//! `recv` of a 1 KiB message then costs one small copy, not a 256 KiB
//! allocation). Thread-local, so free-threaded loops share nothing.

use std::cell::RefCell;

/// Reads of up to this size go through the per-thread buffer.
pub(crate) const SHARED_RECV_BUF: usize = 256 * 1024;

/// Reads at least this large skip the shared buffer: the transport asks the
/// kernel how much is queued (`FIONREAD`) and receives straight into a
/// `bytes` of that size. Above this size the copy saved is worth more than
/// the extra syscall; below it copying is cheaper.
pub(crate) const DIRECT_READ_MIN: usize = 32 * 1024;

thread_local! {
    static RECV_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Run `f` with this thread's receive buffer (`SHARED_RECV_BUF` bytes).
pub(crate) fn with_recv_buf<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    RECV_BUF.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < SHARED_RECV_BUF {
            buf.resize(SHARED_RECV_BUF, 0);
        }
        f(&mut buf)
    })
}
