//! Linux's `Selector`: a level-triggered epoll set plus an eventfd waker.
//! Owns only file-descriptor bookkeeping in the kernel; which Python
//! callback belongs to which fd lives in `event_loop/fd_table.rs`.
//!
//! Level-triggered on purpose: asyncio's `add_reader` contract is "call me
//! while the fd is readable", so a callback that does not drain the fd must
//! be called again on the next iteration (mio's edge-triggered mode breaks
//! that contract).

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use super::cvt;
use super::poll::{Ready, Selector, READABLE, WRITABLE};

/// The token that marks the waker's eventfd in epoll's event data.
const WAKER_TOKEN: u64 = u64::MAX;

/// The fds are atomics so that `close()` (loop thread) and `wake()` (any
/// thread, through call_soon_threadsafe) never see a half-closed poller.
pub struct Epoll {
    epfd: AtomicI32,
    waker: AtomicI32,
}

#[inline]
fn epoll_bits(mask: u32) -> u32 {
    let mut bits = 0;
    if mask & READABLE != 0 {
        bits |= libc::EPOLLIN as u32;
    }
    if mask & WRITABLE != 0 {
        bits |= libc::EPOLLOUT as u32;
    }
    bits
}

impl Epoll {
    #[inline]
    fn epfd(&self) -> RawFd {
        self.epfd.load(Ordering::Acquire)
    }

    fn drain_waker(&self) {
        let mut buf: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64; non-blocking fd.
        unsafe {
            libc::read(
                self.waker.load(Ordering::Acquire),
                &mut buf as *mut u64 as *mut libc::c_void,
                8,
            );
        }
    }
}

impl Selector for Epoll {
    type Event = libc::epoll_event;

    fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscalls; the fds are owned by the Epoll from here on.
        unsafe {
            let epfd = cvt(libc::epoll_create1(libc::EPOLL_CLOEXEC))?;
            let waker = match cvt(libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK)) {
                Ok(fd) => fd,
                Err(e) => {
                    libc::close(epfd);
                    return Err(e);
                }
            };
            let poller = Epoll {
                epfd: AtomicI32::new(epfd),
                waker: AtomicI32::new(waker),
            };
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: WAKER_TOKEN,
            };
            cvt(libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, waker, &mut ev))?;
            Ok(poller)
        }
    }

    fn set_interest(&self, fd: RawFd, was: u32, mask: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: epoll_bits(mask),
            u64: fd as u64,
        };
        let epfd = self.epfd();
        // SAFETY: epoll_ctl only reads `ev`.
        unsafe {
            if mask == 0 {
                // The fd may already be closed (epoll dropped it then): ignore.
                libc::epoll_ctl(epfd, libc::EPOLL_CTL_DEL, fd, &mut ev);
                return Ok(());
            }
            let (first, second) = if was == 0 {
                (libc::EPOLL_CTL_ADD, libc::EPOLL_CTL_MOD)
            } else {
                (libc::EPOLL_CTL_MOD, libc::EPOLL_CTL_ADD)
            };
            if libc::epoll_ctl(epfd, first, fd, &mut ev) == 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            // Our bookkeeping can disagree with the kernel when an fd was
            // closed and its number reused: retry with the other operation.
            match err.raw_os_error() {
                Some(libc::EEXIST) | Some(libc::ENOENT) => {
                    cvt(libc::epoll_ctl(epfd, second, fd, &mut ev)).map(|_| ())
                }
                _ => Err(err),
            }
        }
    }

    fn wait(
        &self,
        events: &mut Vec<libc::epoll_event>,
        timeout: Option<Duration>,
        out: &mut Vec<Ready>,
    ) -> io::Result<()> {
        let ms: libc::c_int = match timeout {
            None => -1,
            Some(d) => {
                // Round up, as asyncio's selector does, so a timer is never
                // polled for too early and spun on.
                let ms = d.as_nanos().div_ceil(1_000_000);
                ms.min(i32::MAX as u128) as libc::c_int
            }
        };
        // SAFETY: `events` has capacity for `cap` entries; the kernel writes
        // at most that many and we set the length to what it reports.
        let n = unsafe {
            let cap = events.capacity() as libc::c_int;
            let n = libc::epoll_wait(self.epfd(), events.as_mut_ptr(), cap, ms);
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            events.set_len(n as usize);
            n as usize
        };
        for ev in events.iter() {
            let token = ev.u64;
            let bits = ev.events;
            if token == WAKER_TOKEN {
                self.drain_waker();
                continue;
            }
            // Like selectors.EpollSelector: errors and hang-ups wake both
            // directions; the caller masks with what was asked for.
            let mut mask = 0;
            if bits & !(libc::EPOLLOUT as u32) != 0 {
                mask |= READABLE;
            }
            if bits & !(libc::EPOLLIN as u32) != 0 {
                mask |= WRITABLE;
            }
            out.push(Ready {
                fd: token as RawFd,
                mask,
            });
        }
        if n == events.capacity() {
            events.reserve(n);
        }
        Ok(())
    }

    fn wake(&self) {
        let fd = self.waker.load(Ordering::Acquire);
        if fd < 0 {
            return;
        }
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64. EAGAIN means the counter
        // is already non-zero, i.e. a wake-up is pending: fine.
        unsafe {
            libc::write(fd, &one as *const u64 as *const libc::c_void, 8);
        }
    }

    fn close(&self) {
        for slot in [&self.waker, &self.epfd] {
            let fd = slot.swap(-1, Ordering::AcqRel);
            if fd >= 0 {
                // SAFETY: the swap makes this the only close of `fd`.
                unsafe { libc::close(fd) };
            }
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        self.close();
    }
}
