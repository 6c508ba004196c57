"""Unix stream transports made by create_unix_server / create_unix_connection
(and the stream helpers on top of them), on real AF_UNIX sockets in
tmp_path and in the Linux abstract namespace, with stock asyncio as the
reference.

https://docs.python.org/3/library/asyncio-eventloop.html#working-with-unix-sockets
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import pathlib
import socket
import stat
import sys
import uuid
import weakref

import pytest
from support import collected_warnings, open_fd_count
from transport_support import MB, FlowRecording, pattern, recv_exactly, run, stream_pair, wait_until

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs AF_UNIX")
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="Linux abstract namespace")
needs_313 = pytest.mark.skipif(
    sys.version_info < (3, 13), reason="create_unix_server(cleanup_socket=) is 3.13+"
)


# --- helpers ------------------------------------------------------------------


@pytest.fixture
def sock_path(tmp_path):
    # AF_UNIX paths are limited to ~108 bytes: keep it short.
    path = tmp_path / "s.sock"
    if len(os.fsencode(path)) > 100:
        pytest.skip("tmp_path is too long for an AF_UNIX path")
    return path


class Recorder(asyncio.Protocol):
    def __init__(self, loop, keep_open=None):
        self.loop = loop
        self.keep_open = keep_open
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.made = loop.create_future()
        self.eof = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport
        self.made.set_result(transport)

    def data_received(self, data):
        assert type(data) is bytes and data
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.data += data

    def eof_received(self):
        self.events.append("eof")
        self.eof.set_result(None)
        return self.keep_open

    def connection_lost(self, exc):
        self.events.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)


class FlowClient(FlowRecording, Recorder):
    """A Recorder that records pause_writing/resume_writing."""


def unix_pair(loop, path, client_factory=None, server_factory=None):
    """A create_unix_server server on path and one create_unix_connection
    client. Yields (client_transport, client_protocol, server_protocol, server)."""
    return stream_pair(
        loop,
        lambda factory: loop.create_unix_server(factory, path),
        lambda server, factory: loop.create_unix_connection(factory, path),
        lambda: Recorder(loop),
        client_factory,
        server_factory,
    )


def make_stale_socket_file(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(os.fspath(path))
    s.close()
    assert stat.S_ISSOCK(os.stat(path).st_mode)


# --- types and extra info -----------------------------------------------------


def test_unix_transport_types_and_extra_info(any_loop, sock_path):
    async def main():
        async with unix_pair(any_loop, sock_path) as (tr, client, sproto, server):
            path = str(sock_path)
            assert server.sockets[0].getsockname() == path
            str_ = sproto.transport
            for t in (tr, str_):
                assert isinstance(t, asyncio.Transport)
                assert not isinstance(t, asyncio.DatagramTransport)
                sock = t.get_extra_info("socket")
                assert sock.family == socket.AF_UNIX
                assert sock.type == socket.SOCK_STREAM
                assert t.get_extra_info("sockname") == sock.getsockname()
                assert t.get_extra_info("peername") == sock.getpeername()
                assert t.get_extra_info("missing", 42) == 42
                assert t.can_write_eof() is True
                assert t.is_reading() and not t.is_closing()
            # the client's socket is unnamed; the server's accepted one is the path
            assert tr.get_extra_info("peername") == path
            assert tr.get_extra_info("sockname") == ""
            assert str_.get_extra_info("sockname") == path
            assert str_.get_extra_info("peername") == ""
            assert tr.get_protocol() is client
            assert str_.get_protocol() is sproto

    run(any_loop, main())


def test_unix_callback_order_and_half_close(any_loop, sock_path, handler_calls):
    async def main():
        async with unix_pair(
            any_loop, sock_path, server_factory=lambda: Recorder(any_loop, keep_open=True)
        ) as (tr, client, sproto, _server):
            assert client.events == ["made"]
            tr.write(b"request")
            tr.write_eof()
            with pytest.raises(RuntimeError, match=r"after write_eof\(\)"):
                tr.write(b"too late")
            await sproto.eof
            assert sproto.data == b"request"
            assert not sproto.transport.is_closing()
            sproto.transport.write(b"response")
            sproto.transport.close()
            assert await client.lost is None
            assert await sproto.lost is None
            assert client.events == ["made", "data", "eof", "lost"]
            assert client.data == b"response"
            assert sproto.events == ["made", "data", "eof", "lost"]

    run(any_loop, main())
    assert handler_calls == []


@pytest.mark.parametrize("keep_open", [None, False])
def test_unix_eof_received_false_closes(any_loop, sock_path, keep_open):
    async def main():
        async with unix_pair(
            any_loop, sock_path, client_factory=lambda: Recorder(any_loop, keep_open=keep_open)
        ) as (tr, client, sproto, _server):
            sproto.transport.write(b"x")
            sproto.transport.write_eof()
            assert await client.lost is None
            assert tr.is_closing()
            assert client.events == ["made", "data", "eof", "lost"]
            assert await sproto.lost is None
            assert sproto.events == ["made", "eof", "lost"]

    run(any_loop, main())


def test_unix_writes_of_every_bytes_like_type(any_loop, sock_path):
    async def main():
        async with unix_pair(any_loop, sock_path) as (tr, _client, sproto, _server):
            tr.write(b"a")
            tr.write(bytearray(b"b"))
            tr.write(memoryview(b"xcx")[1:2])
            tr.writelines([b"d", bytearray(b"e"), memoryview(b"f")])
            with pytest.raises(TypeError, match="data argument must be a bytes"):
                tr.write("g")
            tr.close()
            tr.write(b"ignored after close")
            await sproto.lost
            assert sproto.data == b"abcdef"

    run(any_loop, main())


def test_unix_large_transfer_with_flow_control(any_loop, sock_path):
    chunk = pattern(256 * 1024, seed=1)
    chunks = 80  # 20 MiB

    async def main():
        async with unix_pair(
            any_loop,
            sock_path,
            client_factory=lambda: FlowClient(any_loop),
        ) as (tr, client, sproto, _server):
            sproto.transport.pause_reading()  # a slow reader
            any_loop.call_later(0.2, sproto.transport.resume_reading)
            low, high = tr.get_write_buffer_limits()
            for _ in range(chunks):
                await client.can_write.wait()
                tr.write(chunk)
            tr.write_eof()
            await sproto.eof
            assert len(sproto.data) == chunks * len(chunk)
            assert sproto.data == chunk * chunks
            await wait_until(lambda: tr.get_write_buffer_size() == 0)
            return low, high, client.flow

    low, high, flow = run(any_loop, main(), timeout=20)
    assert flow, "pause_writing was never called"
    assert [k for k, _ in flow] == ["pause", "resume"] * (len(flow) // 2)
    assert all(size > high for k, size in flow if k == "pause")
    assert all(size <= low for k, size in flow if k == "resume")


def test_unix_pause_and_resume_reading(any_loop, sock_path):
    async def main():
        async with unix_pair(any_loop, sock_path) as (tr, _client, sproto, _server):
            sproto.transport.pause_reading()
            sproto.transport.pause_reading()
            assert not sproto.transport.is_reading()
            tr.write(b"held back")
            await asyncio.sleep(0.1)
            assert sproto.events == ["made"]
            sproto.transport.resume_reading()
            await wait_until(lambda: sproto.data == b"held back")
            assert sproto.transport.is_reading()

    run(any_loop, main())


def test_unix_buffered_protocol(any_loop, sock_path):
    payload = pattern(8 * MB, seed=2)

    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(32 * 1024)
            self.received = bytearray()
            self.lost = any_loop.create_future()

        def get_buffer(self, sizehint):
            return self.buf

        def buffer_updated(self, nbytes):
            self.received += self.buf[:nbytes]

        def eof_received(self):
            return None

        def connection_lost(self, exc):
            self.lost.set_result(exc)

    async def main():
        async with unix_pair(any_loop, sock_path, client_factory=Buffered) as (
            _tr,
            client,
            sproto,
            _server,
        ):
            sproto.transport.write(payload)
            sproto.transport.close()
            assert await client.lost is None
            return client.received

    assert run(any_loop, main(), timeout=10) == payload


def test_unix_peer_closing_during_a_large_write(any_loop, sock_path, handler_calls):
    async def main():
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(sock_path))
        listener.listen()
        listener.setblocking(False)
        conn = None
        try:
            connect = asyncio.ensure_future(
                any_loop.create_unix_connection(lambda: Recorder(any_loop), sock_path)
            )
            conn, _ = await any_loop.sock_accept(listener)
            tr, client = await connect
            payload = pattern(32 * MB, seed=3)
            tr.write(payload)
            assert await recv_exactly(any_loop, conn, MB) == payload[:MB]
            conn.close()  # with unread data queued: the writer gets EPIPE/ECONNRESET
            exc = await client.lost
            assert isinstance(exc, OSError), exc
            assert tr.is_closing()
            assert tr.get_write_buffer_size() == 0
            assert client.events == ["made", "lost"]
        finally:
            if conn is not None:
                conn.close()
            listener.close()

    run(any_loop, main())
    assert any_loop.run_until_complete(asyncio.sleep(0, "alive")) == "alive"
    assert handler_calls == []


def test_unix_data_received_exception_closes_the_transport(any_loop, sock_path, handler_calls):
    class Bad(Recorder):
        def data_received(self, data):
            super().data_received(data)
            self.error = ArithmeticError("boom")
            raise self.error

    async def main():
        async with unix_pair(any_loop, sock_path, server_factory=lambda: Bad(any_loop)) as (
            tr,
            client,
            sproto,
            _server,
        ):
            tr.write(b"trigger")
            exc = await sproto.lost
            assert exc is sproto.error
            assert await client.lost is None
            return sproto

    sproto = run(any_loop, main())
    assert len(handler_calls) == 1
    context = handler_calls[0]
    assert context["message"] == "Fatal error: protocol.data_received() call failed."
    assert context["exception"] is sproto.error
    assert context["transport"] is sproto.transport
    assert context["protocol"] is sproto


# --- paths: stale files, abstract namespace, sock=, PathLike ------------------


def test_stale_socket_file_is_replaced(any_loop, sock_path):
    make_stale_socket_file(sock_path)

    async def main():
        async with unix_pair(any_loop, sock_path) as (tr, _client, sproto, _server):
            tr.write(b"through the new socket")
            await wait_until(lambda: sproto.data == b"through the new socket")

    run(any_loop, main())


def test_a_regular_file_in_the_way_is_left_alone(any_loop, sock_path):
    sock_path.write_bytes(b"precious")

    async def main():
        with pytest.raises(OSError) as info:
            await any_loop.create_unix_server(asyncio.Protocol, sock_path)
        return info.value

    exc = run(any_loop, main())
    assert exc.errno == errno.EADDRINUSE
    assert sock_path.read_bytes() == b"precious"


@linux_only
def test_abstract_namespace(any_loop, tmp_path):
    name = "\0ferroloop-test-" + uuid.uuid4().hex
    before = set(os.listdir(tmp_path))

    async def main():
        async with unix_pair(any_loop, name) as (tr, _client, sproto, server):
            assert server.sockets[0].getsockname() == name.encode()
            assert tr.get_extra_info("peername") == name.encode()
            assert sproto.transport.get_extra_info("sockname") == name.encode()
            tr.write(b"abstract")
            await wait_until(lambda: sproto.data == b"abstract")
        # closed: nobody listens on the name any more
        with pytest.raises(ConnectionRefusedError):
            await any_loop.create_unix_connection(asyncio.Protocol, name)

    run(any_loop, main())
    assert set(os.listdir(tmp_path)) == before


def test_pathlike_paths(any_loop, sock_path):
    assert isinstance(sock_path, pathlib.Path)

    async def main():
        async with unix_pair(any_loop, sock_path) as (tr, _client, _sproto, server):
            assert server.sockets[0].getsockname() == str(sock_path)
            assert tr.get_extra_info("peername") == str(sock_path)

    run(any_loop, main())


def test_server_and_connection_with_sock(any_loop, sock_path):
    async def main():
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(sock_path))
        protos = []

        def factory():
            protos.append(Recorder(any_loop))
            return protos[-1]

        server = await any_loop.create_unix_server(factory, sock=listener)
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            assert server.sockets[0].getsockname() == str(sock_path)
            raw.connect(str(sock_path))
            tr, proto = await any_loop.create_unix_connection(lambda: Recorder(any_loop), sock=raw)
            assert raw.gettimeout() == 0
            assert tr.get_extra_info("peername") == str(sock_path)
            tr.write(b"via sock=")
            tr.close()
            assert await proto.lost is None
            await wait_until(lambda: protos and protos[0].lost.done())
            assert protos[0].data == b"via sock="
        finally:
            raw.close()
            server.close()
            await server.wait_closed()

    run(any_loop, main())


def test_socketpair_transports(any_loop):
    async def main():
        a, b = socket.socketpair()
        ta, pa = await any_loop.create_unix_connection(lambda: Recorder(any_loop), sock=a)
        tb, pb = await any_loop.connect_accepted_socket(lambda: Recorder(any_loop), b)
        assert ta.get_extra_info("peername") == ""
        ta.write(b"a->b")
        tb.write(b"b->a")
        await wait_until(lambda: pa.data == b"b->a" and pb.data == b"a->b")
        ta.write_eof()
        await pb.eof
        tb.close()
        assert await pa.lost is None
        assert await pb.lost is None
        assert pa.events == ["made", "data", "eof", "lost"]
        assert pb.events == ["made", "data", "eof", "lost"]

    run(any_loop, main())


def test_unix_argument_errors(any_loop, sock_path):
    async def main():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            with pytest.raises(ValueError, match="path and sock can not be specified"):
                await any_loop.create_unix_server(asyncio.Protocol, sock_path, sock=s)
            with pytest.raises(ValueError, match="path and sock can not be specified"):
                await any_loop.create_unix_connection(asyncio.Protocol, sock_path, sock=s)
        with pytest.raises(ValueError):
            await any_loop.create_unix_server(asyncio.Protocol)
        with pytest.raises(ValueError):
            await any_loop.create_unix_connection(asyncio.Protocol)
        for family, type_ in (
            (socket.AF_UNIX, socket.SOCK_DGRAM),
            (socket.AF_INET, socket.SOCK_STREAM),
        ):
            with socket.socket(family, type_) as s:
                with pytest.raises(ValueError, match="A UNIX Domain Stream Socket was expected"):
                    await any_loop.create_unix_server(asyncio.Protocol, sock=s)
                with pytest.raises(ValueError, match="A UNIX Domain Stream Socket was expected"):
                    await any_loop.create_unix_connection(asyncio.Protocol, sock=s)

    run(any_loop, main())


def test_unix_connection_errors(any_loop, sock_path):
    async def main():
        with pytest.raises(FileNotFoundError):
            await any_loop.create_unix_connection(asyncio.Protocol, sock_path)
        make_stale_socket_file(sock_path)
        with pytest.raises(ConnectionRefusedError):
            await any_loop.create_unix_connection(asyncio.Protocol, sock_path)

    run(any_loop, main())


# --- streams ------------------------------------------------------------------


def test_unix_streams_echo(any_loop, sock_path):
    async def handle(reader, writer):
        while line := await reader.readline():
            writer.write(line.upper())
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_unix_server(handle, sock_path)
        async with server:
            reader, writer = await asyncio.open_unix_connection(sock_path)
            got = []
            for line in (b"abc\n", b"x" * 50_000 + b"\n"):
                writer.write(line)
                await writer.drain()
                got.append(await reader.readline())
            writer.write_eof()
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()
            return got

    assert run(any_loop, main()) == [b"ABC\n", b"X" * 50_000 + b"\n"]


# --- socket file cleanup ------------------------------------------------------


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="3.13+ removes the file (cleanup_socket)")
def test_socket_file_stays_after_close_before_313(any_loop, sock_path):
    async def main():
        server = await any_loop.create_unix_server(asyncio.Protocol, sock_path)
        server.close()
        await server.wait_closed()

    run(any_loop, main())
    assert stat.S_ISSOCK(os.stat(sock_path).st_mode)


@needs_313
@pytest.mark.parametrize("via_sock", [False, True])
def test_cleanup_socket_removes_the_file(any_loop, sock_path, via_sock):
    async def main():
        if via_sock:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(str(sock_path))
            server = await any_loop.create_unix_server(asyncio.Protocol, sock=s)
        else:
            server = await any_loop.create_unix_server(asyncio.Protocol, sock_path)
        assert sock_path.exists()
        server.close()
        await server.wait_closed()

    run(any_loop, main())
    assert not sock_path.exists()


@needs_313
def test_cleanup_socket_false_keeps_the_file(any_loop, sock_path):
    async def main():
        server = await any_loop.create_unix_server(
            asyncio.Protocol, sock_path, cleanup_socket=False
        )
        server.close()
        await server.wait_closed()

    run(any_loop, main())
    assert stat.S_ISSOCK(os.stat(sock_path).st_mode)


@needs_313
def test_cleanup_socket_leaves_a_replaced_file_alone(any_loop, sock_path):
    async def main():
        server = await any_loop.create_unix_server(asyncio.Protocol, sock_path)
        os.unlink(sock_path)
        sock_path.write_bytes(b"someone else's")
        server.close()
        await server.wait_closed()

    run(any_loop, main())
    assert sock_path.read_bytes() == b"someone else's"


# --- resources ----------------------------------------------------------------


def test_a_thousand_unix_connections_leak_no_fd(any_loop, sock_path, handler_calls):
    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)
            self.transport.close()

    class Client(asyncio.Protocol):
        def __init__(self):
            self.lost = any_loop.create_future()

        def connection_made(self, transport):
            transport.write(b"ping")

        def connection_lost(self, exc):
            self.lost.set_result(exc)

    async def main():
        gc.collect()
        before = open_fd_count()
        server = await any_loop.create_unix_server(Echo, sock_path)
        for _ in range(20):
            pairs = await asyncio.gather(
                *(any_loop.create_unix_connection(Client, sock_path) for _ in range(50))
            )
            assert await asyncio.gather(*(p.lost for _, p in pairs)) == [None] * 50
            del pairs
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.02)
        gc.collect()
        return before, open_fd_count()

    before, after = run(any_loop, main(), timeout=60)
    assert after == before
    assert handler_calls == []


def test_unix_unclosed_transport_resource_warning(any_loop, sock_path):
    async def open_and_drop():
        server = await any_loop.create_unix_server(asyncio.Protocol, sock_path)
        tr, _ = await any_loop.create_unix_connection(asyncio.Protocol, sock_path)
        tr.pause_reading()
        ref = weakref.ref(tr)
        del tr
        return server, ref

    server, ref = run(any_loop, open_and_drop())
    with collected_warnings() as caught:
        pass
    assert ref() is None
    messages = [text for category, text in caught if issubclass(category, ResourceWarning)]
    # (the transport's socket may warn too)
    assert [m for m in messages if m.startswith("unclosed transport")], messages

    async def close_server():
        server.close()
        await server.wait_closed()

    run(any_loop, close_server())


def test_unix_repr_never_fails(any_loop, sock_path):
    async def main():
        async with unix_pair(any_loop, sock_path) as (tr, client, sproto, server):
            reprs = [repr(tr), repr(sproto.transport), repr(server)]
            tr.close()
            reprs.append(repr(tr))
            await client.lost
            reprs.append(repr(tr))
            return reprs

    for r in run(any_loop, main()):
        assert isinstance(r, str) and r
