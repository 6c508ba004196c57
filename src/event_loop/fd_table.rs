//! `FdTable`: the loop's fd → reader/writer registrations, and for each fd
//! the interest last given to the poller (so that a change is one
//! `epoll_ctl` of the right kind, and removing the last callback
//! unregisters the fd).
//!
//! It is the part of `LoopState` that `_add_reader` & co. and the
//! transports change (through `CoreLoop::watch` / `unwatch`, `io_watch.rs`)
//! and that the run loop reads to turn the poller's reports into ready
//! handles. It lives under the loop's state lock, so nothing here runs
//! Python code or drops a handle: a handle it lets go of is returned, for
//! the caller to cancel and release once unlocked.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;

use pyo3::prelude::*;

use crate::handles::Handle;
use crate::poller::{Poller, Ready, READABLE, WRITABLE};

/// The callbacks of one watched fd.
#[derive(Default)]
struct FdEntry {
    reader: Option<Py<Handle>>,
    writer: Option<Py<Handle>>,
    /// The interest last given to the poller.
    mask: u32,
}

impl FdEntry {
    /// The reader (`dir` = READABLE) or the writer (WRITABLE).
    #[inline]
    fn callback(&self, dir: u32) -> Option<&Py<Handle>> {
        if dir == READABLE {
            self.reader.as_ref()
        } else {
            self.writer.as_ref()
        }
    }

    #[inline]
    fn callback_mut(&mut self, dir: u32) -> &mut Option<Py<Handle>> {
        if dir == READABLE {
            &mut self.reader
        } else {
            &mut self.writer
        }
    }

    #[inline]
    fn is_empty(&self) -> bool {
        self.reader.is_none() && self.writer.is_none()
    }

    fn handles(&self) -> impl Iterator<Item = &Py<Handle>> {
        self.reader.iter().chain(self.writer.iter())
    }
}

/// Every watched fd's reader and writer, and its poller interest.
#[derive(Default)]
pub(super) struct FdTable {
    /// Indexed by fd: fds are small, dense integers.
    entries: Vec<Option<FdEntry>>,
    /// How many entries are in use.
    watched: usize,
    /// asyncio's self-pipe: watched, but not a program's I/O.
    internal_fd: Option<RawFd>,
}

impl FdTable {
    /// Make `handle` the reader or writer (`dir`) of `fd`, or remove it
    /// (`None`), telling `poller` of the new interest. Returns the handle it
    /// replaces. If the poller refuses the fd (a regular file: EPERM), the
    /// table is left as it was, with no trace of a new fd.
    pub(super) fn set(
        &mut self,
        poller: &Poller,
        fd: RawFd,
        dir: u32,
        handle: Option<Py<Handle>>,
    ) -> io::Result<Option<Py<Handle>>> {
        let idx = fd as usize;
        if self.entries.len() <= idx {
            if handle.is_none() {
                return Ok(None);
            }
            self.entries.resize_with(idx + 1, || None);
        }
        let slot = &mut self.entries[idx];
        if slot.is_none() {
            self.watched += 1;
        }
        let entry = slot.get_or_insert_with(FdEntry::default);
        let was = entry.mask;
        let new_mask = if handle.is_some() {
            was | dir
        } else {
            was & !dir
        };
        if handle.is_some() || new_mask != was {
            if let Err(e) = poller.set_interest(fd, was, new_mask) {
                // Refused (a regular file: EPERM): leave no trace of the fd.
                if entry.is_empty() {
                    *slot = None;
                    self.watched -= 1;
                }
                return Err(e);
            }
        }
        let old = std::mem::replace(entry.callback_mut(dir), handle);
        entry.mask = new_mask;
        if entry.is_empty() {
            *slot = None;
            self.watched -= 1;
        }
        Ok(old)
    }

    /// The reader (`dir` = READABLE) or writer (WRITABLE) of `fd`.
    pub(super) fn callback(&self, fd: RawFd, dir: u32) -> Option<&Py<Handle>> {
        self.entries.get(fd as usize)?.as_ref()?.callback(dir)
    }

    /// The poller interest, reader and writer of `fd`, if it is watched.
    #[allow(clippy::type_complexity)]
    pub(super) fn key(&self, fd: RawFd) -> Option<(u32, Option<&Py<Handle>>, Option<&Py<Handle>>)> {
        let entry = self.entries.get(fd as usize)?.as_ref()?;
        Some((entry.mask, entry.reader.as_ref(), entry.writer.as_ref()))
    }

    /// Every fd with a reader or writer, in increasing order.
    pub(super) fn fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(fd, e)| e.as_ref().map(|_| fd as RawFd))
    }

    /// How many fds have a reader or writer.
    pub(super) fn len(&self) -> usize {
        self.watched
    }

    /// Every handle in the table (the loop's `__traverse__`).
    pub(super) fn handles(&self) -> impl Iterator<Item = &Py<Handle>> {
        self.entries.iter().flatten().flat_map(FdEntry::handles)
    }

    /// Mark `fd` as the loop's own (asyncio's self-pipe).
    pub(super) fn set_internal_fd(&mut self, fd: RawFd) {
        self.internal_fd = Some(fd);
    }

    /// Is any fd watched on behalf of the program (not the loop itself)?
    #[inline]
    pub(super) fn watches_program_fds(&self) -> bool {
        let internal = self
            .internal_fd
            .is_some_and(|fd| matches!(self.entries.get(fd as usize), Some(Some(_))));
        self.watched > usize::from(internal)
    }

    /// Turn poller reports into ready handles (asyncio's `_process_events`):
    /// each reported direction's callback is queued on `ready`, the same
    /// Handle object every time. A cancelled one is not queued but listed in
    /// `stale`, for the caller to unregister. `reports` is left empty.
    #[inline]
    pub(super) fn queue_ready(
        &self,
        py: Python<'_>,
        reports: &mut Vec<Ready>,
        ready: &mut VecDeque<Py<Handle>>,
        stale: &mut Vec<(RawFd, u32)>,
    ) {
        for r in reports.drain(..) {
            let Some(Some(entry)) = self.entries.get(r.fd as usize) else {
                continue;
            };
            for (dir, h) in [(READABLE, &entry.reader), (WRITABLE, &entry.writer)] {
                if r.mask & dir == 0 {
                    continue;
                }
                if let Some(h) = h {
                    if h.get().is_cancelled() {
                        stale.push((r.fd, dir));
                    } else {
                        ready.push_back(h.clone_ref(py));
                    }
                }
            }
        }
    }

    /// Empty the table (loop close) and hand over its handles, readers
    /// before writers fd by fd, for the caller to release unlocked. The
    /// poller is not told: it is being closed. Which fd is the loop's own
    /// is kept.
    pub(super) fn take_handles(&mut self) -> impl Iterator<Item = Py<Handle>> {
        self.watched = 0;
        std::mem::take(&mut self.entries)
            .into_iter()
            .flatten()
            .flat_map(|e| e.reader.into_iter().chain(e.writer))
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use super::super::test_support::{handle, same, with_python};
    use super::*;

    /// A table, its poller and two connected sockets' fds.
    struct Fixture<'py> {
        py: Python<'py>,
        poller: Poller,
        table: FdTable,
        a: RawFd,
        b: RawFd,
    }

    impl Fixture<'_> {
        /// `table.set`, which must succeed.
        fn set(&mut self, fd: RawFd, dir: u32, handle: Option<&Py<Handle>>) -> Option<Py<Handle>> {
            let handle = handle.map(|h| h.clone_ref(self.py));
            self.table.set(&self.poller, fd, dir, handle).unwrap()
        }

        /// What the poller reports for `fd` right now (0: nothing).
        fn polled(&self, fd: RawFd) -> u32 {
            let mut events = Vec::with_capacity(8);
            let mut out = Vec::new();
            self.poller
                .wait(&mut events, Some(Duration::ZERO), &mut out)
                .unwrap();
            out.iter().filter(|r| r.fd == fd).map(|r| r.mask).sum()
        }
    }

    fn with_table(test: impl FnOnce(&mut Fixture<'_>)) {
        with_python(|py| {
            let (a, b) = UnixStream::pair().unwrap();
            test(&mut Fixture {
                py,
                poller: Poller::new().unwrap(),
                table: FdTable::default(),
                a: a.as_raw_fd(),
                b: b.as_raw_fd(),
            });
        });
    }

    fn is(a: Option<&Py<Handle>>, b: &Py<Handle>) -> bool {
        a.is_some_and(|a| same(a, b))
    }

    #[test]
    fn reader_and_writer_set_the_pollers_interest_and_the_last_removal_forgets_the_fd() {
        with_table(|f| {
            let (fd, r, w) = (f.a, handle(f.py), handle(f.py));
            assert!(f.set(fd, READABLE, Some(&r)).is_none());
            assert_eq!(f.table.len(), 1);
            assert_eq!(f.table.key(fd).unwrap().0, READABLE);
            assert_eq!(f.polled(fd), 0, "nothing to read yet");

            assert!(f.set(fd, WRITABLE, Some(&w)).is_none());
            let (mask, reader, writer) = f.table.key(fd).unwrap();
            assert_eq!(mask, READABLE | WRITABLE);
            assert!(is(reader, &r) && is(writer, &w));
            assert_eq!(f.table.len(), 1, "one fd, two directions");
            assert_eq!(f.polled(fd), WRITABLE);

            assert!(is(f.set(fd, READABLE, None).as_ref(), &r));
            assert_eq!(f.table.key(fd).unwrap().0, WRITABLE);
            assert!(f.table.callback(fd, READABLE).is_none());
            assert!(is(f.table.callback(fd, WRITABLE), &w));

            assert!(is(f.set(fd, WRITABLE, None).as_ref(), &w));
            assert!(f.table.key(fd).is_none());
            assert_eq!(f.table.len(), 0);
            assert_eq!(f.table.fds().count(), 0);
            assert_eq!(f.polled(fd), 0, "unregistered from epoll");
        });
    }

    #[test]
    fn a_new_reader_replaces_the_old_one_and_is_returned() {
        with_table(|f| {
            let (first, second) = (handle(f.py), handle(f.py));
            f.set(f.a, READABLE, Some(&first));
            assert!(is(f.set(f.a, READABLE, Some(&second)).as_ref(), &first));
            assert!(is(f.table.callback(f.a, READABLE), &second));
            assert_eq!(f.table.key(f.a).unwrap().0, READABLE);
            assert_eq!(f.table.len(), 1);
        });
    }

    #[test]
    fn removing_what_was_never_added_changes_nothing() {
        with_table(|f| {
            let (low, high) = (f.a.min(f.b), f.a.max(f.b));
            // Beyond the table: it does not grow.
            assert!(f.set(low, WRITABLE, None).is_none());
            assert_eq!(f.table.entries.len(), 0);
            // Inside the table but not watched; a direction not set.
            f.set(high, READABLE, Some(&handle(f.py)));
            assert!(f.set(low, READABLE, None).is_none());
            assert!(f.set(high, WRITABLE, None).is_none());
            assert_eq!(f.table.fds().collect::<Vec<_>>(), [high]);
            assert_eq!(f.table.key(high).unwrap().0, READABLE);
            assert_eq!(f.table.len(), 1);
        });
    }

    #[test]
    fn an_fd_the_poller_refuses_leaves_no_trace() {
        with_table(|f| {
            // epoll refuses regular files (EPERM).
            let file =
                std::fs::File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
            let fd = file.as_raw_fd();
            let h = handle(f.py);
            let err = f.table.set(&f.poller, fd, READABLE, Some(h)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
            assert!(f.table.key(fd).is_none());
            assert_eq!(f.table.len(), 0);
            assert!(!f.table.watches_program_fds());
        });
    }

    #[test]
    fn the_loops_own_fd_is_not_program_io() {
        with_table(|f| {
            let h = handle(f.py);
            f.table.set_internal_fd(f.a);
            assert!(!f.table.watches_program_fds());
            f.set(f.a, READABLE, Some(&h));
            assert!(!f.table.watches_program_fds(), "only the self-pipe");
            f.set(f.b, WRITABLE, Some(&h));
            assert!(f.table.watches_program_fds());
            f.set(f.a, READABLE, None);
            assert!(
                f.table.watches_program_fds(),
                "self-pipe gone, other fd left"
            );
            f.set(f.b, WRITABLE, None);
            assert!(!f.table.watches_program_fds());
        });
    }

    #[test]
    fn reports_queue_the_live_callbacks_and_list_the_cancelled_ones() {
        with_table(|f| {
            let (ra, wa, rb) = (handle(f.py), handle(f.py), handle(f.py));
            f.set(f.a, READABLE, Some(&ra));
            f.set(f.a, WRITABLE, Some(&wa));
            f.set(f.b, READABLE, Some(&rb));
            rb.get().set_cancelled();
            let both = READABLE | WRITABLE;
            let mut reports = vec![
                // An error or hang-up: both directions.
                Ready {
                    fd: f.a,
                    mask: both,
                },
                Ready {
                    fd: f.b,
                    mask: READABLE,
                },
                // Not in the table (unwatched since the poll).
                Ready {
                    fd: 1000,
                    mask: READABLE,
                },
            ];
            let (mut ready, mut stale) = (VecDeque::new(), Vec::new());
            f.table
                .queue_ready(f.py, &mut reports, &mut ready, &mut stale);
            assert!(reports.is_empty());
            assert_eq!(ready.len(), 2);
            assert!(same(&ready[0], &ra) && same(&ready[1], &wa));
            assert_eq!(stale, [(f.b, READABLE)]);

            // Only the reported direction.
            let mut reports = vec![Ready {
                fd: f.a,
                mask: WRITABLE,
            }];
            ready.clear();
            f.table
                .queue_ready(f.py, &mut reports, &mut ready, &mut stale);
            assert!(ready.len() == 1 && same(&ready[0], &wa));
        });
    }

    #[test]
    fn take_handles_empties_the_table_but_keeps_the_loops_own_fd() {
        with_table(|f| {
            let (ra, wa, wb) = (handle(f.py), handle(f.py), handle(f.py));
            f.table.set_internal_fd(f.b);
            f.set(f.a, READABLE, Some(&ra));
            f.set(f.a, WRITABLE, Some(&wa));
            f.set(f.b, WRITABLE, Some(&wb));
            assert_eq!(f.table.handles().count(), 3);
            let taken: Vec<_> = f.table.take_handles().collect();
            assert_eq!(taken.len(), 3);
            for h in [&ra, &wa, &wb] {
                assert!(taken.iter().any(|t| same(t, h)));
            }
            assert_eq!(f.table.len(), 0);
            assert_eq!(f.table.fds().count(), 0);
            assert_eq!(f.table.internal_fd, Some(f.b));
        });
    }
}
