"""Debug mode: the flag, PYTHONASYNCIODEBUG, slow-callback warnings, the
thread check and source tracebacks."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import time

import pytest
from support import make_loop, python_child, run_forever_with_thread, run_forever_with_watchdog

SLOW_CALLBACK_RE = re.compile(r"Executing <.*> took \d+\.\d{3} seconds")


def test_debug_is_off_by_default(loop_kind, monkeypatch):
    monkeypatch.delenv("PYTHONASYNCIODEBUG", raising=False)
    if sys.flags.dev_mode:
        pytest.skip("python -X dev turns asyncio debug mode on")
    loop = make_loop(loop_kind)
    try:
        assert loop.get_debug() is False
    finally:
        loop.close()


def test_set_debug_and_get_debug(any_loop):
    any_loop.set_debug(True)
    assert any_loop.get_debug() is True
    any_loop.set_debug(False)
    assert any_loop.get_debug() is False


def test_set_debug_while_running(any_loop):
    seen = []

    def toggle():
        any_loop.set_debug(True)
        seen.append(any_loop.get_debug())
        # The new mode is effective at once: handles record their origin.
        seen.append(isinstance(any_loop.call_soon(int)._source_traceback, list))
        any_loop.stop()

    any_loop.call_soon(toggle)
    run_forever_with_watchdog(any_loop)
    assert seen == [True, True]


@pytest.mark.parametrize("kind", ["ferroloop", "asyncio"])
def test_pythonasynciodebug_env_makes_new_loops_debug(kind):
    code = (
        "import asyncio, ferroloop\n"
        f"loop = ferroloop.new_event_loop() if {kind!r} == 'ferroloop' "
        "else asyncio.SelectorEventLoop()\n"
        "print(type(loop).__name__, loop.get_debug())\n"
        "loop.close()\n"
    )
    env = {**os.environ, "PYTHONASYNCIODEBUG": "1"}
    out = python_child(code, env)
    assert out.returncode == 0, out.stderr
    name, debug = out.stdout.split()
    assert debug == "True"
    assert (name == "Loop") == (kind == "ferroloop")


def test_slow_callback_is_logged_in_debug_mode(any_loop, caplog):
    any_loop.set_debug(True)
    any_loop.slow_callback_duration = 0.1
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        any_loop.call_soon(time.sleep, 0.15)
        any_loop.call_soon(any_loop.stop)
        run_forever_with_watchdog(any_loop)
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    slow = [m for m in msgs if SLOW_CALLBACK_RE.search(m)]
    assert len(slow) == 1, msgs
    assert "sleep(0.15)" in slow[0]
    seconds = float(re.search(r"took (\d+\.\d+) seconds", slow[0]).group(1))
    assert seconds >= 0.14


def test_fast_callbacks_are_not_logged(any_loop, caplog):
    any_loop.set_debug(True)
    any_loop.slow_callback_duration = 1.0
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        for _ in range(10):
            any_loop.call_soon(int)
        any_loop.call_soon(any_loop.stop)
        run_forever_with_watchdog(any_loop)
    assert not [r for r in caplog.records if SLOW_CALLBACK_RE.search(r.getMessage())]


def test_slow_callback_is_not_logged_without_debug(any_loop, caplog):
    any_loop.slow_callback_duration = 0.01
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        any_loop.call_soon(time.sleep, 0.05)
        any_loop.call_soon(any_loop.stop)
        run_forever_with_watchdog(any_loop)
    assert not [r for r in caplog.records if SLOW_CALLBACK_RE.search(r.getMessage())]


@pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at"])
def test_non_threadsafe_call_from_another_thread_is_refused_in_debug_mode(any_loop, method):
    any_loop.set_debug(True)
    outcome = []

    def other_thread():
        try:
            if method == "call_soon":
                any_loop.call_soon(int)
            elif method == "call_later":
                any_loop.call_later(0, int)
            else:
                any_loop.call_at(0, int)
        except RuntimeError as e:
            outcome.append(str(e))
        else:
            outcome.append("no error")
        # This one is allowed from any thread.
        any_loop.call_soon_threadsafe(any_loop.stop)

    run_forever_with_thread(any_loop, other_thread)
    (msg,) = outcome
    assert msg.startswith("Non-thread-safe operation invoked on an event loop other than")


def test_call_soon_from_another_thread_is_not_checked_without_debug(any_loop):
    """The check is a debug-mode aid; without it asyncio does not look."""
    outcome = []

    def other_thread():
        try:
            any_loop.call_soon(int)
        except RuntimeError as e:  # pragma: no cover - that would be the bug
            outcome.append(str(e))
        else:
            outcome.append("accepted")
        any_loop.call_soon_threadsafe(any_loop.stop)

    run_forever_with_thread(any_loop, other_thread)
    assert outcome == ["accepted"]


def _scheduled_here(loop):
    return loop.call_soon(int), loop.call_later(10, int), loop.call_at(loop.time() + 10, int)


def test_handles_record_their_source_traceback_in_debug_mode(any_loop):
    any_loop.set_debug(True)
    for h in _scheduled_here(any_loop):
        tb = h._source_traceback
        assert isinstance(tb, list)
        # The last frame is the caller of call_soon/call_later/call_at.
        assert tb[-1].name == "_scheduled_here"
        assert tb[-1].filename == __file__
        assert f"created at {__file__}:" in repr(h)
        h.cancel()


def test_handles_have_no_source_traceback_without_debug(any_loop):
    for h in _scheduled_here(any_loop):
        assert h._source_traceback is None
        assert "created at" not in repr(h)
        h.cancel()


def test_exception_context_has_source_traceback_in_debug_mode(any_loop):
    any_loop.set_debug(True)
    contexts = []
    any_loop.set_exception_handler(lambda loop, ctx: contexts.append(ctx))

    def fail():
        raise ValueError("x")

    any_loop.call_soon(fail)
    any_loop.call_soon(any_loop.stop)
    run_forever_with_watchdog(any_loop)
    (ctx,) = contexts
    tb = ctx["source_traceback"]
    assert isinstance(tb, list)
    assert tb[-1].name == "test_exception_context_has_source_traceback_in_debug_mode"


def test_default_handler_shows_the_running_handles_origin_in_debug_mode(any_loop, caplog, request):
    """An error reported while a callback runs (here explicitly) is logged
    with where that callback's handle was created ('handle_traceback')."""
    any_loop.set_debug(True)
    current = []

    def callback():
        current.append(any_loop._current_handle)
        any_loop.call_exception_handler({"message": "reported from a callback"})

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        handle = any_loop.call_soon(callback)
        any_loop.call_soon(any_loop.stop)
        run_forever_with_watchdog(any_loop)
    (msg,) = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert msg.startswith("reported from a callback")
    assert "handle_traceback: Handle created at (most recent call last):" in msg
    assert current == [handle]
    assert any_loop._current_handle is None


def test_never_awaited_coroutine_origin_is_tracked_in_debug_mode(any_loop):
    """run_forever turns on coroutine origin tracking in debug mode."""
    any_loop.set_debug(True)

    async def coro():
        pass

    async def main():
        c = coro()
        origin = c.cr_origin
        c.close()
        return origin

    origin = any_loop.run_until_complete(main())
    assert origin, "cr_origin is recorded only with origin tracking on"
    assert sys.get_coroutine_origin_tracking_depth() == 0  # reset after the run


def test_debug_mode_reports_a_never_retrieved_future_with_its_origin(any_loop):
    import gc

    any_loop.set_debug(True)
    contexts = []
    any_loop.set_exception_handler(lambda loop, ctx: contexts.append(ctx))

    fut = any_loop.create_future()
    fut.set_exception(ValueError("unseen"))
    del fut
    gc.collect()
    (ctx,) = contexts
    assert ctx["message"] == "Future exception was never retrieved"
    assert "source_traceback" in ctx


def test_asyncio_run_debug_flag_reaches_the_loop():
    import ferroloop

    async def main():
        loop = asyncio.get_running_loop()
        return loop.get_debug(), loop.slow_callback_duration

    debug, slow = ferroloop.run(main(), debug=True)
    assert debug is True
    assert slow == pytest.approx(0.1)
