//! The socket syscalls the native transports and `sock_*` calls make.
//! "Would block" is `Ok(None)`, `EINTR` is retried, any other failure is
//! the `io::Error` of its errno (which `crate::py_io::os_error` turns into
//! the `OSError` Python's `socket` module would raise).

use std::io;
use std::os::fd::RawFd;

use super::sockaddr::{SockAddr, SockAddrStorage};
use super::{retry_syscall, IoVec, IOV_MAX};

/// `recv` of up to `len` bytes into `ptr`.
#[inline]
pub fn recv_into_ptr(fd: RawFd, ptr: *mut u8, len: usize) -> io::Result<Option<usize>> {
    // SAFETY: the caller guarantees `ptr` is writable for `len` bytes.
    retry_syscall(|| unsafe { libc::recv(fd, ptr.cast(), len, 0) })
}

/// `send` without SIGPIPE: a closed peer is an `EPIPE` error, as in Python.
#[inline]
pub fn send_from_ptr(fd: RawFd, ptr: *const u8, len: usize) -> io::Result<Option<usize>> {
    // SAFETY: the caller guarantees `ptr` is readable for `len` bytes.
    retry_syscall(|| unsafe { libc::send(fd, ptr.cast(), len, libc::MSG_NOSIGNAL) })
}

/// `sendmsg` of several buffers at once (at most `IOV_MAX` are used),
/// without SIGPIPE.
pub fn send_vectored(fd: RawFd, bufs: &[IoVec]) -> io::Result<Option<usize>> {
    // SAFETY: an all-zero msghdr is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = bufs.as_ptr().cast_mut();
    msg.msg_iovlen = bufs.len().min(IOV_MAX) as _;
    // SAFETY: every iovec points into a buffer the caller holds.
    retry_syscall(|| unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) })
}

/// `shutdown(fd, SHUT_WR)`.
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: a plain syscall on an fd number.
    if unsafe { libc::shutdown(fd, libc::SHUT_WR) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Bytes queued in a socket's (or pipe's) receive buffer: `FIONREAD`
/// (0 if the kernel does not say).
pub fn bytes_queued(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } < 0 {
        return 0;
    }
    n.max(0) as usize
}

/// One datagram out: `send` to the connected peer (`dest` None) or
/// `sendto` `dest`. (Flags 0, as Python's `socket.send`/`sendto`.)
pub fn send_datagram(fd: RawFd, data: &[u8], dest: Option<&SockAddr>) -> io::Result<Option<usize>> {
    let (ptr, len) = (data.as_ptr().cast(), data.len());
    // SAFETY: `data` and the sockaddr are readable for the sizes given.
    retry_syscall(|| unsafe {
        match dest {
            None => libc::send(fd, ptr, len, 0),
            Some(sa) => {
                let (addr, addr_len) = sa.as_raw();
                libc::sendto(fd, ptr, len, 0, addr, addr_len)
            }
        }
    })
}

/// One datagram in: `recvfrom` into `buf`, the sender into `from`.
pub fn recv_datagram(
    fd: RawFd,
    buf: &mut [u8],
    from: &mut SockAddrStorage,
) -> io::Result<Option<usize>> {
    let (addr, mut addr_len) = from.as_raw_mut();
    // SAFETY: `buf` and `addr` are writable for the sizes given.
    retry_syscall(|| unsafe {
        libc::recvfrom(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            addr,
            &mut addr_len,
        )
    })
}
