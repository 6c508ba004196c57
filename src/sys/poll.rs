//! The readiness-poller contract every OS backend implements, and the
//! backend chosen for this OS (`DefaultSelector`). The loop uses it through
//! `crate::poller::Poller`; nothing outside `sys/` names a backend.
//!
//! Adding a backend (kqueue, say) is one new file in `sys/` implementing
//! [`Selector`] and one `cfg` line below choosing it.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Interest / readiness bit: the fd is readable (or hung up, or failed).
pub const READABLE: u32 = 1;
/// Interest / readiness bit: the fd is writable (or hung up, or failed).
pub const WRITABLE: u32 = 2;

/// One readiness report: which fd, and READABLE/WRITABLE bits.
#[derive(Clone, Copy, Debug)]
pub struct Ready {
    pub fd: RawFd,
    pub mask: u32,
}

/// A level-triggered readiness poller with a cross-thread waker.
///
/// The contract (what `event_loop/` relies on; the tests in
/// `crate::poller` check it against the backend in use):
///
/// - **Level-triggered.** asyncio's `add_reader` means "call me while the
///   fd is readable": an fd that is still ready is reported by every
///   `wait` until its interest is removed (edge-triggered modes break this).
/// - **`set_interest(fd, was, mask)`** makes `mask` (READABLE|WRITABLE) the
///   fd's interest; `was` is the mask the caller set last (0: not
///   registered). `mask == 0` unregisters, and never fails (the fd may be
///   closed already). The caller's `was` can be wrong when an fd was closed
///   and its number reused: the backend then retries with the other
///   operation (add ↔ modify) instead of failing.
/// - **`wait(events, timeout, out)`** blocks until at least one registered
///   fd is ready, `wake` is called, or `timeout` passes (`None`: no limit;
///   a timeout is rounded *up* to the backend's resolution, so a timer is
///   never polled for too early and spun on). It appends one `Ready` per
///   ready fd to `out`; errors and hang-ups set both bits (as
///   `selectors.EpollSelector` does: the caller masks with its interest).
///   The waker itself is never reported. `events` is the caller's scratch
///   buffer: its capacity is the most events one call returns, and the
///   backend may grow it when a call fills it. A signal interrupting the
///   wait is `Err(ErrorKind::Interrupted)`, so the caller can run Python's
///   signal handlers.
/// - **`wake()`** may be called from any thread, any number of times,
///   before or during a `wait`, and after `close` (then a no-op). One or
///   more wakes make the next `wait` (or the current one) return.
/// - **`close()`** releases the kernel objects; idempotent, and also done
///   on drop.
///
/// `Send + Sync`: the loop thread waits while other threads wake.
pub trait Selector: Send + Sync + Sized {
    /// The kernel's event record, as `wait` receives it.
    type Event;

    fn new() -> io::Result<Self>;
    fn set_interest(&self, fd: RawFd, was: u32, mask: u32) -> io::Result<()>;
    fn wait(
        &self,
        events: &mut Vec<Self::Event>,
        timeout: Option<Duration>,
        out: &mut Vec<Ready>,
    ) -> io::Result<()>;
    fn wake(&self);
    fn close(&self);
}

/// The backend for this OS.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub type DefaultSelector = super::epoll::Epoll;
