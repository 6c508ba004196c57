//! The loop's readiness poller: the OS backend that `sys::poll` chose
//! (epoll on Linux), behind the `sys::poll::Selector` contract — level-
//! triggered interest per fd, a bounded wait, and a waker any thread may
//! call. `event_loop/` (and the transports, for the interest bits) use
//! this module and never name a backend.
//!
//! The tests below check the contract with real fds (pipes, an eventfd),
//! so a new backend gets them for free.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::sys::poll::{DefaultSelector, Selector};
pub use crate::sys::poll::{Ready, READABLE, WRITABLE};

/// The backend's event record: the scratch buffer `wait` fills. (On
/// Linux, epoll's `struct epoll_event`.)
pub type RawEvent = <DefaultSelector as Selector>::Event;

/// The loop's poller. Each method is the `Selector` method of the same name
/// (see its contract in `sys::poll`).
pub struct Poller(DefaultSelector);

impl Poller {
    #[inline]
    pub fn new() -> io::Result<Poller> {
        DefaultSelector::new().map(Poller)
    }

    /// Set the interest of `fd` to `mask` (READABLE|WRITABLE), registering,
    /// modifying or removing it as needed. `was` is the mask we last set.
    #[inline]
    pub fn set_interest(&self, fd: RawFd, was: u32, mask: u32) -> io::Result<()> {
        self.0.set_interest(fd, was, mask)
    }

    /// Wait for readiness. `timeout` None blocks until an event or a wake-up.
    /// Returns Err(Interrupted) on EINTR so the caller can run signal handlers.
    #[inline]
    pub fn wait(
        &self,
        events: &mut Vec<RawEvent>,
        timeout: Option<Duration>,
        out: &mut Vec<Ready>,
    ) -> io::Result<()> {
        self.0.wait(events, timeout, out)
    }

    /// Wake a thread blocked in `wait`. Safe from any thread; a no-op once
    /// the poller is closed.
    #[inline]
    pub fn wake(&self) {
        self.0.wake()
    }

    /// Release the kernel objects. Idempotent (and done on drop).
    #[inline]
    pub fn close(&self) {
        self.0.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fd;
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::time::Instant;

    /// A pipe whose ends close on drop.
    struct Pipe {
        r: RawFd,
        w: RawFd,
        fds: (OwnedFd, Option<OwnedFd>),
    }

    impl Pipe {
        fn new() -> Pipe {
            let (r, w) = fd::pipe().unwrap();
            Pipe {
                r: r.as_raw_fd(),
                w: w.as_raw_fd(),
                fds: (r, Some(w)),
            }
        }

        fn put(&self, data: &[u8]) {
            assert_eq!(fd::write_from(self.w, data).unwrap(), Some(data.len()));
        }

        fn drain(&self) {
            let mut buf = [0u8; 64];
            while fd::read_into(self.r, &mut buf)
                .unwrap()
                .is_some_and(|n| n > 0)
            {}
        }

        fn close_write(&mut self) {
            self.fds.1 = None;
        }
    }

    /// One `wait`: the reports, and how long it took.
    fn wait(p: &Poller, timeout: Option<Duration>) -> (Vec<Ready>, Duration) {
        let mut events = Vec::with_capacity(8);
        let mut out = Vec::new();
        let t0 = Instant::now();
        p.wait(&mut events, timeout, &mut out).unwrap();
        (out, t0.elapsed())
    }

    fn mask_of(out: &[Ready], fd: RawFd) -> Option<u32> {
        out.iter().find(|r| r.fd == fd).map(|r| r.mask)
    }

    #[test]
    fn wake_interrupts_a_blocking_wait() {
        let p = Poller::new().unwrap();
        p.wake();
        let (out, _) = wait(&p, Some(Duration::from_secs(5)));
        assert!(out.is_empty(), "the waker is not reported as an fd");
    }

    #[test]
    fn wake_from_another_thread_ends_an_unbounded_wait() {
        let p = std::sync::Arc::new(Poller::new().unwrap());
        let waker = std::sync::Arc::clone(&p);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            waker.wake();
            waker.wake(); // several wakes: one wake-up, no error
        });
        let (out, _) = wait(&p, None);
        t.join().unwrap();
        assert!(out.is_empty());
        // The second wake may land after that wait drained the first one (a
        // loaded machine can pause the thread between the two): one more
        // poll takes it. Then the waker is drained: the next wait times out.
        wait(&p, Some(Duration::ZERO));
        let (out, took) = wait(&p, Some(Duration::from_millis(5)));
        assert!(out.is_empty());
        assert!(took >= Duration::from_millis(5), "{took:?}");
    }

    #[test]
    fn wait_with_timeout_returns_nothing_after_the_timeout() {
        let p = Poller::new().unwrap();
        let pipe = Pipe::new();
        p.set_interest(pipe.r, 0, READABLE).unwrap();
        let (out, took) = wait(&p, Some(Duration::from_millis(30)));
        assert!(out.is_empty());
        assert!(took >= Duration::from_millis(30), "{took:?}");
        // Rounded up, not down: 1 µs waits (at least) a millisecond.
        let (_, took) = wait(&p, Some(Duration::from_micros(1)));
        assert!(took >= Duration::from_millis(1), "{took:?}");
        // Zero: no wait.
        let (out, _) = wait(&p, Some(Duration::ZERO));
        assert!(out.is_empty());
    }

    #[test]
    fn reports_level_triggered_readability_until_unregistered() {
        let p = Poller::new().unwrap();
        let pipe = Pipe::new();
        p.set_interest(pipe.r, 0, READABLE).unwrap();
        pipe.put(b"x");
        for _ in 0..2 {
            // Not drained, so reported again: level-triggered.
            let (out, _) = wait(&p, Some(Duration::from_millis(100)));
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].fd, pipe.r);
            assert_eq!(out[0].mask, READABLE);
        }
        pipe.drain();
        let (out, _) = wait(&p, Some(Duration::from_millis(1)));
        assert!(out.is_empty(), "drained: no longer ready");
        pipe.put(b"y");
        p.set_interest(pipe.r, READABLE, 0).unwrap();
        let (out, _) = wait(&p, Some(Duration::from_millis(1)));
        assert!(out.is_empty(), "unregistered: not reported");
        // Unregistering again (or a closed fd) is not an error.
        p.set_interest(pipe.r, 0, 0).unwrap();
    }

    #[test]
    fn modify_switches_the_direction_watched() {
        let p = Poller::new().unwrap();
        let pipe = Pipe::new();
        // The write end of an empty pipe is writable, never readable.
        p.set_interest(pipe.w, 0, READABLE).unwrap();
        let (out, _) = wait(&p, Some(Duration::from_millis(1)));
        assert!(out.is_empty());
        p.set_interest(pipe.w, READABLE, WRITABLE).unwrap();
        let (out, _) = wait(&p, Some(Duration::from_millis(100)));
        assert_eq!(mask_of(&out, pipe.w), Some(WRITABLE));
        p.set_interest(pipe.w, WRITABLE, READABLE | WRITABLE)
            .unwrap();
        let (out, _) = wait(&p, Some(Duration::from_millis(100)));
        assert_eq!(mask_of(&out, pipe.w), Some(WRITABLE));
    }

    #[test]
    fn stale_bookkeeping_is_forgiven() {
        let p = Poller::new().unwrap();
        let pipe = Pipe::new();
        // "Modify" an fd the kernel never saw (its number was reused).
        p.set_interest(pipe.r, READABLE, READABLE).unwrap();
        // "Add" an fd already registered.
        p.set_interest(pipe.r, 0, READABLE).unwrap();
        pipe.put(b"x");
        let (out, _) = wait(&p, Some(Duration::from_millis(100)));
        assert_eq!(mask_of(&out, pipe.r), Some(READABLE));
    }

    #[test]
    fn hang_up_wakes_both_directions() {
        let p = Poller::new().unwrap();
        let mut pipe = Pipe::new();
        p.set_interest(pipe.r, 0, READABLE).unwrap();
        pipe.close_write();
        let (out, _) = wait(&p, Some(Duration::from_millis(100)));
        assert_eq!(mask_of(&out, pipe.r), Some(READABLE | WRITABLE));
    }

    #[test]
    fn an_eventfd_is_an_fd_like_any_other() {
        let p = Poller::new().unwrap();
        let owned = fd::eventfd().unwrap();
        let efd = owned.as_raw_fd();
        p.set_interest(efd, 0, READABLE).unwrap();
        let (out, _) = wait(&p, Some(Duration::from_millis(1)));
        assert!(out.is_empty());
        fd::write_from(efd, &1u64.to_ne_bytes()).unwrap();
        let (out, _) = wait(&p, Some(Duration::from_millis(100)));
        assert_eq!(mask_of(&out, efd), Some(READABLE));
    }

    #[test]
    fn a_full_event_buffer_grows_and_nothing_is_lost() {
        let p = Poller::new().unwrap();
        let pipes: Vec<Pipe> = (0..6).map(|_| Pipe::new()).collect();
        for pipe in &pipes {
            p.set_interest(pipe.r, 0, READABLE).unwrap();
            pipe.put(b"x");
        }
        let mut events = Vec::with_capacity(4);
        let mut out = Vec::new();
        p.wait(&mut events, Some(Duration::ZERO), &mut out).unwrap();
        assert_eq!(out.len(), 4);
        assert!(events.capacity() >= 8, "grown after a full wait");
        out.clear();
        p.wait(&mut events, Some(Duration::ZERO), &mut out).unwrap();
        assert_eq!(out.len(), 6, "level-triggered: all six, now they fit");
    }

    #[test]
    fn close_is_idempotent_and_wake_after_close_is_a_no_op() {
        let p = Poller::new().unwrap();
        p.close();
        p.close();
        p.wake();
    }
}
