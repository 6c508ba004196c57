"""Helpers shared by the transport tests (TCP, Unix, UDP, pipes, sendfile,
server, TLS); imported as a plain module, like support.py.

The protocols that record what a transport does to them live here (the
stream Recorder and its flow-control and BufferedProtocol kin), and so does
StreamFamily: the TCP or Unix stream server and client that the
stream_family fixture (conftest.py) hands the tests in test_stream_*.py."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import struct

import pytest

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


@contextlib.contextmanager
def nonblocking(*socks):
    """Makes the sockets non-blocking; yields them, and closes them on exit."""
    try:
        for sock in socks:
            sock.setblocking(False)
        yield socks
    finally:
        for sock in socks:
            sock.close()


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


# --- recording protocols ------------------------------------------------------


class Recorder(asyncio.Protocol):
    """Records every callback, in order; data_received coalesced as "data".

    eof_received returns keep_open; echo=True writes back what arrives;
    registry, a list, gets the protocol appended. A callback after
    connection_lost, or data that is empty or not bytes, fails the test
    (through the loop's exception handler: an AssertionError in a
    callback). Used by the stream, pipe, server and TLS tests."""

    def __init__(self, loop, keep_open=None, *, echo=False, registry=None):
        self.loop = loop
        self.keep_open = keep_open
        self.echo = echo
        self.events = []
        self.data = bytearray()
        self.data_types = set()
        self.transport = None
        self.lost_calls = 0
        self.lost_exc = None
        self.made = loop.create_future()
        self.eof = loop.create_future()
        self.lost = loop.create_future()
        self._want = None
        if registry is not None:
            registry.append(self)

    def _record(self, event):
        assert not self.lost.done(), f"{event!r} after connection_lost: {self.events}"
        self.events.append(event)

    def connection_made(self, transport):
        self._record("made")
        self.transport = transport
        self.made.set_result(transport)

    def data_received(self, data):
        assert data, "data_received with empty data"
        self.data_types.add(type(data))
        assert type(data) is bytes, type(data)
        if not self.events or self.events[-1] != "data":
            self._record("data")
        self.data += data
        if self.echo:
            self.transport.write(data)
        want = self._want
        if want is not None and len(self.data) >= want[0] and not want[1].done():
            want[1].set_result(None)

    def eof_received(self):
        self._record("eof")
        if not self.eof.done():
            self.eof.set_result(None)
        return self.keep_open

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost_calls += 1
        self.lost_exc = exc
        if not self.lost.done():
            self.lost.set_result(exc)
        assert self.lost_calls == 1, f"connection_lost called again: {self.events}"

    async def received(self, n, timeout=3.0):
        """Wait until n bytes in all have been received."""
        if len(self.data) < n:
            fut = self.loop.create_future()
            self._want = (n, fut)
            await asyncio.wait_for(fut, timeout)
        return bytes(self.data)


class FlowClient(FlowRecording, Recorder):
    """A Recorder that records pause_writing/resume_writing."""


async def read_all_then_resumed(loop, peer, client, expected):
    """A raw peer reads all that a FlowClient's transport sent (expected),
    and the transport, paused before, resumes writing: client.flow then
    holds the pause and the resume."""
    assert await recv_exactly(loop, peer, len(expected)) == expected
    await wait_until(lambda: len(client.flow) == 2)


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


class BufferedRecorder(asyncio.BufferedProtocol):
    """A BufferedProtocol that hashes what it gets and records its callbacks
    ("data" for a run of get_buffer calls); nbytes out of range are kept in
    .bad_sizes."""

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


# --- TCP and Unix stream connections ------------------------------------------


def reset_close(sock):
    """Close sock with SO_LINGER 0: a TCP peer gets a RST, not a FIN (an
    AF_UNIX peer gets ECONNRESET/EPIPE only if data was left unread)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class StreamFamily:
    """The stream tests' address family: "tcp" (a server on 127.0.0.1, port
    chosen by the kernel) or "unix" (a server on path). The stream_family
    fixture (conftest.py) makes one of each."""

    def __init__(self, name, path=None):
        assert name in ("tcp", "unix")
        self.name = name
        self.path = path
        self.socket_family = socket.AF_INET if name == "tcp" else socket.AF_UNIX

    def __repr__(self):
        return f"StreamFamily({self.name!r})"

    def start_server(self, loop, factory, **kw):
        """create_server on 127.0.0.1, or create_unix_server on the path."""
        if self.name == "tcp":
            return loop.create_server(factory, HOST, 0, **kw)
        return loop.create_unix_server(factory, self.path, **kw)

    def address(self, server):
        """Where server listens: (host, port), or the path."""
        if self.name == "tcp":
            return server.sockets[0].getsockname()[:2]
        return self.path

    def connect(self, loop, factory, address):
        """create_connection or create_unix_connection to address."""
        if self.name == "tcp":
            return loop.create_connection(factory, *address)
        return loop.create_unix_connection(factory, address)

    def start_stream_server(self, handle):
        """asyncio.start_server on 127.0.0.1, or start_unix_server on the path."""
        if self.name == "tcp":
            return asyncio.start_server(handle, HOST, 0)
        return asyncio.start_unix_server(handle, self.path)

    def open_stream(self, address):
        """asyncio.open_connection or open_unix_connection to address."""
        if self.name == "tcp":
            return asyncio.open_connection(*address)
        return asyncio.open_unix_connection(address)

    def pair(self, loop, client_factory=None, server_factory=None):
        """A server, and one client of it (stream_pair; Recorders unless
        told otherwise). Yields (client_transport, client_protocol,
        server_protocol, server)."""
        return stream_pair(
            loop,
            lambda factory: self.start_server(loop, factory),
            lambda server, factory: self.connect(loop, factory, self.address(server)),
            lambda: Recorder(loop),
            client_factory,
            server_factory,
        )

    def listening_socket(self):
        """A plain listening socket of this family (non-blocking)."""
        listener = socket.socket(self.socket_family, socket.SOCK_STREAM)
        listener.bind((HOST, 0) if self.name == "tcp" else str(self.path))
        listener.listen()
        listener.setblocking(False)
        return listener

    @contextlib.asynccontextmanager
    async def raw_peer(self, loop, client_factory=None):
        """A client (a Recorder unless told otherwise) whose peer is a plain
        accepted socket.

        Yields (client_transport, client_protocol, peer_socket)."""
        listener = self.listening_socket()
        address = listener.getsockname() if self.name == "tcp" else self.path
        conn = transport = None
        try:
            factory = client_factory or (lambda: Recorder(loop))
            connect = asyncio.ensure_future(self.connect(loop, factory, address))
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


# --- datagram endpoints -------------------------------------------------------


class DatagramRecorder(asyncio.DatagramProtocol):
    """Records every DatagramProtocol callback in order ("datagram" and
    "error" coalesced); the datagrams with their addresses, and the errors."""

    def __init__(self, loop):
        self.loop = loop
        self.events = []
        self.datagrams = []
        self.errors = []
        self.transport = None
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport

    def datagram_received(self, data, addr):
        if not self.events or self.events[-1] != "datagram":
            self.events.append("datagram")
        self.datagrams.append((data, addr))

    def error_received(self, exc):
        if not self.events or self.events[-1] != "error":
            self.events.append("error")
        self.errors.append(exc)

    def connection_lost(self, exc):
        self.events.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)


async def endpoint(loop, **kwargs):
    """create_datagram_endpoint with a DatagramRecorder."""
    return await loop.create_datagram_endpoint(lambda: DatagramRecorder(loop), **kwargs)


def closed_udp_port(host=HOST, family=socket.AF_INET):
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ipv6_available():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback")
