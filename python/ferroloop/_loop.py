"""`ferroloop.Loop`: the Rust core plus asyncio's own Unix loop services.

The class is ``Loop(CoreLoop, asyncio SelectorEventLoop)``. `CoreLoop`
(Rust, first in the MRO) owns the hot path: the ready queue, timers, the
epoll poller and the run loop, and the scheduling methods. Everything that
asyncio builds *on top of* a loop's scheduling and fd-readiness primitives
(tasks, run_until_complete, exception handler, executors, DNS, sock_*
methods, transports, pipes, subprocesses, signals) is inherited from the
running CPython's asyncio, so its behaviour and error messages are that
version's exactly. ARCHITECTURE.md says which layer owns what.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import selectors
import socket
import sys
import threading
import weakref
from asyncio import base_events, events, selector_events, unix_events
from typing import TYPE_CHECKING

from ._factories import TransportFactories
from ._ferroloop import CoreLoop, SockWaiter
from ._ferroloop import sock_recv as _native_sock_recv
from ._ferroloop import sock_recv_into as _native_sock_recv_into
from ._ferroloop import sock_sendall as _native_sock_sendall
from ._subprocess import SubprocessServices
from ._telemetry import Watchdog, check_threshold, threshold_from_env

if TYPE_CHECKING:
    from . import _stats

_check_ssl_socket = base_events._check_ssl_socket
_asyncio_sock_recv = selector_events.BaseSelectorEventLoop.sock_recv
_asyncio_sock_recv_into = selector_events.BaseSelectorEventLoop.sock_recv_into
_asyncio_sock_sendall = selector_events.BaseSelectorEventLoop.sock_sendall
_core_call_soon_threadsafe = CoreLoop.call_soon_threadsafe
_accept_connection2 = selector_events.BaseSelectorEventLoop._accept_connection2

__all__ = ["Loop"]


class _SelectorView(selectors.BaseSelector):
    """A read-only `selectors` view of the core's fd table.

    asyncio's selector transports ask `loop._selector.get_key(fd)` in their
    repr; registration itself goes through the core's `_add_reader` & co.
    """

    def __init__(self, loop: Loop) -> None:
        self._loop = weakref.ref(loop)

    def _key(self, fd: int) -> selectors.SelectorKey | None:
        loop = self._loop()
        found = None if loop is None or loop.is_closed() else loop._fd_key(fd)
        if found is None:
            return None
        mask, reader, writer = found
        return selectors.SelectorKey(fd, fd, mask, (reader, writer))

    def register(self, fileobj, events, data=None):
        raise NotImplementedError("ferroloop registers fds through loop.add_reader/add_writer")

    def unregister(self, fileobj):
        raise NotImplementedError("ferroloop registers fds through loop.add_reader/add_writer")

    def select(self, timeout=None):
        raise NotImplementedError("ferroloop's core polls; the selector view does not")

    def get_key(self, fileobj):
        fd = selectors._fileobj_to_fd(fileobj)
        key = self._key(fd)
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        return key

    def get_map(self):
        loop = self._loop()
        fds = [] if loop is None or loop.is_closed() else loop._fds()
        return {fd: key for fd in fds if (key := self._key(fd)) is not None}

    def close(self) -> None:
        pass


_Socket = socket.socket


def _check_socket(sock) -> None:
    """asyncio's checks on a sock_* argument; a blocking socket is refused in
    every mode (asyncio checks only in debug mode; it would hang the loop)."""
    _check_ssl_socket(sock)
    if sock.gettimeout() != 0:
        raise ValueError("the socket must be non-blocking")


async def _wait(waiter: SockWaiter):
    """Await a native sock_* call that could not complete at once; if the
    awaiting task is cancelled (or fails), stop watching the fd now."""
    try:
        return await waiter.fut
    except BaseException:
        waiter.cancel()
        raise


def _nonblocking_only(name: str):
    """asyncio's own sock_* coroutine, behind `_check_socket`."""
    impl = getattr(selector_events.BaseSelectorEventLoop, name)

    @functools.wraps(impl)
    async def method(self, sock, *args, **kwargs):
        _check_socket(sock)
        return await impl(self, sock, *args, **kwargs)

    return method


class Loop(CoreLoop, TransportFactories, SubprocessServices, unix_events.SelectorEventLoop):
    """An asyncio event loop whose core runs in Rust."""

    _slow_threshold: float | None = None
    _slow_watchdog: Watchdog | None = None

    def __init__(self) -> None:
        threshold = threshold_from_env()  # FERROLOOP_SLOW_CALLBACK_MS
        unix_events.SelectorEventLoop.__init__(self, _SelectorView(self))
        self._outer_context = contextvars.Context()
        self._set_internal_fd(self._ssock.fileno())
        if threshold is not None:
            self.set_slow_callback_threshold(threshold)

    if hasattr(base_events.BaseEventLoop, "_run_forever_setup"):  # 3.13+

        def run_forever(self) -> None:
            """Run until stop() is called."""
            self._run_forever_setup()
            try:
                self._run_until_stopped()
            finally:
                self._run_forever_cleanup()

    else:

        def run_forever(self) -> None:
            """Run until stop() is called."""
            self._check_closed()
            self._check_running()
            self._set_coroutine_origin_tracking(self._debug)
            old_agen_hooks = sys.get_asyncgen_hooks()
            try:
                self._thread_id = threading.get_ident()
                sys.set_asyncgen_hooks(
                    firstiter=self._asyncgen_firstiter_hook,
                    finalizer=self._asyncgen_finalizer_hook,
                )
                events._set_running_loop(self)
                self._run_until_stopped()
            finally:
                self._stopping = False
                self._thread_id = None
                events._set_running_loop(None)
                self._set_coroutine_origin_tracking(False)
                sys.set_asyncgen_hooks(*old_agen_hooks)

    def close(self) -> None:
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        self._stop_watchdog()
        super().close()
        self._close_core()

    # -- telemetry (ferroloop only; docs/telemetry.md) ------------------

    def stats(self) -> _stats.LoopStats:
        """A snapshot of what the loop did since it was created or
        `reset_stats()` was called: iterations, callbacks, timers, polls,
        time blocked and running callbacks, transport bytes and accepted
        connections, and the loop lag (p50/p99/max)."""
        from ._stats import LoopStats  # dataclasses: imported on first use

        return LoopStats._from_raw(self._stats())

    def reset_stats(self) -> None:
        """Start counting `stats()` again from zero."""
        self._reset_stats()

    def set_slow_callback_threshold(self, seconds: float | None) -> None:
        """Log (logger "ferroloop", WARNING) every callback or task step that
        runs longer than `seconds`, with the task and the line it blocked
        at; None turns the reports off (the default). Works without debug
        mode. FERROLOOP_SLOW_CALLBACK_MS sets it for every new loop."""
        self._check_closed()
        seconds = check_threshold(seconds)
        self._stop_watchdog()
        self._set_slow_threshold(seconds or 0.0)
        self._slow_threshold = seconds
        if seconds is not None:
            self._slow_watchdog = Watchdog(self, seconds)

    def get_slow_callback_threshold(self) -> float | None:
        """The slow-callback threshold in seconds, or None when reports are off."""
        return self._slow_threshold

    def _stop_watchdog(self) -> None:
        watchdog, self._slow_watchdog = self._slow_watchdog, None
        if watchdog is not None:
            watchdog.stop()

    def _accept_connection2(self, *args, **kwargs):
        # asyncio's accept loop calls this once per accepted socket, for
        # the coroutine that makes its transport: counted for stats().
        self._record_accepted()
        return _accept_connection2(self, *args, **kwargs)

    if hasattr(events, "_ThreadSafeHandle"):  # 3.14+

        def call_soon_threadsafe(self, callback, *args, context=None):
            """Like call_soon(), but thread-safe; the handle (asyncio's
            `_ThreadSafeHandle`) cannot be cancelled from another thread
            while its callback runs (cancel() waits for it)."""
            self._check_closed()
            # Callability is checked in every mode, as the core does.
            if self._debug or not callable(callback):
                self._check_callback(callback, "call_soon_threadsafe")
            handle = events._ThreadSafeHandle(callback, args, self, context)
            # The core runs the handle's own _run (its lock, its cancellation
            # check, its error report), which enters the handle's context;
            # the core's handle enters an empty one of the loop's (never the
            # same object twice, and no copy of the caller's per call).
            _core_call_soon_threadsafe(self, handle._run, context=self._outer_context)
            if handle._source_traceback:
                del handle._source_traceback[-1]
            if handle._source_traceback:
                del handle._source_traceback[-1]
            return handle

    # -- add_reader & co: asyncio's, plus the file objects they were given --
    # A socket registered by object and closed since (fileno() == -1) is
    # still found by that object, as asyncio's selector finds it (anyio
    # removes its reader after closing the socket).

    _fileobjs: dict[int, object] | None = None

    def add_reader(self, fd, callback, *args) -> None:
        """Call callback(*args) whenever fd (an int or an object with a
        fileno() method) is readable."""
        self._ensure_fd_no_transport(fd)
        self._add_reader(fd, callback, *args)
        self._remember_fileobj(fd)

    def add_writer(self, fd, callback, *args) -> None:
        """Call callback(*args) whenever fd is writable."""
        self._ensure_fd_no_transport(fd)
        self._add_writer(fd, callback, *args)
        self._remember_fileobj(fd)

    def remove_reader(self, fd) -> bool:
        """Stop watching fd for reading; True if it was watched."""
        self._ensure_fd_no_transport(fd)
        return self._remove_fd_callback(fd, self._remove_reader)

    def remove_writer(self, fd) -> bool:
        """Stop watching fd for writing; True if it was watched."""
        self._ensure_fd_no_transport(fd)
        return self._remove_fd_callback(fd, self._remove_writer)

    def _remember_fileobj(self, fileobj) -> None:
        # As a selector key, the first object registered for an fd stays
        # until the fd is removed in both directions.
        if isinstance(fileobj, int):
            return
        if self._fileobjs is None:
            self._fileobjs = {}
        self._fileobjs.setdefault(selectors._fileobj_to_fd(fileobj), fileobj)

    def _remove_fd_callback(self, fileobj, remove) -> bool:
        fileobjs = self._fileobjs
        if isinstance(fileobj, int) or not fileobjs:
            fd = fileobj
        else:
            try:
                fd = selectors._fileobj_to_fd(fileobj)
            except ValueError:
                # Closed since it was registered: find it by the object.
                found = [fd for fd, obj in fileobjs.items() if obj is fileobj]
                if not found:
                    raise
                fd = found[0]
        removed = remove(fd)
        if fileobjs and fd in fileobjs and self._fd_key(fd) is None:
            del fileobjs[fd]  # gone in both directions
        return removed

    # CoreLoop.create_task's path for task factories and debug mode.
    _create_task_py = base_events.BaseEventLoop.create_task

    def _add_callback(self, handle) -> None:
        # asyncio's signal path hands us its own events.Handle objects.
        if not handle._cancelled:
            self.call_soon(handle._run)

    # The hot three are native (ferroloop._ferroloop.sock_*) for plain
    # sockets: the syscall is tried at once, and only a socket that is not
    # ready costs a future. A socket.socket subclass takes asyncio's path,
    # which calls the socket's own recv/recv_into/send (as asyncio does).

    async def sock_recv(self, sock, n):
        """Receive up to n bytes from sock (a non-blocking socket)."""
        if type(sock) is not _Socket or sock.gettimeout() != 0:
            _check_socket(sock)  # raises, unless a socket subclass that is fine
            # A subclass may override its methods: asyncio's path calls them.
            return await _asyncio_sock_recv(self, sock, n)
        result = _native_sock_recv(self, sock, n)
        if type(result) is SockWaiter:
            return await _wait(result)
        return result

    async def sock_recv_into(self, sock, buf):
        """Receive into buf from sock; return the number of bytes received."""
        if type(sock) is not _Socket or sock.gettimeout() != 0:
            _check_socket(sock)  # raises, unless a socket subclass that is fine
            # A subclass may override its methods: asyncio's path calls them.
            return await _asyncio_sock_recv_into(self, sock, buf)
        result = _native_sock_recv_into(self, sock, buf)
        if type(result) is SockWaiter:
            return await _wait(result)
        return result

    async def sock_sendall(self, sock, data):
        """Send all of data to sock; return None once it is all sent."""
        if type(sock) is not _Socket or sock.gettimeout() != 0:
            _check_socket(sock)  # raises, unless a socket subclass that is fine
            # A subclass may override its methods: asyncio's path calls them.
            return await _asyncio_sock_sendall(self, sock, data)
        result = _native_sock_sendall(self, sock, data)
        if type(result) is SockWaiter:
            return await _wait(result)
        return result

    for _name in (
        "sock_recvfrom",
        "sock_recvfrom_into",
        "sock_sendto",
        "sock_connect",
        "sock_accept",
    ):
        if hasattr(selector_events.BaseSelectorEventLoop, _name):
            locals()[_name] = _nonblocking_only(_name)
    del _name


assert issubclass(Loop, asyncio.AbstractEventLoop)
