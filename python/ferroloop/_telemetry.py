"""Loop telemetry: `loop.stats()` snapshots and slow-callback reports.

The counting itself is native (src/stats.rs); this module shapes what the
core hands over into `LoopStats`, runs the watchdog thread that samples
where a slow callback is blocked, and writes the reports (logger
``"ferroloop"``). docs/telemetry.md describes both for users.
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
from dataclasses import dataclass
from typing import Any

from ._glue import _callback_source

__all__ = ["LagStats", "LoopStats", "SlowCallback"]

logger = logging.getLogger("ferroloop")

ENV_SLOW_CALLBACK_MS = "FERROLOOP_SLOW_CALLBACK_MS"


def _duration(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.3f} s"


@dataclass(frozen=True)
class LagStats:
    """How late callbacks ran: a histogram whose buckets are an eighth of a
    power of two wide (percentiles are at most 12.5% above the exact value).

    Every callback the loop ran is one sample: a timer counts from its
    deadline, any other callback from the start of the loop iteration
    during which it was scheduled (an upper bound: it may have been
    scheduled later in that iteration); a callback that became ready while
    the loop was waiting in the poller counts 0. Seconds throughout.
    """

    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    max: float
    #: Non-empty buckets, shortest first: (from, to, count), in seconds; a
    #: bucket holds the samples from `from` (inclusive) to `to` (exclusive;
    #: the last bucket, from 960 s, holds anything longer too).
    buckets: tuple[tuple[float, float, int], ...]

    def percentile(self, q: float) -> float:
        """The lag that `q` percent of the samples did not exceed: the upper
        bound of the bucket that sample lies in (at most `max`; 0.0 for the
        first bucket, under a nanosecond), 0.0 without samples."""
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must be in [0, 100], got {q!r}")
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(self.count * q / 100))
        seen = 0
        for low, high, n in self.buckets:
            seen += n
            if seen >= rank:
                return min(high, self.max) if low else 0.0
        return self.max

    @classmethod
    def _from_raw(cls, count: int, total: float, max_: float, buckets) -> LagStats:
        lag = cls(count, total / count if count else 0.0, 0.0, 0.0, 0.0, max_, tuple(buckets))
        object.__setattr__(lag, "p50", lag.percentile(50))
        object.__setattr__(lag, "p90", lag.percentile(90))
        object.__setattr__(lag, "p99", lag.percentile(99))
        return lag


@dataclass(frozen=True)
class LoopStats:
    """What a ferroloop loop did since it was created or `reset_stats()`.

    Returned by `loop.stats()`. Counts are exact; times are seconds.
    `dataclasses.asdict(stats)` gives a dict (for JSON or a metrics
    exporter); `str(stats)` a short human-readable summary.
    """

    #: Seconds since the loop was created or its stats were last reset.
    elapsed: float
    #: Loop iterations (poll, then run what was ready).
    iterations: int
    #: Callbacks run: call_soon, fd readiness, timers, task steps.
    callbacks: int
    #: call_later / call_at calls.
    timers_scheduled: int
    #: Timers whose callback ran.
    timers_fired: int
    #: Timers cancelled before they ran.
    timers_cancelled: int
    #: Calls to the poller (epoll_wait); a busy loop skips some.
    polls: int
    #: Seconds spent blocked in the poller, waiting for I/O or a timer.
    poll_time: float
    #: Seconds spent running callbacks.
    callback_time: float
    #: Bytes the loop's socket transports read and wrote.
    bytes_read: int
    bytes_written: int
    #: Connections accepted by the loop's servers.
    connections_accepted: int
    #: Callbacks that ran longer than the slow-callback threshold while one
    #: was set (`set_slow_callback_threshold`).
    slow_callbacks: int
    #: How late callbacks ran.
    lag: LagStats

    @classmethod
    def _from_raw(cls, raw: dict[str, Any]) -> LoopStats:
        lag = LagStats._from_raw(
            raw["lag_count"], raw["lag_sum"], raw["lag_max"], raw["lag_buckets"]
        )
        return cls(
            elapsed=raw["elapsed"],
            iterations=raw["iterations"],
            callbacks=raw["callbacks"],
            timers_scheduled=raw["timers_scheduled"],
            timers_fired=raw["timers_fired"],
            timers_cancelled=raw["timers_cancelled"],
            polls=raw["polls"],
            poll_time=raw["poll_time"],
            callback_time=raw["callback_time"],
            bytes_read=raw["bytes_read"],
            bytes_written=raw["bytes_written"],
            connections_accepted=raw["connections_accepted"],
            slow_callbacks=raw["slow_callbacks"],
            lag=lag,
        )

    def __str__(self) -> str:
        busy = self.callback_time / self.elapsed if self.elapsed > 0 else 0.0
        lag = self.lag
        running = f"{_duration(self.callback_time)} running, {busy:.0%} of the time"
        timers = (self.timers_scheduled, self.timers_fired, self.timers_cancelled)
        io = (self.bytes_read, self.bytes_written, self.connections_accepted)
        lags = (_duration(lag.p50), _duration(lag.p99), _duration(lag.max), lag.count)
        return "\n".join(
            [
                f"ferroloop stats over {_duration(self.elapsed)}:",
                f"  iterations   {self.iterations}",
                f"  callbacks    {self.callbacks} ({running}; {self.slow_callbacks} slow)",
                f"  polls        {self.polls} ({_duration(self.poll_time)} blocked)",
                "  timers       {} scheduled, {} fired, {} cancelled".format(*timers),
                "  transports   {} bytes read, {} written, {} connections accepted".format(*io),
                "  loop lag     p50 {}, p99 {}, max {} ({} callbacks)".format(*lags),
            ]
        )


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
    """A daemon thread that, while a loop runs a callback for longer than
    its slow-callback threshold, samples the loop thread's stack once (so
    the report can say which line blocked). It wakes four times per
    threshold (at most 1000 times a second), takes the GIL only to ask the
    core, and holds no reference to the loop between wake-ups."""

    def __init__(self, loop: Any, threshold: float) -> None:
        self._stop = threading.Event()
        interval = max(threshold / 4, 0.001)
        self._thread = threading.Thread(
            target=_watch,
            args=(weakref.ref(loop), self._stop, interval),
            name="ferroloop-slow-callback-watchdog",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


def _watch(loop_ref: weakref.ref, stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        loop = loop_ref()
        if loop is None:
            return
        seq = loop._slow_probe()
        thread_id = loop._thread_id
        if seq is not None and thread_id is not None:
            frame = sys._current_frames().get(thread_id)
            if frame is not None:
                loop._slow_sample(seq, _stack(frame))
            del frame
        del loop


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


@dataclass(frozen=True)
class SlowCallback:
    """One slow-callback report: the `slow_callback` attribute of its log record."""

    #: Seconds the callback ran.
    duration: float
    #: The threshold it exceeded.
    threshold: float
    #: The loop's Handle (or TimerHandle) and the callable it ran.
    handle: Any
    callback: Any
    #: The Task whose step this was, else None.
    task: asyncio.Task | None
    #: Where the loop thread was while the callback ran past the threshold
    #: (outermost frame first), or None if it could not be sampled.
    stack: traceback.StackSummary | None
    #: The task's coroutine after the step (where it is suspended now), or
    #: None (not a task, or the task finished).
    suspended_at: traceback.FrameSummary | None

    @property
    def location(self) -> traceback.FrameSummary | None:
        """Where the callback was blocked (the sample's innermost frame);
        failing a sample, where the task is suspended now."""
        if self.stack:
            return self.stack[-1]
        return self.suspended_at


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
        if task is not None:
            if suspended_at is not None:
                lines.append(f"The task is now suspended at {_where(suspended_at)}")
            elif task.done():
                lines.append("The task finished in this step")
        if not stack:
            lines[0] += " (not sampled: it ran just past the threshold, or held the GIL throughout)"
        logger.warning("%s", "\n".join(lines), extra={"slow_callback": report})
    except Exception:
        logger.exception("ferroloop could not report a slow callback of %.3f seconds", duration)
