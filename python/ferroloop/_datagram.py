"""ferroloop's datagram transport (UDP and Unix datagram sockets): asyncio's own
`_SelectorDatagramTransport` with the per-datagram paths of its native half,
`ferroloop._ferroloop.DatagramCore` (src/datagram.rs)."""

from __future__ import annotations

import socket
from asyncio import constants, selector_events, transports
from asyncio.log import logger

from ._ferroloop import DatagramCore

__all__ = ["DatagramTransport"]


_asyncio_datagram_sendto = selector_events._SelectorDatagramTransport.sendto


class DatagramTransport(selector_events._SelectorDatagramTransport, transports.DatagramTransport):
    """A UDP (or Unix datagram) transport: asyncio's own, with the per-datagram
    paths of a `ferroloop._ferroloop.DatagramCore`: `sendto` (every family)
    and the receive path (IPv4 and IPv6)."""

    def _python_sendto(self, data, addr=None):
        """asyncio's sendto, for the cases the core hands back (see
        datagram.rs). Once the connection is lost (the socket closed), an
        unconnected transport drops and counts the datagram as asyncio
        drops a connected one's: asyncio would call `sendto` on the socket
        it let go of and fail in `_fatal_error` through a loop that is gone."""
        if (
            self._sock is None
            and self._conn_lost
            and not self._address
            and isinstance(data, (bytes, bytearray, memoryview))
            and data
        ):
            if self._conn_lost >= constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger.warning("socket.send() raised exception.")
            self._conn_lost += 1
            return
        _asyncio_datagram_sendto(self, data, addr)

    # Once the core's bound method is dropped (connection lost), the same.
    sendto = _python_sendto

    def __init__(self, loop, sock, protocol, address=None, waiter=None, extra=None):
        try:
            connected = bool(sock.getpeername())
        except OSError:
            connected = False
        core = DatagramCore(self, sock.fileno(), sock.family, connected)
        # Instance attributes, so that a call runs no Python frame.
        self.sendto = core.sendto
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # Registered as the fd's reader by asyncio's __init__ and
            # resume_reading(), in place of the Python _read_ready.
            self._read_ready = core.read_ready
        super().__init__(loop, sock, protocol, address, waiter, extra)

    def _call_connection_lost(self, exc) -> None:
        try:
            super()._call_connection_lost(exc)
        finally:
            # The core's bound methods refer back to this transport: without
            # them a closed transport is freed by reference counting, and
            # asyncio's own methods serve whatever is still called on it.
            self.__dict__.pop("sendto", None)
            self.__dict__.pop("_read_ready", None)
