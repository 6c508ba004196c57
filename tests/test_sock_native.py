"""The native halves of sock_recv / sock_recv_into / sock_sendall: the
paths where the socket is not ready at once (waiter registered), and their
error and cancellation cases, each checked against stock asyncio."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest
from support import registered_fds


def test_sock_recv_waits_for_data_sent_later(any_loop, sockpair):
    a, b = sockpair

    async def main():
        any_loop.call_later(0.01, b.send, b"late")
        return await any_loop.sock_recv(a, 100)

    assert any_loop.run_until_complete(asyncio.wait_for(main(), 10)) == b"late"
    assert a.fileno() not in registered_fds(any_loop)


def test_sock_recv_into_waits_and_fills_the_buffer(any_loop, sockpair):
    a, b = sockpair
    buf = bytearray(8)

    async def main():
        any_loop.call_later(0.01, b.send, b"0123456789")
        return await any_loop.sock_recv_into(a, buf)

    assert any_loop.run_until_complete(asyncio.wait_for(main(), 10)) == 8
    assert buf == b"01234567"


def test_sock_recv_into_refuses_a_read_only_buffer(any_loop, sockpair):
    a, b = sockpair
    b.send(b"x")
    with pytest.raises(TypeError):
        any_loop.run_until_complete(any_loop.sock_recv_into(a, b"immutable"))


def test_sock_recv_returns_empty_bytes_at_eof(any_loop, sockpair):
    a, b = sockpair

    async def main():
        any_loop.call_later(0.01, b.shutdown, socket.SHUT_WR)
        return await any_loop.sock_recv(a, 100)

    assert any_loop.run_until_complete(asyncio.wait_for(main(), 10)) == b""


def test_sock_recv_reports_a_peer_reset(any_loop):
    async def main():
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            listener.setblocking(False)
            with socket.socket() as client:
                client.setblocking(False)
                await any_loop.sock_connect(client, listener.getsockname())
                server, _ = await any_loop.sock_accept(listener)
                # SO_LINGER 0: close sends a RST instead of a FIN.
                server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                any_loop.call_later(0.01, server.close)
                with pytest.raises(ConnectionResetError):
                    await any_loop.sock_recv(client, 100)

    any_loop.run_until_complete(asyncio.wait_for(main(), 10))


def test_sock_sendall_waits_for_a_slow_reader_and_delivers_everything(any_loop, sockpair):
    a, b = sockpair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    payload = bytes(range(256)) * 4096  # 1 MiB: far more than the buffers hold

    async def reader():
        got = bytearray()
        while len(got) < len(payload):
            await asyncio.sleep(0.001)
            got += await any_loop.sock_recv(b, 65536)
        return bytes(got)

    async def main():
        read = any_loop.create_task(reader())
        await any_loop.sock_sendall(a, memoryview(payload))
        return await read

    assert any_loop.run_until_complete(asyncio.wait_for(main(), 30)) == payload
    assert a.fileno() not in registered_fds(any_loop)


def test_sock_sendall_cancelled_leaves_no_writer(any_loop, sockpair):
    a, _ = sockpair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    async def main():
        task = any_loop.create_task(any_loop.sock_sendall(a, b"x" * (4 << 20)))
        await asyncio.sleep(0.01)
        assert a.fileno() in registered_fds(any_loop)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    any_loop.run_until_complete(asyncio.wait_for(main(), 10))
    assert a.fileno() not in registered_fds(any_loop)


def test_sock_sendall_to_a_closed_peer_raises(any_loop, sockpair):
    a, b = sockpair
    b.close()
    with pytest.raises(BrokenPipeError):
        any_loop.run_until_complete(any_loop.sock_sendall(a, b"x" * 100_000))


def test_sock_recv_on_an_fd_owned_by_a_transport_is_refused(any_loop, sockpair):
    a, _ = sockpair

    async def main():
        transport, _ = await any_loop.create_connection(asyncio.Protocol, sock=a)
        try:
            with pytest.raises(RuntimeError, match="is used by transport"):
                await any_loop.sock_recv(a, 10)
        finally:
            transport.close()

    any_loop.run_until_complete(asyncio.wait_for(main(), 10))


def test_negative_recv_size_is_a_value_error(any_loop, sockpair):
    a, _ = sockpair
    with pytest.raises(ValueError):
        any_loop.run_until_complete(any_loop.sock_recv(a, -1))
