"""What ferroloop's native transports share on the Python side (src/transport_common.rs
is the Rust side): the methods and private names their cores (`self._core`) serve
as is, `_fatal_error`'s report, and the write-buffer marks with asyncio's rule.
`ferroloop._stream.SocketTransport` and `ferroloop._pipe`'s transports are built on
these."""

from __future__ import annotations

import math
from asyncio.log import logger

__all__ = ["CoreTransport", "CoreWrites", "WriteBufferLimits"]


class WriteBufferLimits:
    """`set_write_buffer_limits` / `get_write_buffer_limits` of a transport
    whose flow control is its native core's: asyncio's rule and error for
    the marks (any real numbers, as `_FlowControlMixin` takes them), and the
    marks as given back; the core compares byte counts with their floors."""

    _write_buffer_marks = (16 * 1024, 64 * 1024)  # (low, high): the cores' defaults

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._write_buffer_marks = (low, high)
        # size > high <=> size > floor(high) for a byte count; beyond 2**62
        # a mark is never reached either way.
        self._core.set_write_buffer_limits(
            min(math.floor(high), 1 << 62), min(math.floor(low), 1 << 62)
        )

    def get_write_buffer_limits(self):
        return self._write_buffer_marks


class CoreTransport:
    """What the socket and pipe transports share: the `asyncio` transport
    methods and private names their native core (`self._core`) serves as
    is, and `_fatal_error`'s report."""

    def get_protocol(self):
        return self._core.get_protocol()

    def is_closing(self) -> bool:
        return self._core.is_closing()

    @property
    def _protocol(self):
        return self._core.get_protocol()

    @property
    def _closing(self) -> bool:
        return self._core.is_closing()

    def _report_fatal_error(self, loop, exc, message, quiet: bool) -> None:
        """asyncio's `_fatal_error` report: a debug log if `quiet` (an error
        that is the connection's fate, not a bug), else the loop's
        exception handler."""
        if quiet:
            if loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            loop.call_exception_handler(
                {
                    "message": message,
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )


class CoreWrites(WriteBufferLimits):
    """The write side served by a native core with a write buffer:
    `write` / `writelines` (set per instance to the core's own methods),
    the buffer size and asyncio's private names for it."""

    def write(self, data) -> None:  # replaced per instance by the core's
        self._core.write(data)

    def writelines(self, list_of_data) -> None:  # replaced per instance
        self._core.writelines(list_of_data)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self._core.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._core.get_write_buffer_size()

    @property
    def _conn_lost(self) -> int:
        return self._core._conn_lost

    @property
    def _protocol_paused(self) -> bool:
        return self._core._protocol_paused
