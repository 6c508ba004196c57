"""ferroloop's own TLS data path (python/ferroloop/_ssl.py): several records
and a close_notify in one read, an SSLContext's sslobject_class, the
protocol class ferroloop uses, and a BufferedProtocol over TLS, with stock
asyncio as the reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from support import is_ferroloop
from tls_support import (
    NEW_SSLPROTO,
    Server,
    echo_once,
    plain_tls_pair,
    raw_tls_client,
    tls_client,
    tls_pair,
)
from transport_support import (
    HOST,
    pattern,
    recv_until_closed,
    run,
    wait_until,
)

# --- ferroloop's TLS data path (python/ferroloop/_ssl.py) ---------------------


def test_records_and_close_notify_in_one_read(any_loop, certs, handler_calls):
    """Many records of different sizes and the close_notify arrive in one TCP
    segment burst: every byte is delivered in order (one data_received per
    batch), then eof_received (3.11+) and connection_lost(None), as asyncio
    does."""
    sizes = [1, 100, 16_384, 16_385, 5_000, 70_000, 3]

    async def main():
        srv = await Server(any_loop, echo=False).start(certs.server_context())
        try:
            async with raw_tls_client(any_loop, srv.port, certs) as peer:
                await peer.handshake()
                payload = pattern(sum(sizes))
                wire, offset = b"", 0
                for size in sizes:
                    wire += peer.records(payload[offset : offset + size])
                    offset += size
                with contextlib.suppress(ssl.SSLWantReadError):
                    peer.obj.unwrap()  # queues our close_notify
                wire += peer.outgoing.read()
                await any_loop.sock_sendall(peer.sock, wire)
                await wait_until(lambda: srv.made())
                sv = srv.made()[0]
                exc = await asyncio.wait_for(sv.lost, 3)
                await recv_until_closed(any_loop, peer.sock)  # the server closed its end too
            return sv, exc, payload
        finally:
            await srv.close()

    sv, exc, payload = run(any_loop, main())
    assert exc is None
    assert bytes(sv.data) == payload
    if NEW_SSLPROTO:
        assert sv.events == ["made", "data", "eof", "lost"]
    else:
        assert sv.events == ["made", "data", "lost"]
    assert sv.lost_calls == 1
    assert handler_calls == []


SSLOBJECT_CALLS = {"read": 0, "write": 0}


class CountingSSLObject(ssl.SSLObject):
    """An SSLObject subclass (SSLContext.sslobject_class): its own methods
    must be the ones called."""

    def read(self, len=1024, buffer=None):
        SSLOBJECT_CALLS["read"] += 1
        return super().read(len, buffer)

    def write(self, data):
        SSLOBJECT_CALLS["write"] += 1
        return super().write(data)


def test_sslobject_subclass_is_used(any_loop, certs, handler_calls):
    server_ctx = certs.server_context()
    server_ctx.sslobject_class = CountingSSLObject
    SSLOBJECT_CALLS.update(read=0, write=0)

    async def main():
        async with tls_pair(any_loop, server_ctx, certs.client_context()) as (tr, cl, sv, _):
            payload = pattern(200_000)
            tr.write(payload)
            assert await cl.received(len(payload)) == payload
            assert bytes(sv.data) == payload

    run(any_loop, main())
    assert SSLOBJECT_CALLS["read"] >= 2  # 200 kB: more than one batch
    assert SSLOBJECT_CALLS["write"] >= 1  # the server's echoes
    assert handler_calls == []


def test_ferroloop_tls_protocol_class(any_loop, certs):
    """3.11+: ferroloop's connections run ferroloop._ssl.SSLProtocol (asyncio's
    class with the shorter data path); 3.10 and stock asyncio run asyncio's."""
    from asyncio import sslproto

    import ferroloop._ssl

    async def main():
        async with plain_tls_pair(any_loop, certs) as (tr, cl, sv, _):
            await echo_once(tr, cl)
            return type(tr._ssl_protocol), type(sv.transport._ssl_protocol)

    client_class, server_class = run(any_loop, main())
    expected = sslproto.SSLProtocol
    if is_ferroloop(any_loop) and NEW_SSLPROTO:
        expected = ferroloop._ssl.SSLProtocol
        assert expected is not sslproto.SSLProtocol
    assert client_class is server_class is expected


class SmallBufferProtocol(asyncio.BufferedProtocol):
    """A BufferedProtocol with a 1,000-byte buffer: TLS records are larger,
    so the buffer fills and the read resumes on a later iteration."""

    def __init__(self, loop):
        self.buf = bytearray(1000)
        self.data = bytearray()
        self.events = []
        self.updates = 0
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.events.append("made")

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, nbytes):
        assert 0 < nbytes <= len(self.buf)
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.updates += 1
        self.data += self.buf[:nbytes]

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


def test_buffered_protocol_over_tls(any_loop, certs, handler_calls):
    """A TLS server whose protocol is a BufferedProtocol gets every byte, in
    order, through get_buffer/buffer_updated, then eof_received (3.11+) and
    connection_lost(None) when the client closes."""
    protocols = []

    async def main():
        def factory():
            protocols.append(SmallBufferProtocol(any_loop))
            return protocols[-1]

        server = await any_loop.create_server(factory, HOST, 0, ssl=certs.server_context())
        try:
            port = server.sockets[0].getsockname()[1]
            tr, _ = await tls_client(any_loop, port, certs)
            payload = pattern(150_000)
            for start in range(0, len(payload), 7_000):
                tr.write(payload[start : start + 7_000])
            await wait_until(lambda: protocols and len(protocols[0].data) >= len(payload))
            tr.close()
            exc = await asyncio.wait_for(protocols[0].lost, 3)
            return payload, exc
        finally:
            server.close()
            await asyncio.wait_for(server.wait_closed(), 3)

    payload, exc = run(any_loop, main())
    proto = protocols[0]
    assert exc is None
    assert bytes(proto.data) == payload
    assert proto.updates >= len(payload) // 1000
    if NEW_SSLPROTO:
        assert proto.events == ["made", "data", "eof", "lost"]
    else:
        assert proto.events == ["made", "data", "lost"]
    assert handler_calls == []
