//! `LoopState`: what the loop's one lock guards — the ready queue, the
//! timer heap and the fd table — and the step that joins the first two at
//! each iteration: due timers queued behind what was ready, and everything
//! taken as the iteration's batch (`take_batch`).
//!
//! The lock is held for a few instructions at a time and never while Python
//! code runs (callbacks call back into `call_soon`, and releasing a
//! reference can run `__del__`): what leaves the state under the lock is
//! handed back to be released after it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use pyo3::prelude::*;

use super::fd_table::FdTable;
use crate::handles::Handle;
use crate::stats::LoopStats;
use crate::timers::{TimerHeap, CLOCK_RESOLUTION};

#[derive(Default)]
pub(super) struct LoopState {
    /// Handles to run at the next iteration, in order.
    pub(super) ready: VecDeque<Py<Handle>>,
    pub(super) timers: TimerHeap,
    pub(super) fds: FdTable,
}

impl LoopState {
    /// Queue the timers due by `now`, then take everything ready as this
    /// iteration's batch (callbacks scheduled while it runs wait for the
    /// next iteration, as in asyncio). The live due timers are the batch's
    /// last entries; their number is returned, and their lag (`now - when`)
    /// recorded in `stats`. Cancelled due timers go to `dead`, to be
    /// released unlocked.
    #[inline]
    pub(super) fn take_batch(
        &mut self,
        stats: &LoopStats,
        now: f64,
        batch: &mut VecDeque<Py<Handle>>,
        dead: &mut Vec<Py<Handle>>,
    ) -> usize {
        let lag = &stats.lag;
        let others = self.ready.len();
        let end_time = now + CLOCK_RESOLUTION;
        while let Some(entry) = self.timers.pop_due(end_time) {
            let timer = entry.handle.get();
            timer.set_scheduled(false);
            if timer.is_cancelled() {
                dec_saturating(&stats.heap_cancelled);
                dead.push(entry.handle);
                continue;
            }
            lag.record(now - entry.when, 1);
            self.ready.push_back(entry.handle);
        }
        let timers = self.ready.len() - others;
        std::mem::swap(&mut self.ready, batch);
        timers
    }
}

fn dec_saturating(counter: &AtomicUsize) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{handle, same, with_python};
    use super::*;

    #[test]
    fn due_timers_follow_what_was_ready_and_the_batch_takes_both() {
        with_python(|py| {
            let stats = LoopStats::new(0.0);
            let mut st = LoopState::default();
            let soon = handle(py);
            st.ready.push_back(soon.clone_ref(py));
            let (late, early, future) = (handle(py), handle(py), handle(py));
            st.timers.push(10.0, late.clone_ref(py));
            st.timers.push(5.0, early.clone_ref(py));
            st.timers.push(30.0, future.clone_ref(py));
            let (mut batch, mut dead) = (VecDeque::new(), Vec::new());

            let timers = st.take_batch(&stats, 20.0, &mut batch, &mut dead);

            assert_eq!(timers, 2);
            assert_eq!(batch.len(), 3);
            assert!(same(&batch[0], &soon));
            assert!(same(&batch[1], &early) && same(&batch[2], &late));
            assert!(st.ready.is_empty());
            assert!(dead.is_empty());
            assert_eq!(st.timers.len(), 1, "the future timer stays");
            let (count, sum, max, _) = stats.lag.snapshot();
            assert_eq!(count, 2);
            assert_eq!((sum, max), (25.0, 15.0));
        });
    }

    #[test]
    fn a_timer_due_within_the_clock_resolution_is_due() {
        with_python(|py| {
            let stats = LoopStats::new(0.0);
            let mut st = LoopState::default();
            st.timers.push(1.0 + CLOCK_RESOLUTION / 2.0, handle(py));
            st.timers.push(1.0 + CLOCK_RESOLUTION, handle(py));
            let (mut batch, mut dead) = (VecDeque::new(), Vec::new());
            assert_eq!(st.take_batch(&stats, 1.0, &mut batch, &mut dead), 1);
            assert_eq!(st.timers.len(), 1);
        });
    }

    #[test]
    fn cancelled_due_timers_are_set_aside_and_uncounted() {
        with_python(|py| {
            let stats = LoopStats::new(0.0);
            let mut st = LoopState::default();
            let (live, cancelled, also_cancelled) = (handle(py), handle(py), handle(py));
            for (when, h) in [(1.0, &cancelled), (2.0, &live), (3.0, &also_cancelled)] {
                h.get().set_scheduled(true);
                st.timers.push(when, h.clone_ref(py));
            }
            cancelled.get().set_cancelled();
            also_cancelled.get().set_cancelled();
            // One counted in the heap: the count never goes below zero.
            stats.heap_cancelled.store(1, Ordering::Relaxed);
            let (mut batch, mut dead) = (VecDeque::new(), Vec::new());

            let timers = st.take_batch(&stats, 5.0, &mut batch, &mut dead);

            assert_eq!(timers, 1);
            assert!(batch.len() == 1 && same(&batch[0], &live));
            assert_eq!(dead.len(), 2);
            assert!(same(&dead[0], &cancelled) && same(&dead[1], &also_cancelled));
            assert_eq!(stats.heap_cancelled.load(Ordering::Relaxed), 0);
            assert_eq!(stats.lag.snapshot().0, 1);
        });
    }

    #[test]
    fn the_batch_swaps_with_an_empty_one_and_nothing_is_lost() {
        with_python(|py| {
            let stats = LoopStats::new(0.0);
            let mut st = LoopState::default();
            let (mut batch, mut dead) = (VecDeque::new(), Vec::new());
            assert_eq!(st.take_batch(&stats, 0.0, &mut batch, &mut dead), 0);
            assert!(batch.is_empty());
            st.ready.push_back(handle(py));
            st.ready.push_back(handle(py));
            assert_eq!(st.take_batch(&stats, 0.0, &mut batch, &mut dead), 0);
            assert_eq!(batch.len(), 2);
            assert!(st.ready.is_empty());
        });
    }
}
