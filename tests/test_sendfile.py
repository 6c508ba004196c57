"""loop.sendfile over TCP, Unix and TLS transports, and loop.sock_sendfile
on raw sockets, with real temporary files; stock asyncio is the reference.

https://docs.python.org/3/library/asyncio-eventloop.html#asyncio.loop.sendfile
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import socket
import ssl
import struct
import subprocess

import pytest
from transport_support import (
    HOST,
    MB,
    Recorder,
    StreamFamily,
    nonblocking,
    recv_exactly,
    run,
    wait_until,
)

FILE_SIZE = 4 * MB + 12_345


# --- helpers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def content():
    return os.urandom(FILE_SIZE)


@pytest.fixture
def data_file(tmp_path, content):
    path = tmp_path / "payload.bin"
    path.write_bytes(content)
    with open(path, "rb") as f:
        yield f


@pytest.fixture(scope="module")
def big_content():
    # Bigger than what loopback socket buffers can hold in flight, so that
    # a sendfile to a peer that does not read cannot finish at once.
    return os.urandom(1024 * 1024) * 32


@pytest.fixture
def big_file(tmp_path, big_content):
    path = tmp_path / "big.bin"
    path.write_bytes(big_content)
    with open(path, "rb") as f:
        yield f


def pause_reading_for(transport, seconds):
    # (Not from connection_made: Python 3.10 starts reading after it anyway.)
    transport.pause_reading()
    asyncio.get_running_loop().call_later(seconds, transport.resume_reading)


@contextlib.asynccontextmanager
async def tcp_pair(loop, server_factory=None, unix_path=None):
    """A TCP (or, given unix_path, Unix) server and one client of it; the
    protocols are Recorders that keep the connection open on EOF unless
    server_factory says otherwise. Yields (client_transport,
    client_protocol, server_protocol)."""
    family = StreamFamily("tcp") if unix_path is None else StreamFamily("unix", unix_path)
    async with family.pair(
        loop,
        client_factory=lambda: Recorder(loop, keep_open=True),
        server_factory=server_factory or (lambda: Recorder(loop, keep_open=True)),
    ) as (tr, client, sproto, _server):
        yield tr, client, sproto


@contextlib.asynccontextmanager
async def raw_stream_pair():
    """Two connected non-blocking TCP sockets."""
    with socket.create_server((HOST, 0)) as listener:
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
    with nonblocking(a, b) as pair:
        yield pair


# --- loop.sendfile over TCP ---------------------------------------------------


@pytest.mark.parametrize(
    "offset, count",
    [
        (0, None),
        (1000, None),
        (1000, 100_000),
        (0, 1),
        (FILE_SIZE - 10, None),
        (0, FILE_SIZE + 1000),  # more than there is: stops at EOF
        (3 * MB, 2 * MB),  # ditto, from an offset
    ],
)
def test_sendfile_offset_and_count(any_loop, data_file, content, offset, count):
    expected = content[offset : None if count is None else offset + count]

    async def main():
        async with tcp_pair(any_loop) as (tr, _client, sproto):
            if count is None:
                sent = await any_loop.sendfile(tr, data_file, offset)
            else:
                sent = await any_loop.sendfile(tr, data_file, offset, count)
            tr.write_eof()
            await sproto.eof
            return sent, bytes(sproto.data)

    sent, got = run(any_loop, main())
    assert sent == len(expected)
    assert got == expected
    # "File position is always updated"
    assert data_file.tell() == offset + sent


def test_sendfile_keeps_order_with_buffered_writes(any_loop, data_file, content):
    head = os.urandom(16 * MB)  # buffered: the peer starts with reading paused

    async def main():
        async with tcp_pair(any_loop) as (tr, _client, sproto):
            pause_reading_for(sproto.transport, 0.2)
            tr.write(head)
            assert tr.get_write_buffer_size() > 0
            sent = await any_loop.sendfile(tr, data_file)
            assert tr.get_write_buffer_size() == 0
            tr.write(b"tail")
            tr.write_eof()
            await sproto.eof
            return sent, bytes(sproto.data)

    sent, got = run(any_loop, main(), timeout=15)
    assert sent == len(content)
    assert got == head + content + b"tail"


def test_transport_works_both_ways_after_sendfile(any_loop, data_file, content):
    async def main():
        async with tcp_pair(any_loop) as (tr, client, sproto):
            assert tr.is_reading()
            await any_loop.sendfile(tr, data_file)
            assert tr.is_reading()  # reading resumed
            sproto.transport.write(b"to the client")
            await wait_until(lambda: client.data == b"to the client")
            tr.write(b"!")
            await wait_until(lambda: len(sproto.data) == len(content) + 1)
            return bytes(sproto.data)

    assert run(any_loop, main()) == content + b"!"


def test_sendfile_leaves_a_paused_transport_paused(any_loop, data_file, content):
    async def main():
        async with tcp_pair(any_loop) as (tr, client, sproto):
            tr.pause_reading()
            sproto.transport.write(b"held")
            await any_loop.sendfile(tr, data_file)
            assert not tr.is_reading()
            await asyncio.sleep(0.05)
            assert client.data == b""
            tr.resume_reading()
            await wait_until(lambda: client.data == b"held")
            await wait_until(lambda: len(sproto.data) == len(content))

    run(any_loop, main())


def test_write_during_sendfile_raises(any_loop, big_file, big_content):
    data_file, content = big_file, big_content

    async def main():
        async with tcp_pair(any_loop) as (tr, _client, sproto):
            pause_reading_for(sproto.transport, 0.2)
            # a big file and a peer that is not reading yet: sendfile takes a while
            task = asyncio.ensure_future(any_loop.sendfile(tr, data_file))
            await asyncio.sleep(0.02)
            assert not task.done()
            with pytest.raises(RuntimeError, match="sendfile is in progress"):
                tr.write(b"interleaved")
            assert await task == len(content)
            tr.write(b"after")
            await wait_until(lambda: len(sproto.data) == len(content) + 5)
            return bytes(sproto.data)

    assert run(any_loop, main()) == content + b"after"


def test_cancelled_sendfile_leaves_the_transport_usable(any_loop, big_file, big_content):
    data_file, content = big_file, big_content

    async def main():
        async with tcp_pair(any_loop) as (tr, _client, sproto):
            pause_reading_for(sproto.transport, 0.3)
            task = asyncio.ensure_future(any_loop.sendfile(tr, data_file))
            await asyncio.sleep(0.05)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not tr.is_closing()
            tr.write(b"MARK")
            tr.write_eof()
            await sproto.eof
            return bytes(sproto.data)

    got = run(any_loop, main())
    assert got.endswith(b"MARK")
    sent_part = got[:-4]
    assert len(sent_part) < len(content)
    assert content.startswith(sent_part)


def test_sendfile_when_the_peer_resets(any_loop, big_file, handler_calls):
    data_file = big_file

    async def main():
        listener = socket.socket()
        listener.bind((HOST, 0))
        listener.listen()
        listener.setblocking(False)
        conn = None
        try:
            connect = asyncio.ensure_future(
                any_loop.create_connection(
                    lambda: Recorder(any_loop, keep_open=True), *listener.getsockname()
                )
            )
            conn, _ = await any_loop.sock_accept(listener)
            tr, client = await connect
            task = asyncio.ensure_future(any_loop.sendfile(tr, data_file))
            await recv_exactly(any_loop, conn, 64 * 1024)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            conn = None
            with pytest.raises(ConnectionError):
                await task
            # the transport notices too: a reset, or (the error having been
            # reported to sendfile already) an EOF
            await asyncio.wait([client.eof, client.lost], return_when=asyncio.FIRST_COMPLETED)
            if client.lost.done():
                assert client.lost.result() is None or isinstance(client.lost.result(), OSError)
            tr.close()
            assert 0 < data_file.tell() < 32 * MB
        finally:
            if conn is not None:
                conn.close()
            listener.close()

    run(any_loop, main())
    assert any_loop.run_until_complete(asyncio.sleep(0, "alive")) == "alive"
    assert handler_calls == []


def test_sendfile_over_unix(any_loop, data_file, content, tmp_path):
    async def main():
        async with tcp_pair(any_loop, unix_path=str(tmp_path / "sf.sock")) as (tr, _client, sproto):
            sent = await any_loop.sendfile(tr, data_file, 10, 2 * MB)
            tr.write_eof()
            await sproto.eof
            return sent, bytes(sproto.data)

    sent, got = run(any_loop, main())
    assert sent == 2 * MB
    assert got == content[10 : 10 + 2 * MB]


# --- fallback and errors ------------------------------------------------------


def test_sendfile_of_a_non_regular_file(any_loop, content):
    async def main():
        async with tcp_pair(any_loop) as (tr, _client, sproto):
            buf = io.BytesIO(content[:100_000])
            with pytest.raises(asyncio.SendfileNotAvailableError):
                await any_loop.sendfile(tr, buf, fallback=False)
            # nothing was sent, the transport is intact, and the fallback works
            assert not tr.is_closing()
            assert tr.is_reading()
            sent = await any_loop.sendfile(tr, buf, 5, 50_000)
            tr.write_eof()
            await sproto.eof
            return sent, bytes(sproto.data), buf.tell()

    sent, got, pos = run(any_loop, main())
    assert sent == 50_000
    assert got == content[5:50_005]
    assert pos == 50_005


def test_sendfile_on_a_datagram_transport_is_unsupported(any_loop, data_file):
    async def main():
        tr, _ = await any_loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=(HOST, 0)
        )
        try:
            for fallback in (True, False):
                with pytest.raises(RuntimeError, match="sendfile is not supported for transport"):
                    await any_loop.sendfile(tr, data_file, fallback=fallback)
        finally:
            tr.close()

    run(any_loop, main())


def test_sendfile_on_a_closing_transport(any_loop, data_file):
    async def main():
        async with tcp_pair(any_loop) as (tr, _client, _sproto):
            tr.close()
            with pytest.raises(RuntimeError, match="Transport is closing"):
                await any_loop.sendfile(tr, data_file)

    run(any_loop, main())


def test_sendfile_argument_errors(any_loop, data_file, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("hello")

    async def main():
        async with tcp_pair(any_loop) as (tr, _client, sproto):
            with open(text) as tf, pytest.raises(ValueError, match="binary mode"):  # noqa: ASYNC230
                await any_loop.sendfile(tr, tf)
            with pytest.raises(ValueError, match="count must be a positive integer"):
                await any_loop.sendfile(tr, data_file, 0, 0)
            with pytest.raises(TypeError, match="count must be a positive integer"):
                await any_loop.sendfile(tr, data_file, 0, "10")
            with pytest.raises(ValueError, match="offset must be a non-negative integer"):
                await any_loop.sendfile(tr, data_file, -1)
            with pytest.raises(TypeError, match="offset must be a non-negative integer"):
                await any_loop.sendfile(tr, data_file, 1.5)
            # the transport survived all of that
            assert not tr.is_closing() and tr.is_reading()
            tr.write(b"ok")
            await wait_until(lambda: sproto.data == b"ok")

    run(any_loop, main())


def _make_certificate(directory):
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.fixture(scope="module")
def tls_contexts(tmp_path_factory):
    cert, key = _make_certificate(tmp_path_factory.mktemp("tls"))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cert)
    return server_ctx, client_ctx


def test_sendfile_over_tls_needs_the_fallback(any_loop, data_file, content, tls_contexts):
    server_ctx, client_ctx = tls_contexts

    async def main():
        sprotos = []

        def factory():
            sprotos.append(Recorder(any_loop, keep_open=True))
            return sprotos[-1]

        server = await any_loop.create_server(factory, HOST, 0, ssl=server_ctx)
        tr, client = await any_loop.create_connection(
            lambda: Recorder(any_loop, keep_open=True),
            *server.sockets[0].getsockname(),
            ssl=client_ctx,
            server_hostname="localhost",
        )
        try:
            with pytest.raises(RuntimeError, match="fallback is disabled"):
                await any_loop.sendfile(tr, data_file, fallback=False)
            sent = await any_loop.sendfile(tr, data_file, 100, MB)
            await wait_until(lambda: sprotos and len(sprotos[0].data) == MB)
            return sent, bytes(sprotos[0].data)
        finally:
            tr.close()
            for p in sprotos:
                p.transport.close()
            server.close()
            await server.wait_closed()
            # let the TLS shutdowns finish before the loop is closed
            await asyncio.gather(client.lost, *(p.lost for p in sprotos))

    sent, got = run(any_loop, main(), timeout=15)
    assert sent == MB
    assert got == content[100 : 100 + MB]


# --- loop.sock_sendfile -------------------------------------------------------


@pytest.mark.parametrize("offset, count", [(0, None), (7, None), (7, 300_000), (0, FILE_SIZE * 2)])
def test_sock_sendfile(any_loop, data_file, content, offset, count):
    expected = content[offset : None if count is None else offset + count]

    async def main():
        async with raw_stream_pair() as (a, b):
            recv = asyncio.ensure_future(recv_exactly(any_loop, b, len(expected)))
            if count is None:
                sent = await any_loop.sock_sendfile(a, data_file, offset)
            else:
                sent = await any_loop.sock_sendfile(a, data_file, offset, count)
            return sent, await recv

    sent, got = run(any_loop, main())
    assert sent == len(expected)
    assert got == expected
    assert data_file.tell() == offset + sent


def test_sock_sendfile_empty_file(any_loop, tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")

    async def main():
        async with raw_stream_pair() as (a, _b):
            with open(path, "rb") as f:  # noqa: ASYNC230
                return await any_loop.sock_sendfile(a, f)

    assert run(any_loop, main()) == 0


def test_sock_sendfile_fallback(any_loop, content):
    async def main():
        async with raw_stream_pair() as (a, b):
            buf = io.BytesIO(content[:200_000])
            with pytest.raises(asyncio.SendfileNotAvailableError):
                await any_loop.sock_sendfile(a, buf, fallback=False)
            recv = asyncio.ensure_future(recv_exactly(any_loop, b, 100_000))
            sent = await any_loop.sock_sendfile(a, buf, 1, 100_000)
            return sent, await recv, buf.tell()

    sent, got, pos = run(any_loop, main())
    assert sent == 100_000
    assert got == content[1:100_001]
    assert pos == 100_001


def test_sock_sendfile_argument_errors(any_loop, data_file):
    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            with pytest.raises(ValueError, match="only SOCK_STREAM type sockets are supported"):
                await any_loop.sock_sendfile(s, data_file)
        async with raw_stream_pair() as (a, _b):
            with pytest.raises(ValueError, match="count must be a positive integer"):
                await any_loop.sock_sendfile(a, data_file, 0, -5)
            with pytest.raises(ValueError, match="offset must be a non-negative integer"):
                await any_loop.sock_sendfile(a, data_file, -1)

    run(any_loop, main())
