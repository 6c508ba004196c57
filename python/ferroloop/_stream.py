"""ferroloop's stream socket transport (TCP and Unix): `SocketTransport`, an
`asyncio.Transport` whose per-event work (reading into the protocol, writing,
flow control, the close / abort / half-close state machine) is done by its
native half, `ferroloop._ferroloop.StreamCore` (src/stream.rs).

What stays here is what asyncio users and asyncio's own services touch
rarely, and what differs between CPython versions: construction, `repr`,
`get_extra_info`, the `Server` bookkeeping, error reporting and closing
the socket. Attribute names follow asyncio's `_SelectorSocketTransport`
(`_sock`, `_sock_fd`, `_server`, `_loop`, `_empty_waiter`, ...), which
`loop.sendfile`, `loop.start_tls` and asyncio's tests rely on.
"""

from __future__ import annotations

import contextvars
import inspect
import selectors
import socket
import warnings
from asyncio import base_events, constants, futures, selector_events, transports, trsock
from asyncio.log import logger

from ._ferroloop import StreamCore
from ._transport_common import CoreTransport, CoreWrites

__all__ = ["SocketTransport", "socket_transport"]

# 3.13 tracks each client transport of a Server (close_clients); earlier
# versions only count them.
_SERVER_TRACKS_CLIENTS = len(inspect.signature(base_events.Server._attach).parameters) == 2


def _server_attach(server, transport) -> None:
    if _SERVER_TRACKS_CLIENTS:
        server._attach(transport)
    else:
        server._attach()


def _server_detach(server, transport) -> None:
    if _SERVER_TRACKS_CLIENTS:
        server._detach(transport)
    else:
        server._detach()


def _set_nodelay(sock) -> None:
    """TCP_NODELAY on every TCP stream, as uvloop does: asyncio sets it only
    when `sock.proto` is IPPROTO_TCP, and a socket made with proto 0 (the
    default, and what most libraries hand in with `sock=`) is TCP too."""
    if sock.family in _INET_FAMILIES and sock.type == socket.SOCK_STREAM:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # as asyncio: a socket that refuses it keeps its setting


_INET_FAMILIES = (socket.AF_INET, socket.AF_INET6)


class SocketTransport(
    CoreTransport, CoreWrites, transports._FlowControlMixin, transports.Transport
):
    """A TCP or Unix stream socket transport.

    An `asyncio.transports._FlowControlMixin` as asyncio's own socket
    transport is (`loop.sendfile`'s fallback requires it); the flow
    control itself is the core's.
    """

    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE
    max_size = 256 * 1024  # what one read asks for, as in asyncio

    # Read by __del__, which may run on a half-constructed object.
    _sock = None

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None, context=None):
        # Not _FlowControlMixin.__init__: the write-buffer limits live in the core.
        transports.BaseTransport.__init__(self, extra)
        self._extra["socket"] = trsock.TransportSocket(sock)
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        if "peername" not in self._extra:
            try:
                self._extra["peername"] = sock.getpeername()
            except OSError:
                self._extra["peername"] = None
        self._loop = loop
        self._sock = sock
        self._sock_fd = sock.fileno()
        self._protocol_connected = True
        self._server = server
        # The protocol's callbacks run in its creator's context: the one
        # asyncio 3.15 passes, else (before 3.15, or a direct call) a copy
        # of the current one, as 3.15 makes.
        if context is None:
            context = contextvars.copy_context()
        self._context = context
        core = self._core = StreamCore(loop, self._sock_fd, self, protocol, context)
        # The hot methods are the core's own: no Python frame per call.
        self.write = core.write
        self.writelines = core.writelines
        if server is not None:
            _server_attach(server, self)
        loop._transports[self._sock_fd] = self
        _set_nodelay(sock)

        loop.call_soon(protocol.connection_made, self, context=context)
        # Only start reading once connection_made() has run.
        loop.call_soon(core._start_reading, context=context)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None, context=context)

    def __repr__(self) -> str:
        info = [self.__class__.__name__]
        if self._sock is None:
            info.append("closed")
        elif self.is_closing():
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        loop = self._loop
        if loop is not None and not loop.is_closed():
            key = loop._fd_key(self._sock_fd)
            mask = key[0] if key is not None else 0
            info.append("read=polling" if mask & selectors.EVENT_READ else "read=idle")
            state = "polling" if mask & selectors.EVENT_WRITE else "idle"
            info.append(f"write=<{state}, bufsize={self.get_write_buffer_size()}>")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn=warnings.warn) -> None:
        if self._sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._sock.close()
            self._sock = None
            if self._server is not None:
                _server_detach(self._server, self)
                self._server = None

    # -- the asyncio.Transport API, served by the core ------------------

    def close(self) -> None:
        self._core.close()

    def abort(self) -> None:
        self._core.abort()

    def is_reading(self) -> bool:
        return self._core.is_reading()

    def pause_reading(self) -> None:
        self._core.pause_reading()
        if self._loop is not None and self._loop.get_debug():
            logger.debug("%r pauses reading", self)

    def resume_reading(self) -> None:
        self._core.resume_reading()
        if self._loop is not None and self._loop.get_debug():
            logger.debug("%r resumes reading", self)

    def set_protocol(self, protocol) -> None:
        self._core.set_protocol(protocol)
        self._protocol_connected = True

    # -- asyncio's private names, for its services and tests ------------

    @property
    def _paused(self) -> bool:
        return self._core._paused

    @property
    def _eof(self) -> bool:
        return self._core._eof

    @property
    def _read_ready_cb(self):
        # asyncio's read callback, None once the transport is closing
        # (3.14+'s TLS tests check it); the core reads natively.
        return None if self._core.is_closing() else self._core._read_ready

    @property
    def _empty_waiter(self):
        return self._core._empty_waiter

    def _make_empty_waiter(self):
        return self._core._make_empty_waiter()

    def _reset_empty_waiter(self) -> None:
        self._core._reset_empty_waiter()

    def _force_close(self, exc) -> None:
        self._core._force_close(exc)

    def _fatal_error(self, exc, message="Fatal error on transport") -> None:
        # As asyncio: OSErrors (a peer reset, ...) are the connection's
        # fate, not a bug; they are logged in debug mode only.
        if self._loop is not None:
            self._report_fatal_error(self._loop, exc, message, isinstance(exc, OSError))
        self._core._force_close(exc)

    def _call_connection_lost(self, exc) -> None:
        core = self._core
        waiter = core._empty_waiter
        try:
            if self._protocol_connected:
                protocol = core.get_protocol()
                if protocol is not None:
                    protocol.connection_lost(exc)
        finally:
            core._detach()
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            self._loop = None
            server = self._server
            if server is not None:
                _server_detach(server, self)
                self._server = None
        if waiter is not None:
            waiter.set_exception(ConnectionError("Connection is closed by peer"))


# asyncio's own socket transport takes `context` from 3.15 on.
_ASYNCIO_TRANSPORT_TAKES_CONTEXT = (
    "context" in inspect.signature(selector_events._SelectorSocketTransport).parameters
)


def socket_transport(loop, sock, protocol, waiter, extra, server, context):
    """A `SocketTransport` for a plain socket; asyncio's own socket transport
    for a `socket.socket` subclass: it calls the socket's own recv/send
    methods (which a subclass may override, as websockets' tests do), where
    the native core uses the fd."""
    if type(sock) is socket.socket:
        return SocketTransport(loop, sock, protocol, waiter, extra, server, context)
    kwargs = {"context": context} if _ASYNCIO_TRANSPORT_TAKES_CONTEXT else {}
    return selector_events._SelectorSocketTransport(
        loop, sock, protocol, waiter, extra, server, **kwargs
    )
