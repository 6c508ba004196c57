"""The loop's transport factories: the `_make_*_transport` methods through which
asyncio's services (create_connection, create_server, start_tls,
create_datagram_endpoint, connect_read_pipe / connect_write_pipe, the
subprocess pipes) make their transports, here ferroloop's: `_stream.py`,
`_datagram.py`, `_pipe.py`, with asyncio's TLS layer (`_ssl.py`) over a stream."""

from __future__ import annotations

import inspect
from asyncio import sslproto

from . import _ssl
from ._datagram import DatagramTransport
from ._pipe import ReadPipeTransport, WritePipeTransport
from ._stream import socket_transport

__all__ = ["TransportFactories"]


# The keyword options of asyncio's SSLProtocol (3.10: the handshake timeout;
# 3.11+: the shutdown timeout too).
_SSL_PROTOCOL_OPTIONS = frozenset(
    name
    for name, p in inspect.signature(sslproto.SSLProtocol).parameters.items()
    if p.default is not p.empty and name.startswith("ssl_")
)


class TransportFactories:
    """The loop methods through which asyncio's services (create_connection,
    create_server, start_tls, ...) make their transports."""

    # loop.start_tls: asyncio's own, building ferroloop's SSLProtocol (3.11+).
    if _ssl.start_tls is not None:
        start_tls = _ssl.start_tls

    # Each factory takes (and ignores) keyword arguments that a later asyncio
    # may add: a new one fails tests/test_asyncio_internals.py, not every
    # connection.

    def _make_socket_transport(
        self, sock, protocol, waiter=None, *, extra=None, server=None, context=None, **_later
    ):
        self._ensure_fd_no_transport(sock)
        return socket_transport(self, sock, protocol, waiter, extra, server, context)

    def _make_datagram_transport(
        self, sock, protocol, address=None, waiter=None, extra=None, **_later
    ):
        self._ensure_fd_no_transport(sock)
        return DatagramTransport(self, sock, protocol, address, waiter, extra)

    def _make_ssl_transport(
        self,
        rawsock,
        protocol,
        sslcontext,
        waiter=None,
        *,
        server_side=False,
        server_hostname=None,
        extra=None,
        server=None,
        context=None,
        **options,
    ):
        # asyncio's TLS layer (sslproto) over a ferroloop socket transport;
        # the options its SSLProtocol takes (the timeouts) go to it.
        self._ensure_fd_no_transport(rawsock)
        ssl_protocol = _ssl.SSLProtocol(  # asyncio's, with a shorter data path (_ssl.py)
            self,
            protocol,
            sslcontext,
            waiter,
            server_side,
            server_hostname,
            **{k: v for k, v in options.items() if k in _SSL_PROTOCOL_OPTIONS},
        )
        socket_transport(self, rawsock, ssl_protocol, None, extra, server, context)
        return ssl_protocol._app_transport

    def _make_read_pipe_transport(self, pipe, protocol, waiter=None, extra=None, **_later):
        return ReadPipeTransport(self, pipe, protocol, waiter, extra)

    def _make_write_pipe_transport(self, pipe, protocol, waiter=None, extra=None, **_later):
        return WritePipeTransport(self, pipe, protocol, waiter, extra)
