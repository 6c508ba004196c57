"""Helpers shared by the tests (imported as a plain module)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import subprocess
import sys
import threading
import time
import warnings

import ferroloop

LOOP_KINDS = ("ferroloop", "asyncio")


def make_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "ferroloop":
        return ferroloop.new_event_loop()
    # Stock asyncio's Unix loop, independent of whatever policy is installed.
    return asyncio.SelectorEventLoop()


def open_fd_count() -> int:
    """How many file descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


def is_ferroloop(loop: asyncio.AbstractEventLoop) -> bool:
    return isinstance(loop, ferroloop.Loop)


def scheduled_count(loop: asyncio.AbstractEventLoop) -> int:
    """Timers the loop still holds (cancelled ones not yet purged included)."""
    if is_ferroloop(loop):
        return loop._core_counts()[1]
    return len(loop._scheduled)


def registered_fds(loop: asyncio.AbstractEventLoop) -> set[int]:
    """The fds the loop polls (its self-pipe included)."""
    return set(loop._selector.get_map())


def answering_task_protocol(loop: asyncio.AbstractEventLoop) -> type[asyncio.Protocol]:
    """A server protocol that answers from a task, as asyncio's streams do:
    `connection_made` starts the task, which arms the future that
    `data_received` completes and echoes each message, until b"end"."""

    class AnsweringTask(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.waiter = None
            loop.create_task(self.answer())

        def data_received(self, data):
            self.waiter.set_result(data)

        async def answer(self):
            while True:
                self.waiter = loop.create_future()
                data = await self.waiter
                self.transport.write(data)
                if data == b"end":
                    return

    return AnsweringTask


async def sleep_until_cancelled(cancelled: list) -> None:
    """Sleeps for an hour; appends True to cancelled when it is cancelled
    (and lets the cancellation through)."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        cancelled.append(True)
        raise


def run_forever_with_watchdog(loop: asyncio.AbstractEventLoop, timeout: float = 10.0) -> None:
    """run_forever, with a timer that stops the loop and fails the test if
    the test's own stop condition never arrives."""
    fired = []

    def watchdog():
        fired.append(True)
        loop.stop()

    timer = loop.call_later(timeout, watchdog)
    try:
        loop.run_forever()
    finally:
        timer.cancel()
    assert not fired, f"the loop was stopped by the {timeout}s watchdog"


def python_child(code: str, env: dict[str, str] | None = None, check: bool = False):
    """Runs `python -c code` (this interpreter; env, or this process's
    environment) for at most 60 s; returns the CompletedProcess, its output
    captured as text."""
    return subprocess.run(
        [sys.executable, "-c", code],
        check=check,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def run_forever_with_thread(
    loop: asyncio.AbstractEventLoop, target, timeout: float = 10.0
) -> float:
    """Runs the loop (run_forever_with_watchdog) with target running in a
    thread that the loop starts; joins the thread. Returns how long the loop
    ran, in seconds: target is what stops it."""
    thread = threading.Thread(target=target)
    try:
        loop.call_soon(thread.start)
        t0 = time.monotonic()
        run_forever_with_watchdog(loop, timeout)
        return time.monotonic() - t0
    finally:
        thread.join()


def run_in_new_loop(kind: str, main, timeout: float):
    """A fresh loop of that kind runs the coroutine main() (within timeout
    seconds) and is closed; returns main's result. For ResultThread."""
    loop = make_loop(kind)
    try:
        return loop.run_until_complete(asyncio.wait_for(main(), timeout))
    finally:
        loop.close()


class ResultThread(threading.Thread):
    """A thread whose target's return value, or exception, result() hands
    back to the thread that waits for it."""

    def __init__(self, target, *args):
        super().__init__()
        self._call = (target, args)
        self._outcome = None

    def run(self):
        target, args = self._call
        try:
            self._outcome = (True, target(*args))
        except BaseException as exc:  # noqa: BLE001 (re-raised by result())
            self._outcome = (False, exc)

    def result(self, timeout: float, hung: str = "the thread is still running"):
        self.join(timeout)
        assert not self.is_alive(), f"{hung} after {timeout}s"
        ok, value = self._outcome
        if not ok:
            raise value
        return value


# Python 3.13 shows a callback's arguments in reprs and messages only in
# debug mode; earlier versions always do.
ARGS_SHOWN_WITHOUT_DEBUG = sys.version_info < (3, 13)


@contextlib.contextmanager
def collected_warnings():
    """Collect garbage in the block; yields a list it fills, on exit, with
    `(category, message text)` of every warning raised. A recorded warning
    keeps its `source` (the object that warned) alive on 3.15; only the
    text and category are kept, and garbage is collected again after."""
    seen: list[tuple[type[Warning], str]] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield seen
        gc.collect()
    seen.extend((w.category, str(w.message)) for w in caught)
    del caught
    gc.collect()


def rss_bytes() -> int:
    """This process's resident set size, in bytes (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")
