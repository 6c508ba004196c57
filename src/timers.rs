//! The timer structure: a binary min-heap of timers ordered by deadline,
//! then by scheduling order (so two timers for the same instant run
//! first-in, first-out). The loop's heap holds `TimerHandle`s through their
//! `Handle` base (`TimerHeap` = `TimerHeap<Py<Handle>>`); the heap itself
//! only asks a timer whether it is cancelled ([`Timer`]), so its unit tests
//! need no Python.
//!
//! Cancelled timers are removed lazily, as asyncio does: popped when they
//! reach the top, or all at once when they are more than half the heap.
//!
//! Deadlines are in `sys::clock::monotonic` seconds (`loop.time()`).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::atomic::AtomicUsize;

use pyo3::Py;

use crate::handles::Handle;

/// The resolution asyncio adds to "now" when it decides which timers are due.
pub const CLOCK_RESOLUTION: f64 = 1e-9;

/// Below this many timers the heap is never compacted (asyncio's value).
const MIN_TIMERS_TO_COMPACT: usize = 100;

/// What the heap needs of what it holds.
pub trait Timer {
    /// Cancelled: to be dropped, not run.
    fn is_cancelled(&self) -> bool;
    /// Told when it leaves the heap unrun (`false`): `TimerHandle._scheduled`.
    fn set_scheduled(&self, scheduled: bool);
}

impl Timer for Py<Handle> {
    #[inline]
    fn is_cancelled(&self) -> bool {
        self.get().is_cancelled()
    }

    #[inline]
    fn set_scheduled(&self, scheduled: bool) {
        self.get().set_scheduled(scheduled)
    }
}

pub struct TimerEntry<T = Py<Handle>> {
    pub when: f64,
    seq: u64,
    pub handle: T,
}

impl<T> PartialEq for TimerEntry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<T> Eq for TimerEntry<T> {}
impl<T> PartialOrd for TimerEntry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for TimerEntry<T> {
    /// Reversed, so that std's max-heap pops the earliest deadline.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .when
            .total_cmp(&self.when)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

pub struct TimerHeap<T = Py<Handle>> {
    heap: BinaryHeap<TimerEntry<T>>,
    next_seq: u64,
}

impl<T> Default for TimerHeap<T> {
    fn default() -> Self {
        TimerHeap {
            heap: BinaryHeap::new(),
            next_seq: 0,
        }
    }
}

impl<T: Timer> TimerHeap<T> {
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    pub fn push(&mut self, when: f64, handle: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(TimerEntry { when, seq, handle });
    }

    pub fn next_deadline(&self) -> Option<f64> {
        self.heap.peek().map(|e| e.when)
    }

    /// Pop the earliest timer if it is due before `end_time`.
    pub fn pop_due(&mut self, end_time: f64) -> Option<TimerEntry<T>> {
        if self.heap.peek()?.when >= end_time {
            return None;
        }
        self.heap.pop()
    }

    /// Drop cancelled timers: all of them when they are the majority of a
    /// large heap, else only those at the top. `cancelled` is the loop's
    /// count of cancelled timers in the heap, kept in step. The removed
    /// handles are returned so the caller can release them outside its lock
    /// (releasing runs arbitrary `__del__` code).
    pub fn purge_cancelled(&mut self, cancelled: &AtomicUsize) -> Vec<T> {
        use std::sync::atomic::Ordering::Relaxed;
        let is_cancelled = |e: &TimerEntry<T>| e.handle.is_cancelled();
        let mut removed = Vec::new();
        let n = self.heap.len();
        if n > MIN_TIMERS_TO_COMPACT && cancelled.load(Relaxed) * 2 > n {
            let (dead, live): (Vec<_>, Vec<_>) = std::mem::take(&mut self.heap)
                .into_iter()
                .partition(is_cancelled);
            self.heap = BinaryHeap::from(live);
            cancelled.fetch_sub(dead.len(), Relaxed);
            removed.extend(dead.into_iter().map(|e| e.handle));
        } else {
            while self.heap.peek().is_some_and(is_cancelled) {
                let e = self.heap.pop().expect("peeked");
                cancelled.fetch_sub(1, Relaxed);
                removed.push(e.handle);
            }
        }
        for h in &removed {
            h.set_scheduled(false);
        }
        removed
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.heap.iter().map(|e| &e.handle)
    }

    /// Empty the heap (loop close); the caller drops the handles unlocked.
    pub fn take_all(&mut self) -> Vec<T> {
        std::mem::take(&mut self.heap)
            .into_iter()
            .map(|e| e.handle)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;
    use std::sync::atomic::Ordering::Relaxed;

    /// A timer as the heap sees it: an id, cancelled and scheduled flags.
    struct Fake {
        id: usize,
        cancelled: Cell<bool>,
        scheduled: Cell<bool>,
    }

    impl Timer for Rc<Fake> {
        fn is_cancelled(&self) -> bool {
            self.cancelled.get()
        }
        fn set_scheduled(&self, scheduled: bool) {
            self.scheduled.set(scheduled)
        }
    }

    /// `n` timers pushed with deadlines `when(i)`; `cancel` does what
    /// `TimerHandle.cancel` does (flag + the loop's count).
    struct Fixture {
        heap: TimerHeap<Rc<Fake>>,
        timers: Vec<Rc<Fake>>,
        cancelled: AtomicUsize,
    }

    impl Fixture {
        fn new(n: usize, when: impl Fn(usize) -> f64) -> Fixture {
            let mut heap = TimerHeap::default();
            let timers: Vec<Rc<Fake>> = (0..n)
                .map(|id| {
                    Rc::new(Fake {
                        id,
                        cancelled: Cell::new(false),
                        scheduled: Cell::new(true),
                    })
                })
                .collect();
            for t in &timers {
                heap.push(when(t.id), Rc::clone(t));
            }
            Fixture {
                heap,
                timers,
                cancelled: AtomicUsize::new(0),
            }
        }

        fn cancel(&self, id: usize) {
            self.timers[id].cancelled.set(true);
            self.cancelled.fetch_add(1, Relaxed);
        }

        fn pop_all_due(&mut self, end: f64) -> Vec<usize> {
            std::iter::from_fn(|| self.heap.pop_due(end).map(|e| e.handle.id)).collect()
        }
    }

    #[test]
    fn pops_by_deadline_then_fifo() {
        let when = [3.0, 1.0, 2.0, 1.0, 3.0, 1.0];
        let mut f = Fixture::new(when.len(), |i| when[i]);
        assert_eq!(f.heap.len(), 6);
        assert_eq!(f.heap.next_deadline(), Some(1.0));
        assert_eq!(f.pop_all_due(10.0), vec![1, 3, 5, 2, 0, 4]);
        assert!(f.heap.is_empty());
        assert_eq!(f.heap.next_deadline(), None);
    }

    #[test]
    fn pop_due_stops_at_end_time_exclusive() {
        let mut f = Fixture::new(4, |i| i as f64);
        assert_eq!(f.pop_all_due(2.0), vec![0, 1]);
        assert_eq!(f.heap.next_deadline(), Some(2.0));
        assert_eq!(f.pop_all_due(2.0 + CLOCK_RESOLUTION), vec![2]);
        assert_eq!(f.heap.len(), 1);
    }

    #[test]
    fn a_small_heap_drops_only_cancelled_timers_at_the_top() {
        let mut f = Fixture::new(10, |i| i as f64);
        for id in [0, 1, 5, 6, 7, 8] {
            f.cancel(id);
        }
        let removed = f.heap.purge_cancelled(&f.cancelled);
        let ids: Vec<usize> = removed.iter().map(|t| t.id).collect();
        assert_eq!(ids, vec![0, 1], "timer 2 is live: the purge stops there");
        assert_eq!(f.cancelled.load(Relaxed), 4, "the count follows");
        assert!(removed.iter().all(|t| !t.scheduled.get()));
        assert!(f.timers[5].scheduled.get(), "still in the heap");
        assert_eq!(f.heap.len(), 8);
        // Nothing cancelled at the top: a no-op.
        assert!(f.heap.purge_cancelled(&f.cancelled).is_empty());
    }

    #[test]
    fn a_large_mostly_cancelled_heap_is_compacted() {
        let n = MIN_TIMERS_TO_COMPACT + 21; // 121
        let mut f = Fixture::new(n, |i| (i % 7) as f64);
        // 61 of 121 cancelled (more than half), none of them at the top.
        let dead: Vec<usize> = (0..n).filter(|&i| i % 7 != 0).take(61).collect();
        for &id in &dead {
            f.cancel(id);
        }
        let removed = f.heap.purge_cancelled(&f.cancelled);
        let mut ids: Vec<usize> = removed.iter().map(|t| t.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, dead, "all cancelled timers, wherever they were");
        assert_eq!(f.cancelled.load(Relaxed), 0);
        assert!(removed.iter().all(|t| !t.scheduled.get()));
        assert_eq!(f.heap.len(), n - 61);
        assert!(f.heap.iter().all(|t| !t.cancelled.get()));
        // The rebuilt heap still pops by deadline, then FIFO.
        let order = f.pop_all_due(f64::INFINITY);
        let mut expected: Vec<usize> = (0..n).filter(|i| !dead.contains(i)).collect();
        expected.sort_by_key(|&i| (i % 7, i));
        assert_eq!(order, expected);
    }

    #[test]
    fn half_cancelled_or_a_small_heap_is_not_compacted() {
        // Exactly half of a large heap: not more than half.
        let n = 2 * (MIN_TIMERS_TO_COMPACT + 1);
        let mut f = Fixture::new(n, |i| i as f64);
        for id in (1..n).step_by(2) {
            f.cancel(id);
        }
        assert!(f.heap.purge_cancelled(&f.cancelled).is_empty());
        assert_eq!(f.heap.len(), n);
        // Every timer of a heap of 100 cancelled but the first: not compacted.
        let mut f = Fixture::new(MIN_TIMERS_TO_COMPACT, |i| i as f64);
        for id in 1..MIN_TIMERS_TO_COMPACT {
            f.cancel(id);
        }
        assert!(f.heap.purge_cancelled(&f.cancelled).is_empty());
        assert_eq!(f.pop_all_due(0.5), vec![0]);
        let removed = f.heap.purge_cancelled(&f.cancelled);
        assert_eq!(
            removed.len(),
            MIN_TIMERS_TO_COMPACT - 1,
            "all at the top now"
        );
        assert!(f.heap.is_empty());
    }

    #[test]
    fn take_all_empties_the_heap() {
        let mut f = Fixture::new(5, |i| i as f64);
        let all = f.heap.take_all();
        assert_eq!(all.len(), 5);
        assert!(f.heap.is_empty());
        f.heap.push(1.0, Rc::clone(&f.timers[0]));
        assert_eq!(f.heap.len(), 1, "usable after");
    }
}
