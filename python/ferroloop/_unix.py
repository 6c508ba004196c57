"""ferroloop's pipes and subprocesses (issue #6).

`UnixServices` is a mixin of `ferroloop.Loop` that replaces three of
asyncio's `unix_events.SelectorEventLoop` factories:

* `_make_read_pipe_transport` / `_make_write_pipe_transport`: the
  transports of `connect_read_pipe` / `connect_write_pipe` (and of every
  subprocess pipe) are `ReadPipeTransport` / `WritePipeTransport`, whose
  per-event paths are native (`ferroloop._ferroloop.ReadPipeCore` /
  `WritePipeCore`, src/pipe.rs): `read()` into the per-thread buffer, then
  `data_received`; `write()` at once and `writev()` of what is buffered,
  flow control, and the close paths of asyncio's `_UnixReadPipeTransport` /
  `_UnixWritePipeTransport`, step for step. What is rare stays here:
  construction (the file-kind checks), `repr`, `__del__`, `_fatal_error`'s
  reporting and closing the pipe.

* `_make_subprocess_transport`: asyncio's own `_UnixSubprocessTransport`
  (so `SubprocessTransport` behaviour and callback order are asyncio's),
  but the child's exit is watched by a pidfd in the loop's own poller, on
  every CPython version: no thread per child (3.10/3.11's default
  `ThreadedChildWatcher`), no policy child watcher, no DeprecationWarning
  (3.12+), from a loop in any thread. Where `os.pidfd_open` is missing or
  refused (Linux < 5.3, seccomp), asyncio's own code runs.
"""

from __future__ import annotations

import errno
import os
import selectors
import stat
import sys
import threading
import warnings
from asyncio import futures, transports, unix_events
from asyncio.log import logger

from ._ferroloop import ReadPipeCore, WritePipeCore
from ._transports import CoreTransport, CoreWrites

__all__ = ["ReadPipeTransport", "UnixServices", "WritePipeTransport", "can_use_pidfd"]


def can_use_pidfd() -> bool:
    """asyncio's (3.13) `can_use_pidfd`: pidfd_open exists and is allowed."""
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid(), 0))
    except OSError:  # ENOSYS (Linux < 5.3), EPERM (seccomp), ...
        return False
    return True


_CAN_USE_PIDFD = can_use_pidfd()

_SubprocessTransport = unix_events._UnixSubprocessTransport
# 3.14+: the per-loop watcher asyncio chooses when pidfds are unavailable.
_ThreadedWatcher = (
    getattr(unix_events, "_ThreadedChildWatcher", ()) if sys.version_info >= (3, 14) else ()
)


# -- pipes ---------------------------------------------------------------


def _repr(transport, fd: int, event: int) -> str:
    """asyncio's pipe transport repr: '<Class [closed|closing] fd=N
    polling|idle|open|closed [bufsize=N]>'."""
    info = [transport.__class__.__name__]
    if transport._pipe is None:
        info.append("closed")
    elif transport._closing:
        info.append("closing")
    info.append(f"fd={fd}")
    loop = transport._loop
    if transport._pipe is not None and loop is not None and not loop.is_closed():
        key = loop._fd_key(fd)
        mask = key[0] if key is not None else 0
        info.append("polling" if mask & event else "idle")
        if event == selectors.EVENT_WRITE:
            info.append(f"bufsize={transport.get_write_buffer_size()}")
    elif transport._pipe is not None:
        info.append("open")
    else:
        info.append("closed")
    return "<{}>".format(" ".join(info))


class _PipeTransport(CoreTransport):
    """What the read and write pipe transports share: construction from a
    pipe, `__del__`, the protocol, and letting go of the pipe."""

    # Read by __del__, which may run on a half-constructed object.
    _pipe = None

    def _open_pipe(self, loop, pipe, message: str) -> int:
        """Adopt `pipe` (a pipe, a FIFO, a socket or a character device,
        else ValueError(message)), non-blocking; its st_mode."""
        self._extra["pipe"] = pipe
        self._loop = loop
        fileno = pipe.fileno()
        mode = os.fstat(fileno).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
            self._fileno = None
            raise ValueError(message)
        self._pipe = pipe
        self._fileno = fileno
        os.set_blocking(fileno, False)
        return mode

    def __del__(self, _warn=warnings.warn) -> None:
        if self._pipe is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            # The core outlives us if a protocol kept `transport.write`: it
            # must not touch the fd number once the pipe is closed.
            core = self.__dict__.get("_core")
            if core is not None:
                core._detach()
            self._pipe.close()

    def set_protocol(self, protocol) -> None:
        self._core.set_protocol(protocol)

    def _log_closed_by_peer(self) -> None:  # the core calls it in debug mode
        logger.info("%r was closed by peer", self)

    def _call_connection_lost(self, exc) -> None:
        core = self._core
        try:
            protocol = core.get_protocol()
            if protocol is not None:
                protocol.connection_lost(exc)
        finally:
            core._detach()
            if self._pipe is not None:
                self._pipe.close()
                self._pipe = None
            self._loop = None


class ReadPipeTransport(_PipeTransport, transports.ReadTransport):
    """The read end of a pipe, a FIFO, a socket or a character device
    (asyncio's `_UnixReadPipeTransport`, with a native read path)."""

    max_size = 256 * 1024  # what one read() asks for, as in asyncio

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        super().__init__(extra)
        # asyncio's read and write pipe transports word this error apart.
        self._open_pipe(loop, pipe, "Pipe transport is for pipes/sockets only.")
        core = self._core = ReadPipeCore(loop, self._fileno, self, protocol)

        loop.call_soon(protocol.connection_made, self)
        # Only start reading once connection_made() has run.
        loop.call_soon(core._start_reading)
        if waiter is not None:
            # Only wake up the waiter once connection_made() has run.
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    def __repr__(self) -> str:
        return _repr(self, self._fileno, selectors.EVENT_READ)

    def is_reading(self) -> bool:
        return self._core.is_reading()

    def pause_reading(self) -> None:
        if self._core.pause_reading() and self._loop.get_debug():
            logger.debug("%r pauses reading", self)

    def resume_reading(self) -> None:
        if self._core.resume_reading() and self._loop.get_debug():
            logger.debug("%r resumes reading", self)

    def close(self) -> None:
        self._core.close()

    # -- asyncio's private names ----------------------------------------

    @property
    def _paused(self) -> bool:
        return self._core._paused

    def _read_ready(self) -> None:
        self._core._read_ready()

    def _close(self, exc) -> None:
        self._core._close(exc)

    def _fatal_error(self, exc, message="Fatal error on pipe transport") -> None:
        # asyncio's read pipe is quiet about EIO only (a pty's closed end);
        # its write pipe and socket transports about every OSError.
        quiet = isinstance(exc, OSError) and exc.errno == errno.EIO
        self._report_fatal_error(self._loop, exc, message, quiet)
        self._core._close(exc)


class WritePipeTransport(
    _PipeTransport, CoreWrites, transports._FlowControlMixin, transports.WriteTransport
):
    """The write end of a pipe, a FIFO, a socket or a character device
    (asyncio's `_UnixWritePipeTransport`, with native write paths).

    A `_FlowControlMixin` as asyncio's is; the flow control itself is the
    core's.
    """

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        # Not _FlowControlMixin.__init__: the write-buffer limits live in the core.
        transports.BaseTransport.__init__(self, extra)
        mode = self._open_pipe(
            loop, pipe, "Pipe transport is only for pipes, sockets and character devices"
        )
        core = self._core = WritePipeCore(loop, self._fileno, self, protocol)
        # The hot methods are the core's own: no Python frame per call.
        self.write = core.write
        self.writelines = core.writelines

        loop.call_soon(protocol.connection_made, self)
        # The reader trick: the fd of a pipe's (or socket's) write end turns
        # readable when the read end is closed. On AIX it only works for
        # sockets, as in asyncio.
        is_fifo = stat.S_ISFIFO(mode)
        if stat.S_ISSOCK(mode) or (is_fifo and not sys.platform.startswith("aix")):
            # Only start watching once connection_made() has run.
            loop.call_soon(core._start_watching_peer)
        if waiter is not None:
            # Only wake up the waiter once connection_made() has run.
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    def __repr__(self) -> str:
        return _repr(self, self._fileno, selectors.EVENT_WRITE)

    def close(self) -> None:
        # write_eof is all that is needed to close the write pipe.
        self._core.write_eof()

    def abort(self) -> None:
        self._core._close(None)

    # -- asyncio's private names ----------------------------------------

    @property
    def _high_water(self) -> int:
        return self._core.get_write_buffer_limits()[1]

    @property
    def _low_water(self) -> int:
        return self._core.get_write_buffer_limits()[0]

    def _read_ready(self) -> None:
        self._core._read_ready()

    def _write_ready(self) -> None:
        self._core._write_ready()

    def _close(self, exc=None) -> None:
        self._core._close(exc)

    def _fatal_error(self, exc, message="Fatal error on pipe transport") -> None:
        self._report_fatal_error(self._loop, exc, message, isinstance(exc, OSError))
        self._core._close(exc)


# -- child processes -------------------------------------------------------


def _waitpid_thread(loop, pid: int, transp) -> None:
    """ThreadedChildWatcher's wait, for the rare child a pidfd could not be
    opened for (out of fds, ...)."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        returncode = _returncode_reaped_elsewhere(pid, transp)
    else:
        returncode = os.waitstatus_to_exitcode(status)
    try:
        loop.call_soon_threadsafe(transp._process_exited, returncode)
    except RuntimeError:  # the loop was closed meanwhile
        _set_popen_returncode(transp._proc, returncode)


_P_PIDFD = getattr(os, "P_PIDFD", None)


def _reap_exited(pid: int, pidfd: int) -> int | None:
    """Reap the child if it has exited: its returncode, or None if it has
    not. Raises ChildProcessError if it was reaped elsewhere.

    Through the pidfd (`waitid(P_PIDFD)`), so that a child reaped elsewhere
    whose pid was reused by another of our children is never mistaken for
    it; `waitpid` only on kernels with pidfd_open but no P_PIDFD (5.3)."""
    if _P_PIDFD is not None:
        try:
            info = os.waitid(_P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            raise
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
        else:
            if info is None:
                return None
            return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
    wpid, status = os.waitpid(pid, os.WNOHANG)
    return os.waitstatus_to_exitcode(status) if wpid else None


def _set_popen_returncode(proc, returncode: int) -> None:
    # What Popen.poll() would have set had it reaped the child.
    if proc is not None and proc.returncode is None:
        proc.returncode = returncode


def _reap_orphan(pid: int, proc) -> None:
    """Wait for a child that outlived its loop (as 3.10/3.11's
    ThreadedChildWatcher does): no zombie is left, even while its Process
    object is kept."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return  # reaped by its Popen meanwhile
    _set_popen_returncode(proc, os.waitstatus_to_exitcode(status))


def _returncode_reaped_elsewhere(pid: int, transp) -> int:
    """The child was reaped by someone else (`Popen.poll()` through the
    transport's own `close()`, a `waitpid(-1)` elsewhere, SIGCHLD ignored):
    the Popen's returncode if it was the one, else 255 as asyncio says."""
    proc = transp._proc
    if proc is not None and proc.returncode is not None:
        return proc.returncode
    logger.warning(
        "child process pid %d exit status already read:  will report returncode 255",
        pid,
    )
    return 255


class UnixServices:
    """The pipe and subprocess factories of `ferroloop.Loop`."""

    # pidfd -> (pid, transport) of every child being watched; made on first use.
    _child_pidfds: dict[int, tuple[int, _SubprocessTransport]] | None = None

    # Keyword arguments a later asyncio may add are taken (and ignored): a
    # new one fails tests/test_asyncio_internals.py, not every pipe.

    def _make_read_pipe_transport(self, pipe, protocol, waiter=None, extra=None, **_later):
        return ReadPipeTransport(self, pipe, protocol, waiter, extra)

    def _make_write_pipe_transport(self, pipe, protocol, waiter=None, extra=None, **_later):
        return WritePipeTransport(self, pipe, protocol, waiter, extra)

    async def _make_subprocess_transport(
        self, protocol, args, shell, stdin, stdout, stderr, bufsize, extra=None, **kwargs
    ):
        # 3.14+ chooses a child watcher per loop (`_watcher`, by
        # `unix_events.can_use_pidfd()` at the loop's creation): a loop whose
        # asyncio chose threads keeps asyncio's own code, as before 3.14
        # where pidfds are missing.
        if not _CAN_USE_PIDFD or isinstance(getattr(self, "_watcher", None), _ThreadedWatcher):
            return await super()._make_subprocess_transport(
                protocol, args, shell, stdin, stdout, stderr, bufsize, extra=extra, **kwargs
            )
        waiter = self.create_future()
        transp = _SubprocessTransport(
            self,
            protocol,
            args,
            shell,
            stdin,
            stdout,
            stderr,
            bufsize,
            waiter=waiter,
            extra=extra,
            **kwargs,
        )
        self._watch_child(transp.get_pid(), transp)
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transp.close()
            await transp._wait()
            raise
        return transp

    def _watch_child(self, pid: int, transp) -> None:
        """Call `transp._process_exited(returncode)` (soon) once the child
        exits. The child is ours and not reaped before we wait for it, so
        its pid cannot be reused meanwhile: no race with a fast exit."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            # Already reaped by someone else.
            self.call_soon(transp._process_exited, _returncode_reaped_elsewhere(pid, transp))
            return
        except OSError:
            # EMFILE, ...: one waiting thread for this child.
            threading.Thread(
                target=_waitpid_thread,
                args=(self, pid, transp),
                name=f"ferroloop-waitpid-{pid}",
                daemon=True,
            ).start()
            return
        if self._child_pidfds is None:
            self._child_pidfds = {}
        self._child_pidfds[pidfd] = (pid, transp)
        try:
            self._add_reader(pidfd, self._child_exited, pid, pidfd, transp)
        except BaseException:
            del self._child_pidfds[pidfd]
            os.close(pidfd)
            raise

    def _child_exited(self, pid: int, pidfd: int, transp) -> None:
        """The pidfd is readable: the child has exited; reap it."""
        try:
            returncode = _reap_exited(pid, pidfd)
        except ChildProcessError:
            returncode = _returncode_reaped_elsewhere(pid, transp)
        else:
            if returncode is None:
                return  # not exited after all: keep watching
        self._remove_reader(pidfd)
        del self._child_pidfds[pidfd]
        os.close(pidfd)
        # As asyncio's child watcher callback: the transport learns it on
        # the next iteration.
        self.call_soon(transp._process_exited, returncode)

    def _close_child_pidfds(self) -> None:
        """Stop watching children (the loop is closing). A child that has
        exited is reaped now; one still running is waited for by a thread
        of its own, as 3.10/3.11's ThreadedChildWatcher does (3.12+'s
        PidfdChildWatcher would leave a zombie until its Popen is
        collected). Its transport is not told: its loop is closed."""
        pidfds, self._child_pidfds = self._child_pidfds, None
        for pidfd, (pid, transp) in (pidfds or {}).items():
            self._remove_reader(pidfd)
            try:
                returncode = _reap_exited(pid, pidfd)
            except ChildProcessError:
                continue  # reaped elsewhere
            finally:
                os.close(pidfd)
            if returncode is not None:
                _set_popen_returncode(transp._proc, returncode)
                continue
            threading.Thread(
                target=_reap_orphan,
                args=(pid, transp._proc),
                name=f"ferroloop-reap-{pid}",
                daemon=True,
            ).start()

    def close(self) -> None:
        if not self.is_running() and not self.is_closed():
            self._close_child_pidfds()
        super().close()
