"""What is TCP's own in stream transports (the rest, the same on TCP and
Unix sockets, is in test_stream_*.py): a peer's RST, connect_accepted_socket
and create_connection(sock=), a refused connection, and the heap tuning the
first loop does, on real 127.0.0.1 sockets with stock asyncio as the
reference.

https://docs.python.org/3/library/asyncio-protocol.html
"""

from __future__ import annotations

import asyncio
import os
import platform
import socket

import pytest
from support import python_child
from transport_support import (
    HOST,
    MB,
    Recorder,
    StreamFamily,
    pattern,
    recv_exactly,
    recv_until_eof,
    reset_close,
    run,
    wait_until,
)

TCP = StreamFamily("tcp")


# --- a peer that resets the connection ----------------------------------------


def test_peer_reset_gives_connection_reset_error(any_loop, handler_calls):
    async def main():
        async with TCP.raw_peer(any_loop) as (tr, client, peer):
            reset_close(peer)
            exc = await client.lost
            assert isinstance(exc, ConnectionResetError)
            assert client.events == ["made", "lost"]
            assert tr.is_closing()

    run(any_loop, main())
    # An OSError on the socket is not reported to the exception handler.
    assert handler_calls == []


def test_peer_reset_while_a_closing_transport_flushes(any_loop, handler_calls):
    async def main():
        async with TCP.raw_peer(any_loop) as (tr, client, peer):
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


# --- connect_accepted_socket and create_connection(sock=) ---------------------


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


# --- heap tuning --------------------------------------------------------------


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
    out = python_child(MALLOC_PROBE_CHILD, {**clean, **env}, check=True)
    assert out.stdout.strip() == expected
