"""Loop telemetry: loop.stats() / reset_stats() counters, and slow-callback
reports without debug mode (set_slow_callback_threshold,
FERROLOOP_SLOW_CALLBACK_MS). docs/telemetry.md describes both."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import inspect
import logging
import math
import os
import socket
import subprocess
import threading
import time
import warnings

import ferroloop
import pytest
from ferroloop import LagStats, LoopStats
from support import answering_task_protocol, python_child

THRESHOLD = 0.020
WATCHDOG = "ferroloop-slow-callback-watchdog"


def line_of(func, marker: str) -> int:
    """The line number of the source line of `func` that contains `marker`."""
    lines, first = inspect.getsourcelines(func)
    hits = [first + i for i, line in enumerate(lines) if marker in line]
    assert len(hits) == 1, (marker, hits)
    return hits[0]


def run_forever_with_watchdog(loop, timeout: float = 10.0) -> None:
    """run_forever, stopped from a thread if the test's own stop never comes
    (support's watchdog is a timer, which the counts would include)."""
    fired = []

    def stop():
        fired.append(True)
        loop.call_soon_threadsafe(loop.stop)

    watchdog = threading.Timer(timeout, stop)
    watchdog.start()
    try:
        loop.run_forever()
    finally:
        watchdog.cancel()
    assert not fired, f"the loop was stopped by the {timeout}s watchdog"


def run_callbacks(loop, *callbacks) -> None:
    for callback in callbacks:
        loop.call_soon(callback)
    loop.call_soon(loop.stop)
    run_forever_with_watchdog(loop)


@pytest.fixture
def reports(caplog):
    """The slow-callback log records (logger "ferroloop")."""
    caplog.set_level(logging.WARNING, logger="ferroloop")

    def get():
        return [r for r in caplog.records if r.name == "ferroloop"]

    return get


# ------------------------------------------------------------------ stats()


def test_a_new_loop_counts_nothing(loop):
    stats = loop.stats()
    assert isinstance(stats, LoopStats)
    assert isinstance(stats.lag, LagStats)
    zero = {f.name: 0 for f in dataclasses.fields(LoopStats) if f.name not in ("elapsed", "lag")}
    got = {name: getattr(stats, name) for name in zero}
    assert got == zero
    assert stats.lag.count == 0
    assert (stats.lag.p50, stats.lag.p99, stats.lag.max) == (0.0, 0.0, 0.0)
    assert 0 <= stats.elapsed < 5


def test_snapshot_is_frozen_and_converts_to_a_dict(loop):
    stats = loop.stats()
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.callbacks = 5
    as_dict = dataclasses.asdict(stats)
    assert as_dict["callbacks"] == 0
    assert as_dict["lag"]["count"] == 0
    assert "loop lag" in str(stats)


@pytest.mark.parametrize("n", [1, 1000])
def test_n_callbacks_are_n_counted(loop, n):
    ran = []
    for i in range(n):
        loop.call_soon(ran.append, i)
    loop.call_soon(loop.stop)
    run_forever_with_watchdog(loop)
    assert len(ran) == n
    stats = loop.stats()
    assert stats.callbacks == n + 1  # and loop.stop
    assert stats.timers_scheduled == stats.timers_fired == stats.timers_cancelled == 0
    assert stats.lag.count == n + 1
    assert stats.iterations == 1


def test_cancelled_callbacks_are_not_counted(loop):
    handles = [loop.call_soon(int) for _ in range(10)]
    for h in handles[::2]:
        h.cancel()
    run_callbacks(loop)
    stats = loop.stats()
    assert stats.callbacks == 5 + 1
    assert stats.lag.count == stats.callbacks  # a sample per callback run


def test_callbacks_scheduled_by_callbacks_run_in_later_iterations(loop):
    def chain(n):
        if n:
            loop.call_soon(chain, n - 1)
        else:
            loop.stop()

    loop.call_soon(chain, 9)
    run_forever_with_watchdog(loop)
    stats = loop.stats()
    assert stats.callbacks == 10
    assert stats.iterations == 10


def test_k_cancelled_timers_are_k_counted(loop):
    fired = []
    handles = [loop.call_later(0.001 * (i % 5), fired.append, i) for i in range(50)]
    cancelled = {i for i in range(50) if i % 3 == 0}
    for i in cancelled:
        handles[i].cancel()
    loop.call_later(0.030, loop.stop)
    run_forever_with_watchdog(loop)
    assert sorted(fired) == sorted(set(range(50)) - cancelled)
    stats = loop.stats()
    assert stats.timers_scheduled == 51
    assert stats.timers_cancelled == len(cancelled) == 17
    assert stats.timers_fired == 50 - 17 + 1  # and the stop timer
    assert stats.callbacks == stats.timers_fired


def test_a_timer_cancelled_in_its_own_batch_counts_as_cancelled(loop):
    # Both are due in the same iteration; the first cancels the second after
    # it left the heap, before it ran.
    when = loop.time() + 0.005
    ran = []
    second = None

    def first():
        ran.append("first")
        second.cancel()

    loop.call_at(when, first)
    second = loop.call_at(when, ran.append, "second")
    loop.call_at(when + 0.010, loop.stop)
    run_forever_with_watchdog(loop)
    assert ran == ["first"]
    stats = loop.stats()
    assert (stats.timers_scheduled, stats.timers_fired, stats.timers_cancelled) == (3, 2, 1)


def test_counts_stay_exact_when_keyboardinterrupt_cuts_a_batch_short(loop):
    ran = []

    def interrupt():
        raise KeyboardInterrupt

    loop.call_soon(ran.append, "a")
    loop.call_soon(interrupt)
    loop.call_soon(ran.append, "b")
    loop.call_at(loop.time() - 1, ran.append, "timer")  # due: in the same batch
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert ran == ["a"]
    stats = loop.stats()
    assert (stats.callbacks, stats.timers_fired, stats.lag.count) == (2, 1, 2)
    run_callbacks(loop)  # what was left queued runs now, in order
    assert ran == ["a", "b", "timer"]
    stats = loop.stats()
    assert (stats.callbacks, stats.timers_fired, stats.timers_cancelled) == (5, 1, 0)
    assert stats.lag.count == stats.callbacks


def test_cancelling_a_timer_that_already_ran_is_not_counted(loop):
    handle = loop.call_later(0, int)
    loop.call_later(0.005, loop.stop)
    run_forever_with_watchdog(loop)
    handle.cancel()
    stats = loop.stats()
    assert (stats.timers_fired, stats.timers_cancelled) == (2, 0)


def test_timer_counts_survive_heap_compaction(loop):
    # More than half of a heap of over 100 cancelled: the heap is compacted.
    handles = [loop.call_later(10, int) for _ in range(300)]
    for h in handles[:200]:
        h.cancel()
    run_callbacks(loop)
    stats = loop.stats()
    assert (stats.timers_scheduled, stats.timers_cancelled, stats.timers_fired) == (300, 200, 0)
    assert loop._core_counts()[1] == 100  # the heap was compacted


def test_time_blocked_in_the_poller_and_running_callbacks(loop):
    loop.call_soon(loop.call_later, 0.060, loop.stop)  # 60 ms after the loop starts
    loop.call_soon(time.sleep, 0.030)
    t0 = time.monotonic()
    run_forever_with_watchdog(loop)
    wall = time.monotonic() - t0
    stats = loop.stats()
    assert 0.030 <= stats.callback_time < 0.030 + 0.200
    # The stop timer was due 60 ms after the first batch started: what the
    # callbacks did not take of them, the loop spent blocked in the poller.
    assert stats.polls >= 1
    assert 0.055 <= stats.callback_time + stats.poll_time <= wall + 0.001
    if stats.callback_time < 0.050:
        assert stats.poll_time > 0.005


def test_lag_of_a_late_timer_and_of_callbacks_queued_behind_a_blocking_one(loop):
    ran = []

    def first():
        loop.call_soon(ran.append, "queued behind the blocker")
        loop.call_later(0.001, timer)  # due during the sleep

    def timer():
        ran.append("timer")
        loop.stop()

    loop.call_soon(first)
    loop.call_soon(time.sleep, 0.050)
    run_forever_with_watchdog(loop)
    assert ran == ["queued behind the blocker", "timer"]
    lag = loop.stats().lag
    assert lag.count == 4  # every callback is a sample
    # The timer ran ~49 ms after its deadline, the queued callback ~50 ms
    # after the batch that queued it started.
    assert 0.045 <= lag.max < 0.5
    late = sum(n for low, _high, n in lag.buckets if low >= 0.040)
    assert late == 2
    assert lag.p50 < 0.040
    assert lag.p99 == lag.max
    assert lag.percentile(100) == lag.max
    assert lag.percentile(0) <= lag.p50


def test_lag_percentiles_are_within_the_bucket_resolution(loop):
    # 99 callbacks with no lag, one ~20 ms late: p50 is 0, p99 is 0, max 20 ms.
    loop.call_soon(loop.call_later, 0.001, loop.stop)  # due during the sleep
    for _ in range(97):
        loop.call_soon(int)
    loop.call_soon(time.sleep, 0.020)
    run_forever_with_watchdog(loop)
    lag = loop.stats().lag
    assert lag.count == 100
    assert lag.p50 == lag.p90 == lag.p99 == 0.0
    assert 0.019 <= lag.max < 0.1
    assert lag.percentile(99.5) == lag.max
    from_buckets = sum(min(high, lag.max) * n for _low, high, n in lag.buckets) / lag.count
    assert math.isclose(lag.mean, from_buckets, rel_tol=0.15, abs_tol=1e-6)
    for low, high, _n in lag.buckets:
        assert low <= high <= max(low * 1.125, low + 16e-9)


def test_stats_accumulate_across_run_until_complete_calls(loop):
    async def steps(n):
        for _ in range(n):
            await asyncio.sleep(0)

    loop.run_until_complete(steps(10))
    first = loop.stats()
    # the first step, 10 resumptions, run_until_complete's done callback
    assert first.callbacks == 12
    loop.run_until_complete(steps(10))
    second = loop.stats()
    assert second.callbacks == 24
    assert second.iterations == 2 * first.iterations
    assert second.elapsed > first.elapsed
    loop.run_until_complete(asyncio.sleep(0.010))
    third = loop.stats()
    assert (third.timers_scheduled, third.timers_fired) == (1, 1)
    assert third.poll_time >= 0.005


def test_reset_stats(loop):
    for _ in range(5):
        loop.call_soon(int)
    loop.call_later(10, int).cancel()
    run_callbacks(loop)
    assert loop.stats().callbacks == 6
    loop.reset_stats()
    stats = loop.stats()
    assert (stats.callbacks, stats.iterations, stats.timers_cancelled, stats.lag.count) == (
        0,
        0,
        0,
        0,
    )
    assert stats.elapsed < 1
    run_callbacks(loop, int, int)
    assert loop.stats().callbacks == 3


def test_stats_and_reset_after_close_raise_like_other_calls(loop):
    loop.close()
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.stats()
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.reset_stats()
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.set_slow_callback_threshold(1.0)


def test_stats_from_another_thread_while_running(loop):
    seen = []
    ticks = 0

    def reader():
        seen.append(loop.stats().callbacks)
        loop.call_soon_threadsafe(loop.stop)

    def tick():
        nonlocal ticks
        ticks += 1
        if ticks == 100:  # 99 batches of one callback have been counted
            threading.Thread(target=reader).start()
        loop.call_soon(tick)

    loop.call_soon(tick)
    run_forever_with_watchdog(loop)
    assert seen and seen[0] >= 99


def test_accepted_connections_are_counted(loop):
    async def main():
        async def handle(reader, writer):
            writer.write(await reader.read(100))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"hello")
            writer.write_eof()
            assert await reader.read() == b"hello"
            writer.close()
            await writer.wait_closed()
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())
    assert loop.stats().connections_accepted == 3


def test_transport_bytes_are_counted(loop):
    async def main():
        a, b = socket.socketpair()
        with a, b:
            _r1, w1 = await asyncio.open_connection(sock=a)
            r2, w2 = await asyncio.open_connection(sock=b)
            w1.write(b"x" * 1000)
            await w1.drain()
            assert await r2.readexactly(1000) == b"x" * 1000
            w1.close()
            w2.close()

    loop.run_until_complete(main())
    stats = loop.stats()
    assert (stats.bytes_read, stats.bytes_written) == (1000, 1000)


# ----------------------------------------------------------- slow callbacks


async def blocks_for_50_ms():
    await asyncio.sleep(0)
    time.sleep(0.050)  # noqa: ASYNC251 - the blocking call
    await asyncio.sleep(0)  # <- suspended


def test_slow_callback_reports_are_off_by_default(loop, reports, monkeypatch):
    assert loop.get_slow_callback_threshold() is None
    loop.run_until_complete(blocks_for_50_ms())
    assert reports() == []
    assert loop.stats().slow_callbacks == 0
    assert not [t for t in threading.enumerate() if t.name == WATCHDOG]


def test_a_50_ms_task_step_is_reported_with_its_file_and_line(loop, reports):
    loop.set_slow_callback_threshold(THRESHOLD)
    assert loop.get_slow_callback_threshold() == THRESHOLD
    task = loop.create_task(blocks_for_50_ms(), name="the-culprit")
    loop.run_until_complete(task)

    [record] = reports()
    assert record.levelno == logging.WARNING
    blocked = line_of(blocks_for_50_ms, "the blocking call")
    suspended = line_of(blocks_for_50_ms, "# <- suspended")
    message = record.getMessage()
    assert message.startswith("Slow callback: task 'the-culprit' (coroutine blocks_for_50_ms) ")
    assert f"at {__file__}:{blocked} in blocks_for_50_ms" in message.splitlines()[0]
    assert "time.sleep(0.050)" in message  # the source line, in the stack
    assert f"now suspended at {__file__}:{suspended} in blocks_for_50_ms" in message

    report = record.slow_callback
    assert report.task is task
    assert 0.050 <= report.duration < 0.5
    assert report.threshold == THRESHOLD
    assert (report.location.filename, report.location.lineno) == (__file__, blocked)
    assert report.stack[-1].name == "blocks_for_50_ms"
    assert (report.suspended_at.filename, report.suspended_at.lineno) == (__file__, suspended)
    assert loop.stats().slow_callbacks == 1


def test_a_1_ms_callback_is_not_reported(loop, reports):
    loop.set_slow_callback_threshold(THRESHOLD)

    async def short():
        await asyncio.sleep(0)
        time.sleep(0.001)  # noqa: ASYNC251
        await asyncio.sleep(0)

    loop.run_until_complete(short())
    run_callbacks(loop, lambda: time.sleep(0.001))
    assert reports() == []
    assert loop.stats().slow_callbacks == 0


def test_a_plain_callback_is_reported_with_the_line_that_blocked(loop, reports):
    def helper():
        time.sleep(0.050)  # <- helper blocks

    def on_timer():
        helper()  # <- calls helper

    loop.set_slow_callback_threshold(THRESHOLD)
    loop.call_later(0.001, on_timer)
    loop.call_later(0.080, loop.stop)
    run_forever_with_watchdog(loop)

    [record] = reports()
    report = record.slow_callback
    assert report.task is None
    assert report.callback is on_timer
    assert [(f.name, f.lineno) for f in report.stack] == [
        ("on_timer", line_of(on_timer, "# <- calls helper")),
        ("helper", line_of(helper, "# <- helper blocks")),
    ]
    first_line = record.getMessage().splitlines()[0]
    assert first_line.startswith("Slow callback: callback ")
    assert "on_timer" in first_line
    assert f"{__file__}:{line_of(helper, '# <- helper blocks')} in helper" in first_line


def test_a_callback_that_holds_the_gil_is_still_sampled(loop, reports):
    def spin():
        deadline = time.monotonic() + 0.080
        while time.monotonic() < deadline:  # <- spins
            pass

    loop.set_slow_callback_threshold(THRESHOLD)
    run_callbacks(loop, spin)
    [record] = reports()
    report = record.slow_callback
    assert report.location.name == "spin"
    assert report.location.lineno in (line_of(spin, "# <- spins"), line_of(spin, "pass"))


def test_a_builtin_callback_is_sampled_with_no_python_frames(loop, reports):
    loop.set_slow_callback_threshold(THRESHOLD)
    loop.call_soon(time.sleep, 0.050)
    loop.call_soon(loop.stop)
    run_forever_with_watchdog(loop)
    [record] = reports()
    report = record.slow_callback
    assert report.stack is not None and len(report.stack) == 0
    assert report.location is None
    first_line = record.getMessage().splitlines()[0]
    assert first_line.startswith("Slow callback: callback sleep(")
    assert first_line.endswith("in the callback itself (no Python code below it)")


def test_without_a_sample_the_report_names_where_the_task_is_suspended(loop, reports, monkeypatch):
    from ferroloop import _telemetry

    monkeypatch.setattr(_telemetry, "_watch", lambda *args: None)  # no watchdog
    loop.set_slow_callback_threshold(THRESHOLD)
    loop.run_until_complete(blocks_for_50_ms())
    [record] = reports()
    report = record.slow_callback
    assert report.stack is None
    suspended = line_of(blocks_for_50_ms, "# <- suspended")
    assert (report.location.filename, report.location.lineno) == (__file__, suspended)
    assert "not sampled" in record.getMessage()


def test_every_slow_step_is_reported_and_counted(loop, reports):
    async def twice():
        time.sleep(0.030)  # noqa: ASYNC251
        await asyncio.sleep(0)
        time.sleep(0.030)  # noqa: ASYNC251

    loop.set_slow_callback_threshold(THRESHOLD)
    loop.run_until_complete(twice())
    records = reports()
    assert len(records) == 2
    assert "The task finished in this step" in records[1].getMessage()
    assert loop.stats().slow_callbacks == 2


def test_threshold_none_turns_reports_off_and_stops_the_watchdog(loop, reports):
    loop.set_slow_callback_threshold(THRESHOLD)
    assert [t for t in threading.enumerate() if t.name == WATCHDOG]
    loop.set_slow_callback_threshold(None)
    assert loop.get_slow_callback_threshold() is None
    run_callbacks(loop, lambda: time.sleep(0.050))
    assert reports() == []
    _wait_for_no_watchdog()


def test_close_stops_the_watchdog(loop):
    loop.set_slow_callback_threshold(THRESHOLD)
    loop.close()
    _wait_for_no_watchdog()


def test_a_collected_loop_ends_its_watchdog():
    loop = ferroloop.new_event_loop()
    loop.set_slow_callback_threshold(THRESHOLD)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # an unclosed loop
        del loop
        gc.collect()
    _wait_for_no_watchdog()


def test_a_loop_left_open_does_not_delay_interpreter_exit():
    # The watchdog is not a daemon thread (see ferroloop._telemetry); it is
    # stopped before the interpreter finalizes.
    code = (
        "import ferroloop\n"
        "loop = ferroloop.new_event_loop()\n"
        "loop.set_slow_callback_threshold(10.0)\n"  # wakes every second
        "loop.run_until_complete(__import__('asyncio').sleep(0))\n"
        "print('done')\n"
    )
    t0 = time.monotonic()
    proc = python_child(code)
    assert (proc.returncode, proc.stdout) == (0, "done\n"), proc.stderr
    assert time.monotonic() - t0 < 5


def _wait_for_no_watchdog():
    deadline = time.monotonic() + 2
    while [t for t in threading.enumerate() if t.name == WATCHDOG]:
        assert time.monotonic() < deadline, "the watchdog thread is still running"
        time.sleep(0.005)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_threshold_must_be_a_positive_number(loop, bad):
    with pytest.raises(ValueError, match="positive number"):
        loop.set_slow_callback_threshold(bad)
    assert loop.get_slow_callback_threshold() is None


def test_debug_mode_and_reports_work_together(loop, reports, caplog):
    caplog.set_level(logging.WARNING, logger="asyncio")
    loop.set_debug(True)
    loop.slow_callback_duration = THRESHOLD
    loop.set_slow_callback_threshold(THRESHOLD)
    run_callbacks(loop, lambda: time.sleep(0.050))
    assert len(reports()) == 1
    assert [r for r in caplog.records if r.name == "asyncio" and "Executing" in r.getMessage()]


def _run_child(code: str, env_value: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, FERROLOOP_SLOW_CALLBACK_MS=env_value)
    return python_child(code, env)


def test_env_var_sets_the_threshold_of_new_loops():
    code = (
        "import time, ferroloop\n"
        "loop = ferroloop.new_event_loop()\n"
        "print(loop.get_slow_callback_threshold())\n"
        "def block():\n"
        "    time.sleep(0.05)\n"
        "loop.call_soon(block)\n"
        "loop.call_soon(loop.stop)\n"
        "loop.run_forever()\n"
        "print(loop.stats().slow_callbacks)\n"
        "loop.close()\n"
    )
    proc = _run_child(code, "20")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0.02", "1"]
    # Not configured logging: the last-resort handler prints the warning.
    assert "Slow callback: callback block() at <string>:" in proc.stderr
    assert 'File "<string>", line 5, in block' in proc.stderr  # the sampled stack


@pytest.mark.parametrize("value", ["", "0"])
def test_env_var_empty_or_zero_is_off(value):
    code = "import ferroloop; print(ferroloop.new_event_loop().get_slow_callback_threshold())"
    proc = _run_child(code, value)
    assert (proc.returncode, proc.stdout.strip(), proc.stderr) == (0, "None", "")


def test_env_var_that_is_not_a_number_warns():
    code = (
        "import warnings; warnings.simplefilter('error')\n"
        "import ferroloop\n"
        "try:\n"
        "    ferroloop.new_event_loop()\n"
        "except RuntimeWarning as w:\n"
        "    print('warned:', w)\n"
    )
    proc = _run_child(code, "fast")
    assert proc.returncode == 0, proc.stderr
    assert "FERROLOOP_SLOW_CALLBACK_MS='fast' is not a positive number" in proc.stdout


def test_a_task_woken_by_data_received_runs_without_polling_again(loop):
    """Request/response over a real socket: data_received wakes a task (as
    asyncio's streams do), the task answers. The iteration after the one
    that found the data runs that task without a second, zero-timeout poll,
    as libuv runs its ready queue before polling: about one poll per round
    trip, where polling every iteration would take two."""
    rounds = 300

    def client(port):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            for _ in range(rounds):
                sock.sendall(b"ping")
                assert sock.recv(10) == b"ping"
            sock.sendall(b"end")
            assert sock.recv(10) == b"end"

    async def main():
        server = await loop.create_server(answering_task_protocol(loop), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        await asyncio.sleep(0)
        loop.reset_stats()
        await loop.run_in_executor(None, client, port)
        stats = loop.stats()
        server.close()
        return stats

    stats = loop.run_until_complete(main())
    assert rounds <= stats.polls < 1.5 * rounds, stats
