"""What is AF_UNIX's own in stream transports (the rest, the same on TCP and
Unix sockets, is in test_stream_*.py, and asyncio's streams echo in
test_transports_smoke.py): create_unix_server / create_unix_connection's
paths (stale socket files, the Linux abstract namespace, PathLike, sock=,
socketpairs), their argument errors, and the socket file's cleanup, on
real AF_UNIX sockets in tmp_path, with stock asyncio as the reference.

https://docs.python.org/3/library/asyncio-eventloop.html#working-with-unix-sockets
"""

from __future__ import annotations

import asyncio
import errno
import os
import pathlib
import socket
import stat
import sys
import uuid

import pytest
from transport_support import Recorder, StreamFamily, run, wait_until

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs AF_UNIX")
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="Linux abstract namespace")
needs_313 = pytest.mark.skipif(
    sys.version_info < (3, 13), reason="create_unix_server(cleanup_socket=) is 3.13+"
)


# --- helpers ------------------------------------------------------------------


def make_stale_socket_file(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(os.fspath(path))
    s.close()
    assert stat.S_ISSOCK(os.stat(path).st_mode)


# --- paths: stale files, abstract namespace, sock=, PathLike ------------------


def test_stale_socket_file_is_replaced(any_loop, sock_path):
    make_stale_socket_file(sock_path)

    async def main():
        async with StreamFamily("unix", sock_path).pair(any_loop) as (tr, _client, sproto, _server):
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
        async with StreamFamily("unix", name).pair(any_loop) as (tr, _client, sproto, server):
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
        async with StreamFamily("unix", sock_path).pair(any_loop) as (tr, _client, _sproto, server):
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
