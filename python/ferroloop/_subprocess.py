"""ferroloop's subprocesses: `SubprocessServices`, the mixin of `ferroloop.Loop`
whose `_make_subprocess_transport` makes asyncio's own `_UnixSubprocessTransport`
(so `SubprocessTransport` behaviour and callback order are asyncio's) over
ferroloop's pipe transports, but watches the child's exit with a pidfd in the
loop's own poller, on every CPython version: no thread per child (3.10/3.11's
default `ThreadedChildWatcher`), no policy child watcher, no DeprecationWarning
(3.12+), from a loop in any thread. Where `os.pidfd_open` is missing or refused
(Linux < 5.3, seccomp), asyncio's own code runs.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
from asyncio import unix_events
from asyncio.log import logger

__all__ = ["SubprocessServices", "can_use_pidfd"]


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


class SubprocessServices:
    """The subprocess factory of `ferroloop.Loop` and its child watching."""

    # pidfd -> (pid, transport) of every child being watched; made on first use.
    _child_pidfds: dict[int, tuple[int, _SubprocessTransport]] | None = None

    # Keyword arguments a later asyncio may add are taken (and ignored): a
    # new one fails tests/test_asyncio_internals.py, not every pipe.

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
