//! Plain file-descriptor I/O (`read`/`write`/`writev`), as the pipe
//! transports do it, and the `iovec` of a byte slice. Same conventions as
//! `net`: "would block" is `Ok(None)`, `EINTR` is retried.

use std::io;
use std::os::fd::RawFd;
#[cfg(test)]
use std::os::fd::{FromRawFd, OwnedFd};

#[cfg(test)]
use super::cvt;
use super::{retry_syscall, IoVec, IOV_MAX};

/// A non-blocking, close-on-exec pipe: (read end, write end). For tests:
/// the transports get their pipes from Python.
#[cfg(test)]
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array, ours from then on.
    unsafe {
        cvt(libc::pipe2(
            fds.as_mut_ptr(),
            libc::O_NONBLOCK | libc::O_CLOEXEC,
        ))?;
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

/// A non-blocking, close-on-exec eventfd (for tests: the poller makes its
/// own waker).
#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: a plain syscall; the fd is ours from then on.
    unsafe {
        let fd = cvt(libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))?;
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// `read` into `buf`.
#[inline]
pub fn read_into(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: `buf` is writable for its length.
    retry_syscall(|| unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })
}

/// `write` of `data`.
#[inline]
pub fn write_from(fd: RawFd, data: &[u8]) -> io::Result<Option<usize>> {
    // SAFETY: `data` is readable for its length.
    retry_syscall(|| unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) })
}

/// `writev` of several buffers at once (at most `IOV_MAX` are used).
pub fn write_vectored(fd: RawFd, bufs: &[IoVec]) -> io::Result<Option<usize>> {
    let count = bufs.len().min(IOV_MAX) as libc::c_int;
    // SAFETY: every iovec points into a buffer the caller holds.
    retry_syscall(|| unsafe { libc::writev(fd, bufs.as_ptr(), count) })
}

/// The `iovec` of `s`: valid while `s` is.
#[inline]
pub fn io_vec(s: &[u8]) -> IoVec {
    IoVec {
        iov_base: s.as_ptr().cast_mut().cast(),
        iov_len: s.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_round_trip_and_would_block() {
        use std::os::fd::AsRawFd;
        let (r, w) = pipe().unwrap();
        let mut buf = [0u8; 16];
        let rd = r.as_raw_fd();
        assert_eq!(read_into(rd, &mut buf).unwrap(), None, "empty: would block");
        assert_eq!(write_from(w.as_raw_fd(), b"ab").unwrap(), Some(2));
        let iov = [io_vec(b"cd"), io_vec(b""), io_vec(b"efg")];
        assert_eq!(write_vectored(w.as_raw_fd(), &iov).unwrap(), Some(5));
        assert_eq!(read_into(rd, &mut buf).unwrap(), Some(7));
        assert_eq!(&buf[..7], b"abcdefg");
        drop(w);
        assert_eq!(read_into(rd, &mut buf).unwrap(), Some(0), "EOF");
    }
}
