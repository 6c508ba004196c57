"""Helpers shared by the transport tests (TCP, Unix, UDP, sendfile, server,
TLS); imported as a plain module, like support.py."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib

HOST = "127.0.0.1"
MB = 1024 * 1024


def run(loop, coro, timeout=5.0):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


async def wait_until(predicate, timeout=3.0):
    """Poll until predicate() is true; fail the test if it never is."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.002)


def pattern(n: int, seed: int = 0) -> bytes:
    """n bytes that are not a repetition of one short block."""
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    shifted = [block[i % 61 :] + block[: i % 61] for i in range(17)]
    out = bytearray()
    i = 0
    while len(out) < n:
        out += shifted[i % 17]
        i += 1
    return bytes(out[:n])


async def recv_exactly(loop, sock, n):
    """Up to n bytes from a non-blocking socket (fewer if it reaches EOF)."""
    buf = bytearray()
    while len(buf) < n:
        chunk = await loop.sock_recv(sock, min(n - len(buf), MB))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


async def recv_until_eof(loop, sock):
    """Everything a non-blocking socket receives until EOF."""
    buf = bytearray()
    while chunk := await loop.sock_recv(sock, MB):
        buf += chunk
    return bytes(buf)


class FlowRecording:
    """Mixin for a recording protocol: pause_writing and resume_writing are
    recorded in .flow with the write buffer size, and .can_write is set
    while writing may go on."""

    def __init__(self, loop):
        super().__init__(loop)
        self.flow = []
        self.can_write = asyncio.Event()
        self.can_write.set()

    def pause_writing(self):
        self.flow.append(("pause", self.transport.get_write_buffer_size()))
        self.can_write.clear()

    def resume_writing(self):
        self.flow.append(("resume", self.transport.get_write_buffer_size()))
        self.can_write.set()


@contextlib.asynccontextmanager
async def stream_pair(loop, start_server, connect, default_factory, client_factory, server_factory):
    """A server made by start_server(factory), and one client made by
    connect(server, protocol_factory); protocols come from client_factory /
    server_factory, or default_factory when those are None.

    Yields (client_transport, client_protocol, server_protocol, server)."""
    server_protocols = []

    def factory():
        proto = server_factory() if server_factory else default_factory()
        server_protocols.append(proto)
        return proto

    server = await start_server(factory)
    transport = None
    try:
        transport, client = await connect(server, client_factory or default_factory)
        await wait_until(lambda: server_protocols and server_protocols[0].transport is not None)
        yield transport, client, server_protocols[0], server
    finally:
        # (asyncio's abort() fails once a close() has flushed a buffer and
        # lost the connection, so only transports still open are aborted.)
        if transport is not None and not transport.is_closing():
            transport.abort()
        for proto in server_protocols:
            if proto.transport is not None and not proto.transport.is_closing():
                proto.transport.abort()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.01)  # let connection_lost callbacks run


async def recv_until_closed(loop, sock):
    """Everything a socket receives until the TCP connection ends (EOF or
    reset; recv_until_eof lets a reset raise)."""
    buf = bytearray()
    while True:
        try:
            chunk = await loop.sock_recv(sock, MB)
        except ConnectionResetError:
            break
        if not chunk:
            break
        buf += chunk
    return bytes(buf)
