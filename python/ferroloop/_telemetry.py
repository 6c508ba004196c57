"""Slow-callback reports: the threshold, the watchdog thread that samples
where a slow callback is blocked, and the reports (logger ``"ferroloop"``).

The counting and timing are native (src/stats.rs); the snapshot classes
are in `ferroloop._stats`, imported on first use (they are dataclasses,
whose creation costs more than the rest of ferroloop's import).
docs/telemetry.md describes both for users.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
import threading
import traceback
import warnings
import weakref
from typing import Any

from ._glue import _callback_source

logger = logging.getLogger("ferroloop")

ENV_SLOW_CALLBACK_MS = "FERROLOOP_SLOW_CALLBACK_MS"


# ----------------------------------------------------------------- slow callbacks


def threshold_from_env() -> float | None:
    """FERROLOOP_SLOW_CALLBACK_MS as seconds; None if unset, empty or 0.
    A value that is not a positive number warns and is ignored."""
    text = os.environ.get(ENV_SLOW_CALLBACK_MS, "").strip()
    if not text:
        return None
    try:
        ms = float(text)
    except ValueError:
        ms = math.nan
    if ms == 0:
        return None
    if not (ms > 0 and math.isfinite(ms)):
        warnings.warn(
            f"{ENV_SLOW_CALLBACK_MS}={text!r} is not a positive number of milliseconds; "
            "slow-callback reports stay off",
            RuntimeWarning,
            stacklevel=4,
        )
        return None
    return ms / 1000


def check_threshold(seconds: float | None) -> float | None:
    if seconds is None:
        return None
    seconds = float(seconds)
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"the slow-callback threshold must be a positive number, got {seconds!r}")
    return seconds


class Watchdog:
    """The thread that, while a loop runs a callback for longer than its
    slow-callback threshold, samples the loop thread's stack once (so the
    report can say which line blocked).

    It waits in native code without the GIL (`SlowWatcher.wait`), checking
    four times per threshold (at most 1000 times a second, at least once a
    second), and takes the GIL only to sample a slow callback; it holds no
    reference to the loop while it waits. Stopping it wakes it at once.

    It is not a daemon thread: a daemon thread coming back from native code
    while the interpreter finalizes is killed (3.13 and older) or hung there,
    so every watchdog is stopped, and joined, before finalization instead
    (`threading._register_atexit`, as `concurrent.futures` does).
    """

    def __init__(self, loop: Any, threshold: float) -> None:
        self._watcher = watcher = loop._slow_watcher()
        interval = min(max(threshold / 4, 0.001), 1.0)
        daemon = not _stop_all_at_exit()
        self._thread = threading.Thread(
            target=_watch,
            args=(weakref.ref(loop), watcher, interval),
            name="ferroloop-slow-callback-watchdog",
            daemon=daemon,
        )
        _running.add(watcher)  # before it starts: nothing may leave it unstoppable
        try:
            self._thread.start()
        except BaseException:
            _running.discard(watcher)
            raise

    def stop(self) -> None:
        self._watcher.stop()
        _running.discard(self._watcher)


# Watchers of running watchdogs, stopped at interpreter exit.
_running: set = set()
_exit_hook_registered = False


def _stop_all_at_exit() -> bool:
    """Make sure running watchdogs are stopped before the interpreter
    finalizes; False if that cannot be arranged (already shutting down)."""
    global _exit_hook_registered
    if not _exit_hook_registered:
        try:
            threading._register_atexit(_stop_all)
        except (AttributeError, RuntimeError):
            return False
        _exit_hook_registered = True
    return True


def _stop_all() -> None:
    for watcher in list(_running):
        watcher.stop()


def _watch(loop_ref: weakref.ref, watcher: Any, interval: float) -> None:
    try:
        while (seq := watcher.wait(interval)) is not None:
            loop = loop_ref()
            if loop is None:
                return
            _sample(loop, seq)
            del loop
    finally:
        _running.discard(watcher)


def _sample(loop: Any, seq: int) -> None:
    thread_id = loop._thread_id
    frame = sys._current_frames().get(thread_id) if thread_id is not None else None
    if frame is not None:
        loop._slow_sample(seq, _stack(frame))


def _stack(frame) -> traceback.StackSummary:
    """The frames of the running callback, outermost first: those below the
    loop's run_forever (source lines are read only if a report shows them)."""
    from ._loop import Loop

    stop = Loop.run_forever.__code__
    entries = []
    while frame is not None and frame.f_code is not stop and len(entries) < 50:
        code = frame.f_code
        entries.append(
            traceback.FrameSummary(
                code.co_filename, frame.f_lineno, code.co_name, lookup_line=False
            )
        )
        frame = frame.f_back
    entries.reverse()
    return traceback.StackSummary.from_list(entries)


def _frame_summary(frame) -> traceback.FrameSummary:
    code = frame.f_code
    return traceback.FrameSummary(code.co_filename, frame.f_lineno, code.co_name, lookup_line=False)


def _where(summary: traceback.FrameSummary) -> str:
    return f"{summary.filename}:{summary.lineno} in {summary.name}"


def _task_of(callback: Any) -> asyncio.Task | None:
    # A task step or wake-up is a bound method of the Task (Task.__step,
    # the C TaskStepMethWrapper, task_wakeup): `__self__` is the task.
    owner = getattr(callback, "__self__", None)
    if asyncio.isfuture(owner) and hasattr(owner, "get_coro"):
        return owner
    return None


def _coro_frame(task: asyncio.Task):
    coro = task.get_coro()
    return getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)


def _describe_callback(loop: Any, handle: Any, callback: Any, task: asyncio.Task | None) -> str:
    if task is not None:
        coro = task.get_coro()
        name = getattr(coro, "__qualname__", None) or type(coro).__name__
        return f"task {task.get_name()!r} (coroutine {name})"
    if callback is None:
        return repr(handle)
    return f"callback {_callback_source(callback, handle._args or (), loop)}"


def report_slow_callback(
    loop: Any, handle: Any, callback: Any, duration: float, threshold: float, stack: Any
) -> None:
    """Log one callback that ran longer than the loop's threshold (called by
    the core right after it ran)."""
    try:
        task = _task_of(callback)
        suspended_at = None
        if task is not None:
            frame = _coro_frame(task)
            if frame is not None:
                suspended_at = _frame_summary(frame)
        from ._stats import SlowCallback

        report = SlowCallback(duration, threshold, handle, callback, task, stack, suspended_at)
        what = _describe_callback(loop, handle, callback, task)
        lines = [
            f"Slow callback: {what} blocked the loop for {duration:.3f} seconds "
            + f"(threshold {threshold:.3f})"
        ]
        if stack:
            lines[0] += f" at {_where(stack[-1])}"
            lines.append("Stack while it was blocked (most recent call last):")
            lines.extend(line.rstrip("\n") for line in stack.format())
        elif stack is not None:
            lines[0] += ", in the callback itself (no Python code below it)"
        if task is not None:
            if suspended_at is not None:
                lines.append(f"The task is now suspended at {_where(suspended_at)}")
            elif task.done():
                lines.append("The task finished in this step")
        if stack is None:
            lines[0] += " (not sampled: it ran just past the threshold, or held the GIL throughout)"
        logger.warning("%s", "\n".join(lines), extra={"slow_callback": report})
    except Exception:
        logger.exception("ferroloop could not report a slow callback of %.3f seconds", duration)
