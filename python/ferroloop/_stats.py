"""The snapshot classes of ferroloop's telemetry: `LoopStats` (what
`loop.stats()` returns), `LagStats` and `SlowCallback` (the details of a
slow-callback report). Imported on first use: see `ferroloop._telemetry`.
"""

from __future__ import annotations

import asyncio
import math
import traceback
from dataclasses import dataclass
from typing import Any

__all__ = ["LagStats", "LoopStats", "SlowCallback"]


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
