"""Errors raised by callbacks: the exception handler, logging, and the
BaseExceptions (KeyboardInterrupt, SystemExit) that must escape the loop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time

import pytest
from support import ARGS_SHOWN_WITHOUT_DEBUG, run_forever_with_watchdog


class Boom(Exception):
    pass


def raise_boom(msg="boom"):
    raise Boom(msg)


def test_callback_error_goes_to_the_exception_handler(any_loop):
    contexts = []
    seen = []
    any_loop.set_exception_handler(lambda loop, ctx: contexts.append((loop, ctx)))
    h = any_loop.call_soon(raise_boom, "first")
    any_loop.call_soon(seen.append, "still running")
    any_loop.call_soon(any_loop.stop)
    run_forever_with_watchdog(any_loop)

    assert seen == ["still running"]
    ((loop, ctx),) = contexts
    assert loop is any_loop
    assert ctx["message"].startswith("Exception in callback")
    shown = "raise_boom('first')" if ARGS_SHOWN_WITHOUT_DEBUG else "raise_boom()"
    assert shown in ctx["message"]
    assert isinstance(ctx["exception"], Boom)
    assert ctx["exception"].args == ("first",)
    assert ctx["handle"] is h
    assert "source_traceback" not in ctx  # debug mode only


def test_timer_callback_error_goes_to_the_exception_handler(any_loop):
    contexts = []
    any_loop.set_exception_handler(lambda loop, ctx: contexts.append(ctx))
    h = any_loop.call_later(0.001, raise_boom)
    any_loop.call_later(0.01, any_loop.stop)
    run_forever_with_watchdog(any_loop)
    (ctx,) = contexts
    assert ctx["message"].startswith("Exception in callback")
    assert isinstance(ctx["exception"], Boom)
    assert ctx["handle"] is h


def test_reader_callback_error_goes_to_the_exception_handler(any_loop):
    contexts = []
    a, b = socket.socketpair()
    try:

        def on_readable():
            a.recv(10)
            any_loop.stop()
            raise Boom("reader")

        any_loop.set_exception_handler(lambda loop, ctx: contexts.append(ctx))
        any_loop.add_reader(a, on_readable)
        b.send(b"x")
        run_forever_with_watchdog(any_loop)
        any_loop.remove_reader(a)
    finally:
        a.close()
        b.close()
    (ctx,) = contexts
    assert ctx["message"].startswith("Exception in callback")
    assert str(ctx["exception"]) == "reader"


def test_task_error_reaches_the_handler_when_never_retrieved(any_loop):
    import gc

    contexts = []
    any_loop.set_exception_handler(lambda loop, ctx: contexts.append(ctx))

    async def failing():
        raise Boom("task")

    task = any_loop.create_task(failing())
    any_loop.run_until_complete(asyncio.sleep(0.01))
    assert task.done()
    del task
    gc.collect()
    assert [c["message"] for c in contexts] == ["Task exception was never retrieved"]
    assert isinstance(contexts[0]["exception"], Boom)


def test_get_and_set_exception_handler(any_loop):
    assert any_loop.get_exception_handler() is None

    def handler(loop, ctx):
        pass

    any_loop.set_exception_handler(handler)
    assert any_loop.get_exception_handler() is handler
    any_loop.set_exception_handler(None)
    assert any_loop.get_exception_handler() is None
    with pytest.raises(TypeError):
        any_loop.set_exception_handler(42)


def test_default_handler_logs_to_the_asyncio_logger(any_loop, caplog):
    seen = []
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        any_loop.call_soon(raise_boom, "logged")
        any_loop.call_soon(seen.append, "after")
        any_loop.call_soon(any_loop.stop)
        run_forever_with_watchdog(any_loop)
    assert seen == ["after"]
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    (rec,) = records
    assert rec.levelno == logging.ERROR
    assert rec.getMessage().startswith("Exception in callback")
    shown = "raise_boom('logged')" if ARGS_SHOWN_WITHOUT_DEBUG else "raise_boom()"
    assert shown in rec.getMessage()
    assert rec.exc_info is not None and rec.exc_info[0] is Boom


def test_default_exception_handler_can_be_called_by_a_custom_one(any_loop, caplog):
    def handler(loop, ctx):
        loop.default_exception_handler({**ctx, "message": "wrapped: " + ctx["message"]})

    any_loop.set_exception_handler(handler)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        any_loop.call_soon(raise_boom)
        any_loop.call_soon(any_loop.stop)
        run_forever_with_watchdog(any_loop)
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert len(msgs) == 1
    assert msgs[0].startswith("wrapped: Exception in callback")


def test_a_failing_exception_handler_is_logged_and_the_loop_survives(any_loop, caplog):
    seen = []

    def bad_handler(loop, ctx):
        raise RuntimeError("handler broke")

    any_loop.set_exception_handler(bad_handler)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        any_loop.call_soon(raise_boom)
        any_loop.call_soon(seen.append, "after")
        any_loop.call_soon(any_loop.stop)
        run_forever_with_watchdog(any_loop)
    assert seen == ["after"]
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert any("Unhandled error in exception handler" in m for m in msgs), msgs


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exceptions_escape_run_forever_and_the_loop_survives(any_loop, exc_type):
    seen = []

    def interrupt():
        raise exc_type()

    any_loop.call_soon(seen.append, 1)
    any_loop.call_soon(interrupt)
    any_loop.call_soon(seen.append, 2)
    any_loop.call_soon(seen.append, 3)
    with pytest.raises(exc_type):
        any_loop.run_forever()
    assert seen == [1]
    assert not any_loop.is_running()
    assert not any_loop.is_closed()
    # The callbacks that were not reached run, in order, on the next run.
    any_loop.call_soon(any_loop.stop)
    run_forever_with_watchdog(any_loop)
    assert seen == [1, 2, 3]
    # And the loop is fully usable.
    assert any_loop.run_until_complete(asyncio.sleep(0.001, "ok")) == "ok"


@pytest.fixture
def default_sigint():
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def test_sigint_interrupts_a_loop_blocked_in_the_poller(any_loop, default_sigint):
    """Ctrl-C while the loop waits for I/O: KeyboardInterrupt, at once."""
    sender = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    any_loop.call_soon(sender.start)
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_forever_with_watchdog(any_loop, timeout=10)
    finally:
        sender.join()
    assert time.monotonic() - t0 < 3.0
    assert not any_loop.is_running()
    assert any_loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"


def test_keyboard_interrupt_in_a_timer_escapes(any_loop):
    def interrupt():
        raise KeyboardInterrupt

    any_loop.call_later(0.001, interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_forever_with_watchdog(any_loop)
    assert not any_loop.is_running()


def test_keyboard_interrupt_in_a_task_escapes_run_until_complete(any_loop):
    async def main():
        await asyncio.sleep(0)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        any_loop.run_until_complete(main())
    assert not any_loop.is_running()
    assert any_loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"
