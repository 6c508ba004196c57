"""ferroloop's pipe transports: `ReadPipeTransport` / `WritePipeTransport`, the
transports of `connect_read_pipe` / `connect_write_pipe` and of every subprocess
pipe, whose per-event paths are their native halves
(`ferroloop._ferroloop.ReadPipeCore` / `WritePipeCore`, src/pipe.rs): `read()`
into the per-thread buffer, then `data_received`; `write()` at once and
`writev()` of what is buffered, flow control, and the close paths of asyncio's
`_UnixReadPipeTransport` / `_UnixWritePipeTransport`, step for step. What is
rare stays here: construction (the file-kind checks), `repr`, `__del__`,
`_fatal_error`'s reporting and closing the pipe.
"""

from __future__ import annotations

import errno
import os
import selectors
import stat
import sys
import warnings
from asyncio import futures, transports
from asyncio.log import logger

from ._ferroloop import ReadPipeCore, WritePipeCore
from ._transport_common import CoreTransport, CoreWrites

__all__ = ["ReadPipeTransport", "WritePipeTransport"]


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
