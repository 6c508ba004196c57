//! The loop clock and the timer structure: a binary min-heap of
//! `TimerHandle`s (held through their `Handle` base) ordered by deadline, then by scheduling order (so two
//! timers for the same instant run first-in, first-out).
//!
//! Cancelled timers are removed lazily, as asyncio does: popped when they
//! reach the top, or all at once when they are more than half the heap.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use pyo3::prelude::*;

use crate::handles::Handle;

/// `time.monotonic()`'s clock, as seconds: what `loop.time()` returns.
pub fn monotonic() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// The resolution asyncio adds to "now" when it decides which timers are due.
pub const CLOCK_RESOLUTION: f64 = 1e-9;

/// Below this many timers the heap is never compacted (asyncio's value).
const MIN_TIMERS_TO_COMPACT: usize = 100;

pub struct TimerEntry {
    pub when: f64,
    seq: u64,
    pub handle: Py<Handle>,
}

impl PartialEq for TimerEntry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for TimerEntry {}
impl PartialOrd for TimerEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TimerEntry {
    /// Reversed, so that std's max-heap pops the earliest deadline.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .when
            .total_cmp(&self.when)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

#[derive(Default)]
pub struct TimerHeap {
    heap: BinaryHeap<TimerEntry>,
    next_seq: u64,
}

impl TimerHeap {
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    pub fn push(&mut self, when: f64, handle: Py<Handle>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(TimerEntry { when, seq, handle });
    }

    pub fn next_deadline(&self) -> Option<f64> {
        self.heap.peek().map(|e| e.when)
    }

    /// Pop the earliest timer if it is due before `end_time`.
    pub fn pop_due(&mut self, end_time: f64) -> Option<TimerEntry> {
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
    pub fn purge_cancelled(
        &mut self,
        cancelled: &std::sync::atomic::AtomicUsize,
    ) -> Vec<Py<Handle>> {
        use std::sync::atomic::Ordering::Relaxed;
        let is_cancelled = |e: &TimerEntry| e.handle.get().is_cancelled();
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
            h.get().set_scheduled(false);
        }
        removed
    }

    pub fn iter(&self) -> impl Iterator<Item = &Py<Handle>> {
        self.heap.iter().map(|e| &e.handle)
    }

    /// Empty the heap (loop close); the caller drops the handles unlocked.
    pub fn take_all(&mut self) -> Vec<Py<Handle>> {
        std::mem::take(&mut self.heap)
            .into_iter()
            .map(|e| e.handle)
            .collect()
    }
}
