"""TCP transports made by create_connection / create_server /
connect_accepted_socket: asyncio's documented Transport and Protocol
semantics on real 127.0.0.1 sockets, with stock asyncio as the reference.

https://docs.python.org/3/library/asyncio-protocol.html
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import os
import platform
import socket
import struct
import subprocess
import sys
import weakref
from asyncio import selector_events

import pytest
from support import collected_warnings, open_fd_count
from transport_support import (
    HOST,
    MB,
    FlowRecording,
    pattern,
    recv_exactly,
    recv_until_eof,
    run,
    stream_pair,
    wait_until,
)

# --- helpers ------------------------------------------------------------------


class Recorder(asyncio.Protocol):
    """Records every callback, in order; data_received coalesced as "data"."""

    def __init__(self, loop, keep_open=None):
        self.loop = loop
        self.keep_open = keep_open
        self.events = []
        self.data = bytearray()
        self.data_types = set()
        self.transport = None
        self.lost_exc = None
        self.made = loop.create_future()
        self.eof = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport
        self.made.set_result(transport)

    def data_received(self, data):
        assert data, "data_received with empty data"
        self.data_types.add(type(data))
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.data += data

    def eof_received(self):
        self.events.append("eof")
        self.eof.set_result(None)
        return self.keep_open

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost_exc = exc
        if not self.lost.done():
            self.lost.set_result(exc)


def tcp_pair(loop, client_factory=None, server_factory=None):
    """A create_server server, and one create_connection client to it.

    Yields (client_transport, client_protocol, server_protocol, server)."""
    return stream_pair(
        loop,
        lambda factory: loop.create_server(factory, HOST, 0),
        lambda server, factory: loop.create_connection(
            factory, HOST, server.sockets[0].getsockname()[1]
        ),
        lambda: Recorder(loop),
        client_factory,
        server_factory,
    )


@contextlib.asynccontextmanager
async def raw_peer(loop, client_factory):
    """A create_connection client whose peer is a plain accepted socket.

    Yields (client_transport, client_protocol, peer_socket)."""
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen()
    listener.setblocking(False)
    port = listener.getsockname()[1]
    conn = transport = None
    try:
        connect = asyncio.ensure_future(loop.create_connection(client_factory, HOST, port))
        conn, _ = await loop.sock_accept(listener)
        transport, protocol = await connect
        yield transport, protocol, conn
    finally:
        if transport is not None and not transport.is_closing():
            transport.abort()
        if conn is not None:
            conn.close()
        listener.close()
        await asyncio.sleep(0.01)


def reset_close(sock):
    """Close sock with SO_LINGER 0: the peer gets a RST, not a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# --- types, extra info, protocol ----------------------------------------------


def test_transport_types_and_extra_info(any_loop):
    async def main():
        async with tcp_pair(any_loop) as (tr, client, sproto, server):
            str_ = sproto.transport
            port = server.sockets[0].getsockname()[1]
            for t in (tr, str_):
                assert isinstance(t, asyncio.Transport)
                assert isinstance(t, asyncio.ReadTransport)
                assert isinstance(t, asyncio.WriteTransport)
                assert isinstance(t, asyncio.BaseTransport)
                assert not isinstance(t, asyncio.DatagramTransport)
                sock = t.get_extra_info("socket")
                assert sock is not None
                assert sock.family == socket.AF_INET
                assert sock.type == socket.SOCK_STREAM
                assert sock.fileno() >= 0
                assert t.get_extra_info("sockname") == sock.getsockname()
                assert t.get_extra_info("peername") == sock.getpeername()
                # asyncio sets TCP_NODELAY on every TCP transport (3.7+).
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                assert t.get_extra_info("no-such-key") is None
                assert t.get_extra_info("no-such-key", "dflt") == "dflt"
                assert t.get_extra_info("sslcontext") is None
                assert t.is_closing() is False
                assert t.is_reading() is True
                assert t.can_write_eof() is True
            assert tr.get_extra_info("peername") == (HOST, port)
            assert str_.get_extra_info("sockname") == (HOST, port)
            assert tr.get_extra_info("sockname") == str_.get_extra_info("peername")
            assert tr.get_protocol() is client
            assert str_.get_protocol() is sproto

    run(any_loop, main())


def test_connection_made_before_create_connection_returns(any_loop):
    async def main():
        async with tcp_pair(any_loop) as (tr, client, sproto, _server):
            assert client.made.done()
            assert client.made.result() is tr
            assert client.events == ["made"]
            assert sproto.events == ["made"]

    run(any_loop, main())


def test_set_protocol_redirects_callbacks(any_loop):
    async def main():
        async with tcp_pair(any_loop) as (tr, first, sproto, _server):
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


# --- callback order -----------------------------------------------------------


def test_client_close_callback_order(any_loop, handler_calls):
    async def main():
        async with tcp_pair(any_loop) as (tr, client, sproto, _server):
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


def test_server_close_callback_order(any_loop, handler_calls):
    async def main():
        async with tcp_pair(any_loop) as (tr, client, sproto, _server):
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


def test_close_twice_and_abort_after_close_lose_once(any_loop):
    async def main():
        async with tcp_pair(any_loop) as (tr, client, _sproto, _server):
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


def test_abort_gives_connection_lost_none_and_drops_the_buffer(any_loop):
    payload = pattern(32 * MB)

    async def main():
        async with raw_peer(any_loop, lambda: Recorder(any_loop)) as (tr, client, peer):
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


def test_close_flushes_the_buffer_before_connection_lost(any_loop):
    payload = pattern(16 * MB, seed=1)

    async def main():
        async with raw_peer(any_loop, lambda: Recorder(any_loop)) as (tr, client, peer):
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


def test_peer_reset_gives_connection_reset_error(any_loop, handler_calls):
    async def main():
        async with raw_peer(any_loop, lambda: Recorder(any_loop)) as (tr, client, peer):
            reset_close(peer)
            exc = await client.lost
            assert isinstance(exc, ConnectionResetError)
            assert client.events == ["made", "lost"]
            assert tr.is_closing()

    run(any_loop, main())
    # An OSError on the socket is not reported to the exception handler.
    assert handler_calls == []


def test_peer_reset_during_a_large_write(any_loop, handler_calls):
    async def main():
        async with raw_peer(any_loop, lambda: Recorder(any_loop)) as (tr, client, peer):
            payload = pattern(50 * MB, seed=2)
            tr.write(payload)
            got = await recv_exactly(any_loop, peer, 1 * MB)
            assert got == payload[: 1 * MB]
            reset_close(peer)
            exc = await client.lost
            assert isinstance(exc, OSError), exc
            assert client.events == ["made", "lost"]
            assert tr.is_closing()
            assert tr.get_write_buffer_size() == 0
            tr.write(b"into the void")  # ignored, no exception
            return True

    assert run(any_loop, main()) is True
    # The loop keeps running.
    assert any_loop.run_until_complete(asyncio.sleep(0.01, "alive")) == "alive"
    assert handler_calls == []


def test_eof_with_nothing_else_from_a_raw_peer(any_loop):
    async def main():
        async with raw_peer(any_loop, lambda: Recorder(any_loop)) as (_tr, client, peer):
            peer.sendall(b"last words")
            peer.shutdown(socket.SHUT_WR)
            assert await client.lost is None
            assert client.events == ["made", "data", "eof", "lost"]
            assert client.data == b"last words"
            # eof_received returned None: the transport closed itself and
            # the peer sees our EOF.
            assert await recv_until_eof(any_loop, peer) == b""

    run(any_loop, main())


def test_bulk_then_small_reads_arrive_whole_and_in_order(any_loop):
    """Large reads (which ferroloop receives straight into the bytes it
    passes on) and small ones (through its shared buffer), mixed: every
    chunk is a bytes object and nothing is lost, doubled or reordered."""
    sizes = [3 * MB, 100, 70_000, 1, 2 * MB, 5, 40_000]
    messages = [pattern(n, seed=i) for i, n in enumerate(sizes)]

    async def main():
        async with raw_peer(any_loop, lambda: Recorder(any_loop)) as (_tr, client, peer):
            sent = 0
            for message in messages:
                await any_loop.sock_sendall(peer, message)
                sent += len(message)
                await wait_until(lambda: len(client.data) >= sent)  # noqa: B023
            assert client.data == b"".join(messages)
            peer.shutdown(socket.SHUT_WR)
            await client.lost
            assert client.data_types == {bytes}
            assert client.events == ["made", "data", "eof", "lost"]

    run(any_loop, main(), timeout=20)


needs_glibc = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="ferroloop tunes glibc's malloc only"
)

MALLOC_PROBE_CHILD = """
import ctypes, ferroloop
libc = ctypes.CDLL(None)
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
ferroloop.new_event_loop().close()
mapped = libc.mallinfo2().hblks
block = libc.malloc(512 * 1024)
print("mmapped" if libc.mallinfo2().hblks > mapped else "heap")
libc.free(block)
"""


@needs_glibc
@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, "heap"), ({"FERROLOOP_MALLOC_TUNING": "0"}, "mmapped")],
)
def test_first_loop_keeps_large_blocks_on_the_heap_unless_told_not_to(env, expected):
    """A 512 KiB block comes from the heap once a ferroloop loop exists
    (glibc alone mmaps it: above its 128 KiB default threshold). With
    glibc's defaults, 100 KiB messages through asyncio's streams cost the
    echo benchmark's server 8-15 minor page faults per round trip (the heap
    top returned and faulted back in), and none with ferroloop's setting."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "FERROLOOP_"))}
    out = subprocess.run(
        [sys.executable, "-c", MALLOC_PROBE_CHILD],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == expected


# --- write --------------------------------------------------------------------


def test_small_write_is_sent_at_once(any_loop):
    async def main():
        async with tcp_pair(any_loop) as (tr, _client, sproto, _server):
            tr.write(b"immediate")
            assert tr.get_write_buffer_size() == 0
            await wait_until(lambda: sproto.data == b"immediate")

    run(any_loop, main())


def test_write_accepts_bytes_like_objects_in_order(any_loop):
    async def main():
        async with tcp_pair(any_loop) as (tr, _client, sproto, _server):
            big = pattern(3 * MB, seed=3)
            parts = [
                b"bytes|",
                bytearray(b"bytearray|"),
                memoryview(b"memoryview|"),
                memoryview(b"xxsliced|xx")[2:-2],
                b"",
                big,
                bytearray(b"|after-big"),
            ]
            expected = b"".join(bytes(p) for p in parts)
            for p in parts:
                tr.write(p)
            tr.writelines(
                [b"L1|", bytearray(b"L2|"), memoryview(b"L3|"), memoryview(b"-L4|-")[1:-1]]
            )
            tr.writelines([])
            expected += b"L1|L2|L3|L4|"
            tr.write_eof()
            await sproto.eof
            assert bytes(sproto.data) == expected

    run(any_loop, main())


def test_write_after_close_is_ignored(any_loop, handler_calls):
    async def main():
        async with tcp_pair(any_loop) as (tr, client, sproto, _server):
            tr.write(b"before")
            tr.close()
            tr.write(b"after close")  # silently dropped
            assert await client.lost is None
            tr.write(b"after connection_lost")
            await sproto.lost
            assert sproto.data == b"before"
            assert client.events == ["made", "lost"]

    run(any_loop, main())
    assert handler_calls == []


def test_write_after_write_eof_raises(any_loop):
    async def main():
        async with tcp_pair(any_loop) as (tr, _client, sproto, _server):
            tr.write(b"x")
            tr.write_eof()
            tr.write_eof()  # a second write_eof is a no-op
            with pytest.raises(RuntimeError, match=r"Cannot call write\(\) after write_eof\(\)"):
                tr.write(b"y")
            with pytest.raises(RuntimeError, match=r"after write_eof\(\)"):
                tr.writelines([b"y"])
            await sproto.eof
            assert sproto.data == b"x"
            assert not tr.is_closing()

    run(any_loop, main())


def asyncio_write_type_error(obj) -> str:
    """What asyncio's own stream transport says write(obj) of a non-bytes
    object (its words changed in 3.14.x): its write() checks the type
    before anything else."""
    with pytest.raises(TypeError) as info:
        selector_events._SelectorSocketTransport.write(None, obj)
    return str(info.value)


@pytest.mark.parametrize(
    "obj, type_name",
    [("text", "str"), (12, "int"), (None, "NoneType"), ([b"a"], "list")],
)
def test_write_non_bytes_raises_type_error(any_loop, obj, type_name):
    async def main():
        async with tcp_pair(any_loop) as (tr, _client, sproto, _server):
            message = asyncio_write_type_error(obj)
            assert message.endswith(f", not '{type_name}'")
            with pytest.raises(TypeError) as info:
                tr.write(obj)
            assert str(info.value) == message
            with pytest.raises(TypeError):
                tr.writelines(["text"])
            assert not tr.is_closing()
            tr.write(b"still usable")
            await wait_until(lambda: sproto.data == b"still usable")

    run(any_loop, main())


def test_write_eof_flushes_the_buffer_first(any_loop):
    payload = pattern(8 * MB, seed=4)

    async def main():
        async with raw_peer(any_loop, lambda: Recorder(any_loop)) as (tr, _client, peer):
            tr.write(payload)
            assert tr.get_write_buffer_size() > 0
            tr.write_eof()
            assert not tr.is_closing()
            got = await recv_until_eof(any_loop, peer)
            assert got == payload
            await wait_until(lambda: tr.get_write_buffer_size() == 0)

    run(any_loop, main())


# --- half-close ---------------------------------------------------------------


def test_client_write_eof_server_keeps_open_and_replies(any_loop):
    async def main():
        async with tcp_pair(
            any_loop, server_factory=lambda: Recorder(any_loop, keep_open=True)
        ) as (
            tr,
            client,
            sproto,
            _server,
        ):
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


@pytest.mark.parametrize("keep_open", [None, False])
def test_eof_received_false_closes_the_transport(any_loop, keep_open):
    async def main():
        async with tcp_pair(
            any_loop, server_factory=lambda: Recorder(any_loop, keep_open=keep_open)
        ) as (tr, client, sproto, _server):
            tr.write_eof()
            assert await sproto.lost is None
            assert sproto.events == ["made", "eof", "lost"]
            assert sproto.transport.is_closing()
            assert await client.lost is None
            assert client.events == ["made", "eof", "lost"]

    run(any_loop, main())


def test_server_write_eof_client_keeps_open_and_replies(any_loop):
    async def main():
        async with tcp_pair(
            any_loop, client_factory=lambda: Recorder(any_loop, keep_open=True)
        ) as (
            tr,
            client,
            sproto,
            _server,
        ):
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


# --- flow control: writing ----------------------------------------------------


class FlowClient(FlowRecording, Recorder):
    """A Recorder that records pause_writing/resume_writing."""


class HashingServer(asyncio.Protocol):
    """Hashes what it gets."""

    def __init__(self, loop):
        self.loop = loop
        self.hash = hashlib.sha256()
        self.count = 0
        self.transport = None
        self.eof = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.hash.update(data)
        self.count += len(data)

    def eof_received(self):
        self.eof.set_result(None)


def test_pause_and_resume_writing_with_a_slow_reader(any_loop):
    chunk_size = 256 * 1024
    chunks = 200  # 50 MiB
    base = pattern(chunk_size + 256, seed=5)
    expected = hashlib.sha256()
    for i in range(chunks):
        expected.update(base[i % 256 : i % 256 + chunk_size])

    async def main():
        async with tcp_pair(
            any_loop,
            client_factory=lambda: FlowClient(any_loop),
            server_factory=lambda: HashingServer(any_loop),
        ) as (tr, client, sproto, _server):
            # a slow reader: nothing for a while
            sproto.transport.pause_reading()
            any_loop.call_later(0.2, sproto.transport.resume_reading)
            low, high = tr.get_write_buffer_limits()
            for i in range(chunks):
                await client.can_write.wait()
                tr.write(base[i % 256 : i % 256 + chunk_size])
            tr.write_eof()
            await sproto.eof
            assert sproto.count == chunks * chunk_size
            assert sproto.hash.hexdigest() == expected.hexdigest()
            await wait_until(lambda: tr.get_write_buffer_size() == 0)
            return low, high, client.flow

    low, high, flow = run(any_loop, main(), timeout=30)
    assert flow, "pause_writing was never called"
    kinds = [kind for kind, _ in flow]
    assert kinds == ["pause", "resume"] * (len(kinds) // 2)
    for kind, size in flow:
        if kind == "pause":
            assert size > high
        else:
            assert size <= low


def test_write_buffer_limits(any_loop):
    async def main():
        async with tcp_pair(any_loop) as (tr, _client, _sproto, _server):
            low, high = tr.get_write_buffer_limits()
            assert 0 <= low <= high
            tr.set_write_buffer_limits(high=10_000, low=2_000)
            assert tr.get_write_buffer_limits() == (2_000, 10_000)
            tr.set_write_buffer_limits(high=8_000)
            low, high = tr.get_write_buffer_limits()
            assert high == 8_000 and 0 <= low <= 8_000
            tr.set_write_buffer_limits(low=1_000)
            low, high = tr.get_write_buffer_limits()
            assert low == 1_000 and high >= 1_000
            tr.set_write_buffer_limits(high=0)
            assert tr.get_write_buffer_limits() == (0, 0)
            tr.set_write_buffer_limits(high=300, low=100)
            for bad in (
                {"high": 100, "low": 200},
                {"high": -1},
                {"low": -1},
                {"high": 5, "low": -1},
            ):
                with pytest.raises(ValueError):
                    tr.set_write_buffer_limits(**bad)
            assert tr.get_write_buffer_limits() == (100, 300)
            assert tr.get_write_buffer_size() == 0

    run(any_loop, main())


def test_high_water_zero_pauses_on_any_buffered_data(any_loop):
    payload = pattern(8 * MB, seed=6)

    async def main():
        async with raw_peer(any_loop, lambda: FlowClient(any_loop)) as (tr, client, peer):
            tr.set_write_buffer_limits(0)
            tr.write(b"small")  # sent at once: nothing buffered, no pause
            assert client.flow == []
            tr.write(payload)
            buffered = tr.get_write_buffer_size()
            assert buffered > 0
            assert client.flow == [("pause", buffered)]
            got = await recv_exactly(any_loop, peer, len(payload) + 5)
            assert got == b"small" + payload
            await wait_until(lambda: len(client.flow) == 2)
            # low is 0: resume_writing only once the buffer is empty
            assert client.flow[1] == ("resume", 0)

    run(any_loop, main())


def test_lowering_the_limits_below_the_buffer_pauses_at_once(any_loop):
    payload = pattern(16 * MB, seed=7)

    async def main():
        async with raw_peer(any_loop, lambda: FlowClient(any_loop)) as (tr, client, peer):
            tr.set_write_buffer_limits(high=64 * MB)
            tr.write(payload)
            buffered = tr.get_write_buffer_size()
            assert 0 < buffered < 64 * MB
            assert client.flow == []
            tr.set_write_buffer_limits(high=1024, low=512)
            assert [kind for kind, _ in client.flow] == ["pause"]
            got = await recv_exactly(any_loop, peer, len(payload))
            assert got == payload
            await wait_until(lambda: len(client.flow) == 2)
            assert client.flow[1][0] == "resume"
            assert client.flow[1][1] <= 512

    run(any_loop, main())


def test_get_write_buffer_size_tracks_what_is_unsent(any_loop):
    payload = pattern(16 * MB, seed=8)

    async def main():
        async with raw_peer(any_loop, lambda: Recorder(any_loop)) as (tr, _client, peer):
            assert tr.get_write_buffer_size() == 0
            tr.set_write_buffer_limits(high=64 * MB)
            tr.write(payload)
            first = tr.get_write_buffer_size()
            assert 0 < first <= len(payload)
            tr.write(b"tail")
            assert tr.get_write_buffer_size() == first + 4
            got = await recv_exactly(any_loop, peer, len(payload) + 4)
            assert got == payload + b"tail"
            await wait_until(lambda: tr.get_write_buffer_size() == 0)

    run(any_loop, main())


# --- flow control: reading ----------------------------------------------------


def test_pause_and_resume_reading(any_loop):
    async def main():
        async with tcp_pair(any_loop) as (tr, _client, sproto, _server):
            stransport = sproto.transport
            assert stransport.is_reading()
            stransport.pause_reading()
            stransport.pause_reading()  # idempotent
            assert not stransport.is_reading()
            tr.write(b"while paused")
            tr.write_eof()
            await asyncio.sleep(0.2)
            assert sproto.events == ["made"]  # neither data nor eof while paused
            stransport.resume_reading()
            assert stransport.is_reading()
            stransport.resume_reading()  # idempotent
            await sproto.eof
            assert sproto.data == b"while paused"
            assert await sproto.lost is None
            assert sproto.events == ["made", "data", "eof", "lost"]
            assert not stransport.is_reading()  # closed
            stransport.pause_reading()  # no-op on a closed transport
            stransport.resume_reading()
            assert not stransport.is_reading()

    run(any_loop, main())


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="3.10 starts reading after connection_made regardless"
)
def test_pause_reading_in_connection_made_is_honoured(any_loop):
    class PausedFromTheStart(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.pause_reading()

    async def main():
        async with tcp_pair(any_loop, server_factory=lambda: PausedFromTheStart(any_loop)) as (
            tr,
            _client,
            sproto,
            _server,
        ):
            tr.write(b"early")
            await asyncio.sleep(0.1)
            assert sproto.events == ["made"]
            assert not sproto.transport.is_reading()
            sproto.transport.resume_reading()
            await wait_until(lambda: sproto.data == b"early")

    run(any_loop, main())


def test_pause_reading_throttles_a_large_transfer(any_loop):
    payload = pattern(8 * MB, seed=9)

    async def main():
        async with tcp_pair(any_loop) as (tr, _client, sproto, _server):
            stransport = sproto.transport
            tr.write(payload)
            for _ in range(5):
                await wait_until(lambda: len(sproto.data) > 0)
                stransport.pause_reading()
                seen = len(sproto.data)
                await asyncio.sleep(0.03)
                assert len(sproto.data) == seen
                stransport.resume_reading()
                await asyncio.sleep(0)
            await wait_until(lambda: len(sproto.data) == len(payload))
            assert sproto.data == payload

    run(any_loop, main())


# --- BufferedProtocol ---------------------------------------------------------


class BufferedRecorder(asyncio.BufferedProtocol):
    def __init__(self, loop, size=64 * 1024, use_memoryview=False):
        self.loop = loop
        self.buffer = bytearray(size)
        self.use_memoryview = use_memoryview
        self.hash = hashlib.sha256()
        self.count = 0
        self.events = []
        self.bad_sizes = []
        self.transport = None
        self.eof = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def get_buffer(self, sizehint):
        assert isinstance(sizehint, int)
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        return memoryview(self.buffer) if self.use_memoryview else self.buffer

    def buffer_updated(self, nbytes):
        if not 0 < nbytes <= len(self.buffer):
            self.bad_sizes.append(nbytes)
        self.hash.update(self.buffer[:nbytes])
        self.count += nbytes

    def eof_received(self):
        self.events.append("eof")
        self.eof.set_result(None)

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


@pytest.mark.parametrize("size, use_memoryview", [(64 * 1024, False), (1000, True)])
def test_buffered_protocol_receives_a_large_transfer(any_loop, size, use_memoryview):
    payload = pattern(20 * MB if size > 1000 else 2 * MB, seed=10)

    async def main():
        async with tcp_pair(
            any_loop, client_factory=lambda: BufferedRecorder(any_loop, size, use_memoryview)
        ) as (_tr, client, sproto, _server):
            sproto.transport.write(payload)
            sproto.transport.close()
            assert await client.lost is None
            return client

    client = run(any_loop, main(), timeout=20)
    assert client.bad_sizes == []
    assert client.count == len(payload)
    assert client.hash.hexdigest() == hashlib.sha256(payload).hexdigest()
    assert client.events == ["made", "data", "eof", "lost"]


def test_buffered_protocol_on_the_server_side(any_loop):
    payload = pattern(10 * MB, seed=11)

    async def main():
        async with tcp_pair(any_loop, server_factory=lambda: BufferedRecorder(any_loop)) as (
            tr,
            _client,
            sproto,
            _server,
        ):
            assert isinstance(sproto, asyncio.BufferedProtocol)
            tr.write(payload)
            tr.write_eof()
            await sproto.eof
            return sproto

    sproto = run(any_loop, main(), timeout=20)
    assert sproto.count == len(payload)
    assert sproto.hash.hexdigest() == hashlib.sha256(payload).hexdigest()


class FailingBuffered(BufferedRecorder):
    def __init__(self, loop, mode):
        super().__init__(loop)
        self.mode = mode
        self.error = None

    def get_buffer(self, sizehint):
        if self.mode == "empty":
            return bytearray()
        if self.mode == "raise":
            self.error = ValueError("no buffer for you")
            raise self.error
        return super().get_buffer(sizehint)

    def buffer_updated(self, nbytes):
        if self.mode == "updated":
            self.error = KeyError("bad update")
            raise self.error
        super().buffer_updated(nbytes)


@pytest.mark.parametrize(
    "mode, message",
    [
        ("empty", "Fatal error: protocol.get_buffer() call failed."),
        ("raise", "Fatal error: protocol.get_buffer() call failed."),
        ("updated", "Fatal error: protocol.buffer_updated() call failed."),
    ],
)
def test_buffered_protocol_errors_close_the_transport(any_loop, handler_calls, mode, message):
    async def main():
        async with tcp_pair(any_loop, server_factory=lambda: FailingBuffered(any_loop, mode)) as (
            tr,
            client,
            sproto,
            _server,
        ):
            tr.write(b"trigger a read")
            lost_exc = await sproto.lost
            assert sproto.transport.is_closing()
            # The peer sees the connection go away: a RST rather than a FIN
            # when the data that triggered the failure was never read.
            peer_exc = await client.lost
            assert peer_exc is None or isinstance(peer_exc, ConnectionResetError)
            return lost_exc, sproto

    lost_exc, sproto = run(any_loop, main())
    assert len(handler_calls) == 1
    context = handler_calls[0]
    assert context["message"] == message
    if mode == "empty":
        assert type(context["exception"]) is RuntimeError
        assert str(context["exception"]) == "get_buffer() returned an empty buffer"
    else:
        assert context["exception"] is sproto.error
    assert context["transport"] is sproto.transport
    assert context["protocol"] is sproto
    assert lost_exc is context["exception"]
    # The loop keeps running.
    assert any_loop.run_until_complete(asyncio.sleep(0, "alive")) == "alive"


def test_set_protocol_switches_to_a_buffered_protocol(any_loop):
    payload = pattern(4 * MB, seed=12)

    class Switcher(Recorder):
        def data_received(self, data):
            super().data_received(data)
            self.transport.set_protocol(self.next)

    async def main():
        buffered = BufferedRecorder(any_loop)

        def factory():
            proto = Switcher(any_loop)
            proto.next = buffered
            return proto

        async with tcp_pair(any_loop, client_factory=factory) as (_tr, client, sproto, _server):
            sproto.transport.write(b"first")
            await wait_until(lambda: client.data)
            sproto.transport.write(payload)
            sproto.transport.close()
            await buffered.lost
            return client, buffered

    client, buffered = run(any_loop, main())
    first = bytes(client.data)
    assert first == b"first"
    assert buffered.count == len(payload)
    assert buffered.hash.hexdigest() == hashlib.sha256(payload).hexdigest()
    assert buffered.events == ["data", "eof", "lost"]


# --- exceptions in protocol callbacks -----------------------------------------


class Raising(Recorder):
    def __init__(self, loop, where):
        super().__init__(loop)
        self.where = where
        self.error = None

    def data_received(self, data):
        super().data_received(data)
        if self.where == "data":
            self.error = ZeroDivisionError("in data_received")
            raise self.error

    def eof_received(self):
        super().eof_received()
        if self.where == "eof":
            self.error = LookupError("in eof_received")
            raise self.error


@pytest.mark.parametrize(
    "where, message",
    [
        ("data", "Fatal error: protocol.data_received() call failed."),
        ("eof", "Fatal error: protocol.eof_received() call failed."),
    ],
)
def test_exception_in_protocol_callback_goes_to_the_handler(
    any_loop, handler_calls, where, message
):
    async def main():
        async with tcp_pair(any_loop, server_factory=lambda: Raising(any_loop, where)) as (
            tr,
            client,
            sproto,
            _server,
        ):
            tr.write(b"payload")
            if where == "eof":
                tr.write_eof()
            lost_exc = await sproto.lost
            assert sproto.transport.is_closing()
            assert await client.lost is None  # the server side closed
            return lost_exc, sproto

    lost_exc, sproto = run(any_loop, main())
    assert len(handler_calls) == 1
    context = handler_calls[0]
    assert context["message"] == message
    assert context["exception"] is sproto.error
    assert context["transport"] is sproto.transport
    assert context["protocol"] is sproto
    assert lost_exc is sproto.error
    assert sproto.events[-1] == "lost"
    assert sproto.events.count("lost") == 1
    assert any_loop.run_until_complete(asyncio.sleep(0, "alive")) == "alive"


def test_exception_in_connection_lost_still_releases_the_socket(any_loop, handler_calls):
    class BadLost(Recorder):
        def connection_lost(self, exc):
            super().connection_lost(exc)
            raise RuntimeError("in connection_lost")

    async def main():
        async with tcp_pair(any_loop, client_factory=lambda: BadLost(any_loop)) as (
            tr,
            client,
            sproto,
            _server,
        ):
            fd = tr.get_extra_info("socket").fileno()
            tr.close()
            await client.lost
            await sproto.lost  # the socket was closed: the peer got EOF
            await asyncio.sleep(0.01)
            return fd

    fd = run(any_loop, main())
    assert [str(c.get("exception")) for c in handler_calls] == ["in connection_lost"]
    assert fd >= 0


# --- connect_accepted_socket and create_connection(sock=) ----------------------


def test_connect_accepted_socket(any_loop):
    async def main():
        listener = socket.socket()
        listener.bind((HOST, 0))
        listener.listen()
        raw_client = socket.create_connection(listener.getsockname())
        conn, addr = listener.accept()
        listener.close()
        raw_client.setblocking(False)
        try:
            tr, proto = await any_loop.connect_accepted_socket(lambda: Recorder(any_loop), conn)
            assert isinstance(tr, asyncio.Transport)
            assert proto.events == ["made"]
            assert tr.get_extra_info("peername") == addr
            assert tr.get_extra_info("peername") == raw_client.getsockname()
            assert conn.gettimeout() == 0  # made non-blocking
            await any_loop.sock_sendall(raw_client, b"ping")
            await wait_until(lambda: proto.data == b"ping")
            tr.write(b"pong")
            tr.close()
            assert await recv_until_eof(any_loop, raw_client) == b"pong"
            assert await proto.lost is None
            assert proto.events == ["made", "data", "lost"]
        finally:
            raw_client.close()

    run(any_loop, main())


def test_connect_accepted_socket_refuses_a_datagram_socket(any_loop):
    async def main():
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
            pytest.raises(ValueError, match="A Stream Socket was expected"),
        ):
            await any_loop.connect_accepted_socket(asyncio.Protocol, sock)

    run(any_loop, main())


def test_create_connection_with_sock(any_loop):
    async def main():
        server_protocols = []

        def factory():
            server_protocols.append(Recorder(any_loop))
            return server_protocols[-1]

        server = await any_loop.create_server(factory, HOST, 0)
        sock = socket.create_connection(server.sockets[0].getsockname())
        try:
            tr, proto = await any_loop.create_connection(lambda: Recorder(any_loop), sock=sock)
            assert sock.gettimeout() == 0
            assert tr.get_extra_info("sockname") == sock.getsockname()
            tr.write(b"via sock=")
            tr.close()
            await wait_until(lambda: server_protocols and server_protocols[0].lost.done())
            assert server_protocols[0].data == b"via sock="
            assert await proto.lost is None
        finally:
            sock.close()
            server.close()
            await server.wait_closed()

    run(any_loop, main())


def test_create_connection_to_a_closed_port_is_refused(any_loop):
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]

    async def main():
        with pytest.raises(ConnectionRefusedError):
            await any_loop.create_connection(asyncio.Protocol, HOST, port)

    run(any_loop, main())


# --- resources ----------------------------------------------------------------


class CloseOnReply(asyncio.Protocol):
    def __init__(self, loop):
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        transport.write(b"ping")

    def data_received(self, data):
        self.transport.close()

    def connection_lost(self, exc):
        self.lost.set_result(exc)


class EchoThenLose(asyncio.Protocol):
    def __init__(self, loop, lost_list, close_first=False):
        self.lost = loop.create_future()
        lost_list.append(self.lost)
        self.close_first = close_first

    def connection_made(self, transport):
        self.transport = transport
        if self.close_first:
            transport.write(b"bye")
            transport.close()

    def data_received(self, data):
        self.transport.write(data)

    def connection_lost(self, exc):
        self.lost.set_result(exc)


class WaitForEof(asyncio.Protocol):
    def __init__(self, loop):
        self.lost = loop.create_future()

    def connection_lost(self, exc):
        self.lost.set_result(exc)


@pytest.mark.parametrize("who_closes", ["client", "server"])
def test_a_thousand_connections_leak_no_fd(any_loop, handler_calls, who_closes):
    async def main():
        gc.collect()
        before = open_fd_count()
        server_lost = []
        server = await any_loop.create_server(
            lambda: EchoThenLose(any_loop, server_lost, close_first=who_closes == "server"),
            HOST,
            0,
        )
        port = server.sockets[0].getsockname()[1]
        client_factory = (
            (lambda: CloseOnReply(any_loop))
            if who_closes == "client"
            else (lambda: WaitForEof(any_loop))
        )
        for _ in range(20):
            pairs = await asyncio.gather(
                *(any_loop.create_connection(client_factory, HOST, port) for _ in range(50))
            )
            results = await asyncio.gather(*(proto.lost for _, proto in pairs))
            assert results == [None] * 50
            del pairs
        await wait_until(lambda: len(server_lost) == 1000 and all(f.done() for f in server_lost))
        assert all(f.result() is None for f in server_lost)
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.01)
        gc.collect()
        return before, open_fd_count()

    before, after = run(any_loop, main(), timeout=60)
    assert after == before
    assert handler_calls == []


@pytest.mark.parametrize("client_kind", ["plain", "holds-transport", "buffered"])
def test_unclosed_transport_resource_warning(any_loop, client_kind):
    # "holds-transport": the protocol keeps its transport, a reference cycle
    # through the transport that only the garbage collector can break.
    client_factory = {
        "plain": asyncio.Protocol,
        "holds-transport": lambda: Recorder(any_loop),
        "buffered": lambda: BufferedRecorder(any_loop),
    }[client_kind]

    async def open_and_drop():
        server_protocols = []

        def factory():
            server_protocols.append(Recorder(any_loop))
            return server_protocols[-1]

        server = await any_loop.create_server(factory, HOST, 0)
        tr, proto = await any_loop.create_connection(
            client_factory, *server.sockets[0].getsockname()
        )
        # Paused, the loop holds no reference to the transport.
        tr.pause_reading()
        ref = weakref.ref(tr)
        del tr, proto
        await wait_until(lambda: server_protocols)
        return server, server_protocols[0], ref

    server, sproto, ref = run(any_loop, open_and_drop())
    with collected_warnings() as caught:
        pass
    assert ref() is None
    messages = [text for category, text in caught if issubclass(category, ResourceWarning)]
    # (the transport's socket may warn too)
    assert [m for m in messages if m.startswith("unclosed transport")], messages

    async def peer_sees_the_close():
        try:
            await sproto.lost
            assert sproto.events[-2:] == ["eof", "lost"]
        finally:
            server.close()
            await server.wait_closed()

    run(any_loop, peer_sees_the_close())


def test_closed_transport_gives_no_resource_warning(any_loop):
    async def main():
        async with tcp_pair(any_loop) as (tr, client, _sproto, _server):
            tr.close()
            await client.lost
            return weakref.ref(tr)

    with collected_warnings() as caught:
        ref = run(any_loop, main())
    assert ref() is None
    assert [text for _, text in caught if "unclosed transport" in text] == []


def test_repr_never_fails(any_loop):
    async def main():
        async with tcp_pair(any_loop) as (tr, client, sproto, server):
            reprs = [repr(tr), repr(sproto.transport), repr(server)]
            tr.write(pattern(8 * MB))
            reprs.append(repr(tr))
            sproto.transport.pause_reading()
            reprs.append(repr(sproto.transport))
            tr.close()
            reprs.append(repr(tr))
            tr.abort()
            await client.lost
            reprs.append(repr(tr))
            return tr, reprs

    tr, reprs = run(any_loop, main())
    any_loop.close()
    reprs.append(repr(tr))
    for r in reprs:
        assert isinstance(r, str) and r


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/self/fd")
def test_transport_fd_is_released_on_connection_lost(any_loop):
    async def main():
        async with tcp_pair(any_loop) as (tr, client, _sproto, _server):
            fd = tr.get_extra_info("socket").fileno()
            assert os.path.exists(f"/proc/self/fd/{fd}")
            target = os.readlink(f"/proc/self/fd/{fd}")
            tr.close()
            await client.lost
            gone = (
                not os.path.exists(f"/proc/self/fd/{fd}")
                or os.readlink(f"/proc/self/fd/{fd}") != target
            )
            return gone

    assert run(any_loop, main()) is True


# --- re-entrancy: what a protocol does inside its own callbacks ---------------


class PausingEachRead(asyncio.Protocol):
    """Pauses reading in every data_received and resumes a little later;
    records any data_received that arrives while paused."""

    def __init__(self, loop):
        self.loop = loop
        self.paused = False
        self.violations = 0
        self.calls = 0
        self.data = bytearray()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if self.paused:
            self.violations += 1
        self.calls += 1
        self.data += data
        self.paused = True
        self.transport.pause_reading()
        self.loop.call_later(0.001, self._resume)

    def _resume(self):
        self.paused = False
        self.transport.resume_reading()

    def eof_received(self):
        if self.paused:
            self.violations += 1

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def test_pause_reading_inside_data_received_stops_delivery_at_once(any_loop):
    payload = pattern(4 * MB, seed=13)

    async def main():
        async with tcp_pair(any_loop, server_factory=lambda: PausingEachRead(any_loop)) as (
            tr,
            _client,
            sproto,
            _server,
        ):
            tr.write(payload)
            tr.write_eof()
            assert await sproto.lost is None
            return sproto

    sproto = run(any_loop, main(), timeout=20)
    assert sproto.violations == 0
    assert sproto.calls > 1
    assert sproto.data == payload


def test_close_inside_data_received_stops_delivery(any_loop):
    class CloseOnFirstData(Recorder):
        def data_received(self, data):
            super().data_received(data)
            self.transport.close()

    async def main():
        async with tcp_pair(any_loop, server_factory=lambda: CloseOnFirstData(any_loop)) as (
            tr,
            _client,
            sproto,
            _server,
        ):
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


def test_data_written_in_connection_made_arrives_after_the_peers_connection_made(any_loop):
    class GreetAndClose(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.write(b"greeting")
            transport.close()

    async def main():
        async with tcp_pair(any_loop, server_factory=lambda: GreetAndClose(any_loop)) as (
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


@pytest.mark.parametrize("where", ["pause_writing", "resume_writing"])
def test_exception_in_pause_or_resume_writing_goes_to_the_handler(any_loop, handler_calls, where):
    payload = pattern(8 * MB, seed=14)

    class BadFlow(FlowClient):
        def pause_writing(self):
            super().pause_writing()
            if where == "pause_writing":
                self.error = ValueError("in pause_writing")
                raise self.error

        def resume_writing(self):
            super().resume_writing()
            if where == "resume_writing":
                self.error = ValueError("in resume_writing")
                raise self.error

    async def main():
        async with raw_peer(any_loop, lambda: BadFlow(any_loop)) as (tr, client, peer):
            tr.write(payload)
            got = await recv_exactly(any_loop, peer, len(payload))
            assert got == payload
            await wait_until(lambda: len(client.flow) == 2)
            assert not tr.is_closing()  # the transport carries on
            tr.write(b"more")
            assert await recv_exactly(any_loop, peer, 4) == b"more"
            return tr, client

    tr, client = run(any_loop, main())
    assert [kind for kind, _ in client.flow] == ["pause", "resume"]
    assert len(handler_calls) == 1
    context = handler_calls[0]
    assert context["message"] == f"protocol.{where}() failed"
    assert context["exception"] is client.error
    assert context["transport"] is tr
    assert context["protocol"] is client


def test_exception_in_connection_made_goes_to_the_handler(any_loop, handler_calls):
    class BadMade(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            self.error = RuntimeError("in connection_made")
            raise self.error

    async def main():
        async with tcp_pair(any_loop, server_factory=lambda: BadMade(any_loop)) as (
            tr,
            _client,
            sproto,
            _server,
        ):
            # asyncio reports the error and carries on: reading starts anyway.
            tr.write(b"still delivered")
            await wait_until(lambda: sproto.data == b"still delivered")
            assert not sproto.transport.is_closing()
            return sproto

    sproto = run(any_loop, main())
    assert [c.get("exception") for c in handler_calls] == [sproto.error]


def test_a_transports_fd_cannot_be_watched_directly(any_loop):
    async def main():
        async with tcp_pair(any_loop) as (tr, _client, sproto, _server):
            fd = tr.get_extra_info("socket").fileno()
            for method in (any_loop.add_reader, any_loop.add_writer):
                with pytest.raises(RuntimeError, match="is used by transport"):
                    method(fd, print)
            for method in (any_loop.remove_reader, any_loop.remove_writer):
                with pytest.raises(RuntimeError, match="is used by transport"):
                    method(fd)
            # the transport still works
            tr.write(b"ok")
            await wait_until(lambda: sproto.data == b"ok")

    run(any_loop, main())


# --- more close / abort combinations ------------------------------------------


def test_close_while_paused_reading_still_loses_the_connection(any_loop):
    async def main():
        async with tcp_pair(any_loop) as (tr, client, sproto, _server):
            tr.pause_reading()
            sproto.transport.write(b"never read")
            await asyncio.sleep(0.02)
            tr.close()
            assert await client.lost is None
            assert client.events == ["made", "lost"]
            await sproto.lost  # RST or FIN, the server side goes too

    run(any_loop, main())


def test_abort_after_close_with_a_buffer_discards_it(any_loop):
    payload = pattern(32 * MB, seed=15)

    async def main():
        async with raw_peer(any_loop, lambda: Recorder(any_loop)) as (tr, client, peer):
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


def test_peer_reset_while_a_closing_transport_flushes(any_loop, handler_calls):
    async def main():
        async with raw_peer(any_loop, lambda: Recorder(any_loop)) as (tr, client, peer):
            payload = pattern(32 * MB, seed=16)
            tr.write(payload)
            tr.close()
            assert await recv_exactly(any_loop, peer, MB) == payload[:MB]
            reset_close(peer)
            exc = await client.lost
            assert isinstance(exc, OSError), exc
            assert client.events == ["made", "lost"]

    run(any_loop, main())
    assert handler_calls == []


def test_both_directions_shut_is_not_a_close(any_loop):
    async def main():
        async with tcp_pair(
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


# --- more writing ---------------------------------------------------------------


def test_writelines_takes_any_iterable(any_loop):
    async def main():
        async with tcp_pair(any_loop) as (tr, _client, sproto, _server):
            tr.writelines(b"%d," % i for i in range(5))  # a generator
            tr.writelines((b"a", bytearray(b"b")))  # a tuple
            tr.writelines(iter([memoryview(b"c")]))
            tr.write_eof()
            await sproto.eof
            assert sproto.data == b"0,1,2,3,4,abc"

    run(any_loop, main())


def test_many_small_buffered_writes_arrive_in_order(any_loop):
    async def main():
        async with tcp_pair(any_loop) as (tr, _client, sproto, _server):
            sproto.transport.pause_reading()
            tr.set_write_buffer_limits(high=64 * MB)
            expected = bytearray()
            for i in range(100_000):
                chunk = b"%d;" % i
                expected += chunk
                if i % 3 == 0:
                    tr.write(chunk)
                elif i % 3 == 1:
                    tr.write(bytearray(chunk))
                else:
                    tr.writelines([chunk[:1], memoryview(chunk)[1:]])
            sproto.transport.resume_reading()
            tr.write_eof()
            await sproto.eof
            assert sproto.data == expected

    run(any_loop, main(), timeout=20)


def test_bidirectional_echo_with_back_pressure(any_loop):
    """An echo server that stops reading while its writes are paused, and a
    client that writes and reads 16 MiB at once: nothing may deadlock or
    go missing."""
    payload = pattern(16 * MB, seed=17)

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

        def pause_writing(self):
            self.transport.pause_reading()

        def resume_writing(self):
            self.transport.resume_reading()

        def eof_received(self):
            return True  # the reply is still flowing; close once written

    class Client(FlowClient):
        pass

    async def main():
        async with tcp_pair(
            any_loop, client_factory=lambda: Client(any_loop), server_factory=Echo
        ) as (tr, client, sproto, _server):
            for offset in range(0, len(payload), 128 * 1024):
                await client.can_write.wait()
                tr.write(payload[offset : offset + 128 * 1024])
            await wait_until(lambda: len(client.data) >= len(payload), timeout=15)
            assert client.data == payload
            sproto.transport.close()
            await client.lost

    run(any_loop, main(), timeout=30)


# --- protocols that are not asyncio.Protocol subclasses -------------------------


def test_a_duck_typed_protocol(any_loop):
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
        async with tcp_pair(any_loop, client_factory=Duck) as (_tr, client, sproto, _server):
            sproto.transport.write(b"quack")
            sproto.transport.close()
            assert await client.lost is None
            assert client.data == b"quack"
            assert client.events == ["made", "eof", "lost"]

    run(any_loop, main())


def test_buffered_protocol_with_a_read_only_buffer(any_loop, handler_calls):
    class ReadOnly(BufferedRecorder):
        def get_buffer(self, sizehint):
            return b"\0" * 1024  # bytes: recv_into cannot fill it

    async def main():
        async with tcp_pair(any_loop, server_factory=lambda: ReadOnly(any_loop)) as (
            tr,
            client,
            sproto,
            _server,
        ):
            tr.write(b"trigger")
            exc = await sproto.lost
            assert sproto.transport.is_closing()
            peer_exc = await client.lost
            assert peer_exc is None or isinstance(peer_exc, ConnectionResetError)
            return exc, sproto

    exc, sproto = run(any_loop, main())
    assert isinstance(exc, TypeError)
    assert len(handler_calls) == 1
    assert handler_calls[0]["message"] == "Fatal read error on socket transport"
    assert handler_calls[0]["exception"] is exc
    assert handler_calls[0]["protocol"] is sproto
    assert sproto.count == 0


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: None, "Fatal error: protocol.get_buffer() call failed."),  # len() fails
        (lambda: [0] * 16, "Fatal read error on socket transport"),  # not a buffer
        (lambda: "text", "Fatal read error on socket transport"),
    ],
    ids=["None", "list", "str"],
)
def test_buffered_protocol_get_buffer_returns_a_non_buffer(any_loop, handler_calls, make, message):
    class NotABuffer(BufferedRecorder):
        def get_buffer(self, sizehint):
            return make()

    async def main():
        async with tcp_pair(any_loop, server_factory=lambda: NotABuffer(any_loop)) as (
            tr,
            client,
            sproto,
            _server,
        ):
            tr.write(b"trigger")
            exc = await sproto.lost
            await client.lost
            return exc

    exc = run(any_loop, main())
    assert isinstance(exc, TypeError)
    assert [(c["message"], c["exception"]) for c in handler_calls] == [(message, exc)]


def test_write_of_a_non_contiguous_memoryview(any_loop, handler_calls):
    """asyncio does not raise from write(): the send fails, the error goes to
    the exception handler and the transport is closed."""

    async def main():
        async with tcp_pair(any_loop) as (tr, client, _sproto, _server):
            view = memoryview(bytearray(b"abcdefgh"))[::2]
            assert not view.c_contiguous
            tr.write(view)
            exc = await client.lost
            assert tr.is_closing()
            return exc

    exc = run(any_loop, main())
    assert isinstance(exc, BufferError)
    assert len(handler_calls) == 1
    assert handler_calls[0]["message"] == "Fatal write error on socket transport"
    assert handler_calls[0]["exception"] is exc


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_and_system_exit_in_data_received_propagate(any_loop, exc_type):
    """Unlike other exceptions, these are not handed to the exception handler:
    they propagate out of run_until_complete, and the loop stays usable."""

    class Interrupting(Recorder):
        def data_received(self, data):
            super().data_received(data)
            raise exc_type("from data_received")

    async def setup():
        protos = []

        def factory():
            protos.append(Interrupting(any_loop))
            return protos[-1]

        server = await any_loop.create_server(factory, HOST, 0)
        tr, client = await any_loop.create_connection(
            lambda: Recorder(any_loop), *server.sockets[0].getsockname()
        )
        await wait_until(lambda: protos and protos[0].transport is not None)
        return server, tr, client, protos[0]

    server, tr, client, sproto = run(any_loop, setup())
    tr.write(b"interrupt me")
    never = any_loop.create_future()
    timer = any_loop.call_later(3, never.set_result, "not interrupted")
    try:
        with pytest.raises(exc_type, match="from data_received"):
            any_loop.run_until_complete(never)
    finally:
        timer.cancel()

    async def cleanup():
        tr.close()
        sproto.transport.close()
        server.close()
        await server.wait_closed()
        await client.lost
        return "usable"

    assert run(any_loop, cleanup()) == "usable"


@pytest.mark.parametrize("keep_open", [1, "yes", [0]], ids=["int", "str", "list"])
def test_eof_received_truthy_value_keeps_the_transport_open(any_loop, keep_open):
    async def main():
        async with tcp_pair(
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


def test_write_buffer_limits_reset_to_the_defaults(any_loop):
    async def main():
        async with tcp_pair(any_loop) as (tr, _client, _sproto, _server):
            initial = tr.get_write_buffer_limits()
            tr.set_write_buffer_limits(high=10_000, low=2_000)
            tr.set_write_buffer_limits()
            return initial, tr.get_write_buffer_limits()

    initial, after = run(any_loop, main())
    assert after == initial


def test_pause_writing_only_above_the_high_water_mark(any_loop):
    payload = pattern(16 * MB, seed=18)

    async def main():
        async with raw_peer(any_loop, lambda: FlowClient(any_loop)) as (tr, client, peer):
            tr.set_write_buffer_limits(high=256 * MB)
            tr.write(payload)  # fills the kernel buffers; the rest is buffered
            size = tr.get_write_buffer_size()
            assert size > 0
            tr.set_write_buffer_limits(high=size, low=0)
            assert client.flow == []  # size == high: not above it
            tr.set_write_buffer_limits(high=size - 1, low=0)
            assert client.flow == [("pause", size)]
            got = await recv_exactly(any_loop, peer, len(payload))
            assert got == payload
            await wait_until(lambda: len(client.flow) == 2)
            assert client.flow[1] == ("resume", 0)

    run(any_loop, main())


def test_closed_transports_and_protocols_are_freed(any_loop):
    refs = []

    class Tracked(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            refs.append(weakref.ref(self))
            refs.append(weakref.ref(transport))

    async def main():
        server_protos = []

        def factory():
            server_protos.append(Tracked(any_loop))
            return server_protos[-1]

        server = await any_loop.create_server(factory, HOST, 0)
        addr = server.sockets[0].getsockname()
        for i in range(50):
            tr, proto = await any_loop.create_connection(lambda: Tracked(any_loop), *addr)
            tr.write(b"x" * i)
            if i % 2:
                tr.close()
            else:
                tr.abort()
            await proto.lost
        await wait_until(lambda: len(refs) == 200)
        await wait_until(lambda: all(p.lost.done() for p in server_protos))
        server_protos.clear()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.01)

    run(any_loop, main())
    gc.collect()
    alive = [r() for r in refs if r() is not None]
    assert alive == []
