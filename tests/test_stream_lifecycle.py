"""A stream connection's life on TCP and on Unix sockets (every test runs on
both: the stream_family fixture): transport types and extra info, the
order of protocol callbacks, close and abort, half-close (write_eof,
eof_received's answer), set_protocol and duck-typed protocols, with stock
asyncio as the reference.

https://docs.python.org/3/library/asyncio-protocol.html
"""

from __future__ import annotations

import asyncio
import socket

import pytest
from transport_support import (
    HOST,
    MB,
    Recorder,
    pattern,
    recv_until_eof,
    run,
    wait_until,
)

# --- types, extra info, protocol ----------------------------------------------


def test_transport_types_and_extra_info(any_loop, stream_family):
    async def main():
        async with stream_family.pair(any_loop) as (tr, client, sproto, server):
            str_ = sproto.transport
            for t in (tr, str_):
                assert isinstance(t, asyncio.Transport)
                assert isinstance(t, asyncio.ReadTransport)
                assert isinstance(t, asyncio.WriteTransport)
                assert isinstance(t, asyncio.BaseTransport)
                assert not isinstance(t, asyncio.DatagramTransport)
                sock = t.get_extra_info("socket")
                assert sock is not None
                assert sock.family == stream_family.socket_family
                assert sock.type == socket.SOCK_STREAM
                assert sock.fileno() >= 0
                assert t.get_extra_info("sockname") == sock.getsockname()
                assert t.get_extra_info("peername") == sock.getpeername()
                if stream_family.name == "tcp":
                    # asyncio sets TCP_NODELAY on every TCP transport (3.7+).
                    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                assert t.get_extra_info("no-such-key") is None
                assert t.get_extra_info("no-such-key", "dflt") == "dflt"
                assert t.get_extra_info("sslcontext") is None
                assert t.is_closing() is False
                assert t.is_reading() is True
                assert t.can_write_eof() is True
            if stream_family.name == "tcp":
                port = server.sockets[0].getsockname()[1]
                assert tr.get_extra_info("peername") == (HOST, port)
                assert str_.get_extra_info("sockname") == (HOST, port)
                assert tr.get_extra_info("sockname") == str_.get_extra_info("peername")
            else:
                # the client's socket is unnamed; the server's accepted one is the path
                path = str(stream_family.path)
                assert server.sockets[0].getsockname() == path
                assert tr.get_extra_info("peername") == path
                assert tr.get_extra_info("sockname") == ""
                assert str_.get_extra_info("sockname") == path
                assert str_.get_extra_info("peername") == ""
            assert tr.get_protocol() is client
            assert str_.get_protocol() is sproto

    run(any_loop, main())


def test_connection_made_before_create_connection_returns(any_loop, stream_family):
    async def main():
        async with stream_family.pair(any_loop) as (tr, client, sproto, _server):
            assert client.made.done()
            assert client.made.result() is tr
            assert client.events == ["made"]
            assert sproto.events == ["made"]

    run(any_loop, main())


def test_set_protocol_redirects_callbacks(any_loop, stream_family):
    async def main():
        async with stream_family.pair(any_loop) as (tr, first, sproto, _server):
            second = Recorder(any_loop)
            tr.set_protocol(second)
            assert tr.get_protocol() is second
            sproto.transport.write(b"to the second protocol")
            sproto.transport.close()
            assert await second.lost is None
            assert first.events == ["made"]
            assert first.data == b""
            # set_protocol does not call connection_made on the new protocol.
            assert second.events == ["data", "eof", "lost"]
            assert second.data == b"to the second protocol"

    run(any_loop, main())


def test_a_duck_typed_protocol(any_loop, stream_family):
    class Duck:
        def __init__(self):
            self.events = []
            self.data = b""
            self.lost = any_loop.create_future()

        def connection_made(self, transport):
            self.events.append("made")

        def data_received(self, data):
            self.data += data

        def eof_received(self):
            self.events.append("eof")

        def connection_lost(self, exc):
            self.events.append("lost")
            self.lost.set_result(exc)

    async def main():
        async with stream_family.pair(any_loop, client_factory=Duck) as (
            _tr,
            client,
            sproto,
            _server,
        ):
            sproto.transport.write(b"quack")
            sproto.transport.close()
            assert await client.lost is None
            assert client.data == b"quack"
            assert client.events == ["made", "eof", "lost"]

    run(any_loop, main())


# --- callback order -----------------------------------------------------------


def test_client_close_callback_order(any_loop, stream_family, handler_calls):
    async def main():
        async with stream_family.pair(any_loop) as (tr, client, sproto, _server):
            tr.write(b"hello")
            await wait_until(lambda: sproto.data == b"hello")
            tr.close()
            assert tr.is_closing()
            assert client.events == ["made"]  # connection_lost comes later
            assert await client.lost is None
            assert await sproto.lost is None
            await asyncio.sleep(0.05)  # nothing more arrives
            assert client.events == ["made", "lost"]
            assert sproto.events == ["made", "data", "eof", "lost"]
            assert sproto.data_types == {bytes}

    run(any_loop, main())
    assert handler_calls == []


def test_server_close_callback_order(any_loop, stream_family, handler_calls):
    async def main():
        async with stream_family.pair(any_loop) as (tr, client, sproto, _server):
            sproto.transport.write(b"bye")
            sproto.transport.close()
            assert await sproto.lost is None
            assert await client.lost is None
            await asyncio.sleep(0.05)
            assert sproto.events == ["made", "lost"]
            assert client.events == ["made", "data", "eof", "lost"]
            assert client.data == b"bye"
            assert tr.is_closing()

    run(any_loop, main())
    assert handler_calls == []


def test_data_written_in_connection_made_arrives_after_the_peers_connection_made(
    any_loop, stream_family
):
    class GreetAndClose(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.write(b"greeting")
            transport.close()

    async def main():
        async with stream_family.pair(any_loop, server_factory=lambda: GreetAndClose(any_loop)) as (
            _tr,
            client,
            sproto,
            _server,
        ):
            assert await client.lost is None
            assert await sproto.lost is None
            return client

    client = run(any_loop, main())
    assert client.events == ["made", "data", "eof", "lost"]
    assert client.data == b"greeting"


def test_close_inside_data_received_stops_delivery(any_loop, stream_family):
    class CloseOnFirstData(Recorder):
        def data_received(self, data):
            super().data_received(data)
            self.transport.close()

    async def main():
        async with stream_family.pair(
            any_loop, server_factory=lambda: CloseOnFirstData(any_loop)
        ) as (tr, _client, sproto, _server):
            tr.write(b"first")
            await wait_until(lambda: sproto.data)
            tr.write(pattern(2 * MB))
            tr.write_eof()
            await sproto.lost
            await asyncio.sleep(0.05)
            return sproto

    sproto = run(any_loop, main())
    assert sproto.events == ["made", "data", "lost"]
    assert sproto.data == b"first"


# --- close and abort ----------------------------------------------------------


def test_close_twice_and_abort_after_close_lose_once(any_loop, stream_family):
    async def main():
        async with stream_family.pair(any_loop) as (tr, client, _sproto, _server):
            tr.close()
            tr.close()
            tr.abort()
            assert await client.lost is None
            await asyncio.sleep(0.05)
            tr.close()
            tr.abort()
            await asyncio.sleep(0.02)
            assert client.events == ["made", "lost"]

    run(any_loop, main())


def test_abort_gives_connection_lost_none_and_drops_the_buffer(any_loop, stream_family):
    payload = pattern(32 * MB)

    async def main():
        async with stream_family.raw_peer(any_loop) as (tr, client, peer):
            tr.write(payload)  # the peer does not read: most of it stays buffered
            assert tr.get_write_buffer_size() > 0
            tr.abort()
            assert tr.is_closing()
            assert tr.get_write_buffer_size() == 0
            assert await client.lost is None
            assert client.events == ["made", "lost"]
            got = await recv_until_eof(any_loop, peer)
            assert len(got) < len(payload)
            assert payload.startswith(got)

    run(any_loop, main())


def test_close_flushes_the_buffer_before_connection_lost(any_loop, stream_family):
    payload = pattern(16 * MB, seed=1)

    async def main():
        async with stream_family.raw_peer(any_loop) as (tr, client, peer):
            tr.write(payload)
            assert tr.get_write_buffer_size() > 0
            tr.close()
            assert tr.is_closing()
            await asyncio.sleep(0.05)
            assert not client.lost.done()  # still flushing: the peer has not read
            got = await recv_until_eof(any_loop, peer)
            assert got == payload
            assert await client.lost is None
            assert client.events == ["made", "lost"]

    run(any_loop, main())


def test_abort_after_close_with_a_buffer_discards_it(any_loop, stream_family):
    payload = pattern(32 * MB, seed=15)

    async def main():
        async with stream_family.raw_peer(any_loop) as (tr, client, peer):
            tr.write(payload)
            assert tr.get_write_buffer_size() > 0
            tr.close()
            await asyncio.sleep(0.02)
            assert not client.lost.done()  # still flushing
            tr.abort()
            assert await client.lost is None
            assert tr.get_write_buffer_size() == 0
            got = await recv_until_eof(any_loop, peer)
            assert len(got) < len(payload)
            assert payload.startswith(got)
            assert client.events == ["made", "lost"]

    run(any_loop, main())


def test_close_while_paused_reading_still_loses_the_connection(any_loop, stream_family):
    async def main():
        async with stream_family.pair(any_loop) as (tr, client, sproto, _server):
            tr.pause_reading()
            sproto.transport.write(b"never read")
            await asyncio.sleep(0.02)
            tr.close()
            assert await client.lost is None
            assert client.events == ["made", "lost"]
            await sproto.lost  # RST or FIN, the server side goes too

    run(any_loop, main())


# --- half-close ---------------------------------------------------------------


def test_eof_with_nothing_else_from_a_raw_peer(any_loop, stream_family):
    async def main():
        async with stream_family.raw_peer(any_loop) as (_tr, client, peer):
            peer.sendall(b"last words")
            peer.shutdown(socket.SHUT_WR)
            assert await client.lost is None
            assert client.events == ["made", "data", "eof", "lost"]
            assert client.data == b"last words"
            # eof_received returned None: the transport closed itself and
            # the peer sees our EOF.
            assert await recv_until_eof(any_loop, peer) == b""

    run(any_loop, main())


def test_client_write_eof_server_keeps_open_and_replies(any_loop, stream_family, handler_calls):
    async def main():
        async with stream_family.pair(
            any_loop, server_factory=lambda: Recorder(any_loop, keep_open=True)
        ) as (tr, client, sproto, _server):
            tr.write(b"question")
            tr.write_eof()
            await sproto.eof
            assert sproto.data == b"question"
            stransport = sproto.transport
            assert not stransport.is_closing()
            stransport.write(b"answer")
            await wait_until(lambda: client.data == b"answer")
            assert client.events == ["made", "data"]
            stransport.close()
            assert await sproto.lost is None
            assert await client.lost is None
            assert sproto.events == ["made", "data", "eof", "lost"]
            assert client.events == ["made", "data", "eof", "lost"]

    run(any_loop, main())
    assert handler_calls == []


@pytest.mark.parametrize("keep_open", [None, False])
@pytest.mark.parametrize("eof_from", ["client", "server"])
def test_eof_received_false_closes_the_transport(any_loop, stream_family, keep_open, eof_from):
    """The side that gets EOF and answers it with a false value closes its
    transport; from the server, after some data."""

    def receiver():
        return Recorder(any_loop, keep_open=keep_open)

    side = {"server_factory": receiver} if eof_from == "client" else {"client_factory": receiver}

    async def main():
        async with stream_family.pair(any_loop, **side) as (tr, client, sproto, _server):
            if eof_from == "client":
                tr.write_eof()
                assert await sproto.lost is None
                assert sproto.events == ["made", "eof", "lost"]
                assert sproto.transport.is_closing()
                assert await client.lost is None
                assert client.events == ["made", "eof", "lost"]
            else:
                sproto.transport.write(b"x")
                sproto.transport.write_eof()
                assert await client.lost is None
                assert tr.is_closing()
                assert client.events == ["made", "data", "eof", "lost"]
                assert await sproto.lost is None
                assert sproto.events == ["made", "eof", "lost"]

    run(any_loop, main())


def test_server_write_eof_client_keeps_open_and_replies(any_loop, stream_family):
    async def main():
        async with stream_family.pair(
            any_loop, client_factory=lambda: Recorder(any_loop, keep_open=True)
        ) as (tr, client, sproto, _server):
            sproto.transport.write(b"from server")
            sproto.transport.write_eof()
            await client.eof
            assert client.data == b"from server"
            assert not tr.is_closing()
            tr.write(b"from client after eof")
            await wait_until(lambda: sproto.data == b"from client after eof")
            tr.close()
            assert await client.lost is None
            assert await sproto.lost is None
            assert client.events == ["made", "data", "eof", "lost"]
            assert sproto.events == ["made", "data", "eof", "lost"]

    run(any_loop, main())


@pytest.mark.parametrize("keep_open", [1, "yes", [0]], ids=["int", "str", "list"])
def test_eof_received_truthy_value_keeps_the_transport_open(any_loop, stream_family, keep_open):
    async def main():
        async with stream_family.pair(
            any_loop, server_factory=lambda: Recorder(any_loop, keep_open=keep_open)
        ) as (tr, client, sproto, _server):
            tr.write_eof()
            await sproto.eof
            await asyncio.sleep(0.05)
            assert not sproto.transport.is_closing()
            assert sproto.events == ["made", "eof"]
            sproto.transport.write(b"still open")
            await wait_until(lambda: client.data == b"still open")

    run(any_loop, main())


def test_both_directions_shut_is_not_a_close(any_loop, stream_family):
    async def main():
        async with stream_family.pair(
            any_loop,
            client_factory=lambda: Recorder(any_loop, keep_open=True),
            server_factory=lambda: Recorder(any_loop, keep_open=True),
        ) as (tr, client, sproto, _server):
            tr.write_eof()
            await sproto.eof
            sproto.transport.write_eof()
            await client.eof
            await asyncio.sleep(0.05)
            # each side has sent and received EOF; neither transport closed itself
            assert not tr.is_closing() and not sproto.transport.is_closing()
            assert client.events == ["made", "eof"]
            assert sproto.events == ["made", "eof"]
            tr.close()
            sproto.transport.close()
            assert await client.lost is None
            assert await sproto.lost is None

    run(any_loop, main())
