//! The fence around the operating system: everything in ferroloop that
//! makes a system call or reads a CPU counter, and nothing else. Like
//! mio's `sys/`, the rest of the crate asks this module and never `libc`.
//!
//! What is behind the fence:
//! - `poll`: the readiness-poller contract (`Selector`) and the backend
//!   chosen for this OS (`DefaultSelector`); `epoll` is Linux's (epoll set
//!   plus eventfd waker). A kqueue backend would be one new file here and
//!   one `cfg` line in `poll`;
//! - `net`: the socket syscalls the transports make (`recv`, `send`,
//!   `sendmsg`, `shutdown`, `FIONREAD`, datagram `sendto`/`recvfrom`);
//! - `fd`: plain fd I/O (`read`, `write`, `writev`) and `iovec`s;
//! - `sockaddr`: socket addresses between Rust's `std::net` types and the
//!   kernel's `sockaddr_in`/`sockaddr_in6`;
//! - `clock`: the loop's clock (`CLOCK_MONOTONIC`) and the cycle counter
//!   that times callbacks for slow-callback reports;
//! - `malloc`: glibc allocator tuning.
//!
//! The rules: no PyO3 here (no `Python`, no `PyErr`, no Python objects).
//! Functions return `std::io::Result` or raw values; "would block" is
//! `Ok(None)` and `EINTR` is retried (`retry_syscall`). Turning an
//! `io::Error` into Python's `OSError`, or received bytes into a `bytes`,
//! happens outside, in `crate::py_io`.

pub mod clock;
#[cfg(any(target_os = "linux", target_os = "android"))]
pub mod epoll;
pub mod fd;
pub mod malloc;
pub mod net;
pub mod poll;
pub mod sockaddr;

use std::io;

/// Linux's IOV_MAX: the most buffers one `writev`/`sendmsg` takes.
pub const IOV_MAX: usize = 1024;

/// A buffer for `writev`/`sendmsg`: the kernel's `struct iovec`.
pub type IoVec = libc::iovec;

/// Run a syscall returning a count (or -1 and errno): `EINTR` is retried,
/// "would block" (`EAGAIN`/`EWOULDBLOCK`) is `Ok(None)`.
#[inline]
pub fn retry_syscall(mut f: impl FnMut() -> isize) -> io::Result<Option<usize>> {
    loop {
        let r = f();
        if r >= 0 {
            return Ok(Some(r as usize));
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(err),
        }
    }
}

/// A libc return value: negative is the thread's errno as an `io::Error`.
#[inline]
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Set this thread's `errno` (for C APIs that read it, such as CPython's
/// `PyErr_SetFromErrno`).
#[inline]
pub fn set_errno(code: i32) {
    // SAFETY: errno is a thread-local int.
    unsafe { *libc::__errno_location() = code };
}
