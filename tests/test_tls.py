"""TLS over ferroloop's socket transports (asyncio's sslproto on top of
them): ssl= on every connection and server, start_tls, the user's
SSLContext honoured (verification, mutual TLS, ALPN, SNI, session reuse),
get_extra_info, shutdown and failure paths, flow control and churn.

Real sockets on 127.0.0.1 (and AF_UNIX), certificates made by the tests
(tls_support.py); stock asyncio's selector loop is the reference, so what
asyncio does is pinned here, per CPython version where it differs:

- 3.11+ run asyncio's newer sslproto (ported from uvloop); 3.10 runs the
  older _SSLPipe one. 3.11 and 3.12 have the same sslproto; 3.13 only
  changes abort() (the raw transport is force-closed instead of aborted).
- ssl_shutdown_timeout and StreamWriter.start_tls exist from 3.11; a peer
  that never answers close_notify ends the connection after
  ssl_shutdown_timeout with connection_lost(TimeoutError("SSL shutdown
  timed out")).
- A close_notify is reported with eof_received() on 3.11+, on both sides
  (the side that closed too, when the peer's close_notify answers); on
  3.10 it is not (connection_lost(None) alone).
- Handshake timeout (3.10-3.13): create_connection raises
  ConnectionAbortedError("SSL handshake is taking longer than 0.2 seconds:
  aborting the connection"); a server drops the connection silently.
- A peer that resets or closes the TCP connection during the handshake:
  ConnectionResetError from create_connection (3.10-3.13).
- A server whose handshake fails does not send its alert (the raw
  transport is force-closed first): a TLS 1.2 client without the
  certificate a server requires gets ConnectionResetError; a TLS 1.3 one
  connects, then sees eof_received and connection_lost(None).
- TCP EOF in the middle of a record: the whole records before it are
  delivered, then eof_received and connection_lost(None), no error.
- Failures during the handshake never reach the exception handler (they
  are OSErrors) and never call the app protocol.

https://docs.python.org/3/library/asyncio-eventloop.html#opening-network-connections

This file: ssl= on every way to make a connection, large transfers with
flow control, and churn. The SSLContext's settings are in
test_tls_context.py, shutdown and failures in test_tls_shutdown.py,
ferroloop's own TLS data path in test_tls_data_path.py, and the orderings
of records and callbacks at the edges in test_tls_edges.py.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import re
import socket
import ssl
import subprocess
import sys

import pytest
from support import is_ferroloop, open_fd_count, rss_bytes
from tls_support import (
    X509_V_ERR_HOSTNAME_MISMATCH,
    Server,
    echo_once,
    listening_socket,
    needs_311,
    plain_tls_pair,
    tls_client,
)
from transport_support import (
    HOST,
    MB,
    Recorder,
    pattern,
    run,
    wait_until,
)

# --- ssl= on every way to make a connection -----------------------------------


def test_create_connection_and_create_server_echo(any_loop, certs, handler_calls):
    async def main():
        async with plain_tls_pair(any_loop, certs) as (tr, cl, sv, _):
            assert isinstance(tr, asyncio.Transport)
            payload = pattern(100_000)
            tr.write(payload[:10])
            tr.writelines([payload[10:50_000], memoryview(payload)[50_000:]])
            assert await cl.received(len(payload)) == payload
            assert bytes(sv.data) == payload
            return cl.events, sv.events

    client_events, server_events = run(any_loop, main())
    assert client_events[:2] == ["made", "data"]
    assert server_events[:2] == ["made", "data"]
    assert handler_calls == []


def test_server_hostname(any_loop, certs, handler_calls):
    async def main():
        srv = await Server(any_loop).start(certs.server_context())
        try:
            # No server_hostname: the host (an IP address in the cert) is checked.
            tr, cl = await any_loop.create_connection(
                lambda: Recorder(any_loop), HOST, srv.port, ssl=certs.client_context()
            )
            assert tr.get_extra_info("ssl_object").server_hostname == HOST
            await echo_once(tr, cl)
            tr.close()
            await asyncio.wait_for(cl.lost, 3)

            tr, cl = await tls_client(any_loop, srv.port, certs)
            assert tr.get_extra_info("ssl_object").server_hostname == "localhost"
            await echo_once(tr, cl)
            tr.close()
            await asyncio.wait_for(cl.lost, 3)

            with pytest.raises(ssl.SSLCertVerificationError) as info:
                await any_loop.create_connection(
                    lambda: Recorder(any_loop),
                    HOST,
                    srv.port,
                    ssl=certs.client_context(),
                    server_hostname="wrong.ferroloop.test",
                )
            assert info.value.verify_code == X509_V_ERR_HOSTNAME_MISMATCH

            with pytest.raises(ValueError, match="server_hostname is only meaningful with ssl"):
                await any_loop.create_connection(
                    asyncio.Protocol, HOST, srv.port, server_hostname="localhost"
                )
            sock = socket.socket()
            try:
                with pytest.raises(ValueError, match="You must set server_hostname"):
                    await any_loop.create_connection(
                        asyncio.Protocol, sock=sock, ssl=certs.client_context()
                    )
            finally:
                sock.close()
        finally:
            await srv.close()

    run(any_loop, main())
    assert handler_calls == []


def test_unix_connection_and_server(any_loop, certs, sock_path, handler_calls):
    async def main():
        protos = []

        def factory():
            protos.append(Recorder(any_loop, echo=True))
            return protos[-1]

        server = await any_loop.create_unix_server(factory, sock_path, ssl=certs.server_context())
        try:
            with pytest.raises(ValueError, match="you have to pass server_hostname"):
                await any_loop.create_unix_connection(
                    asyncio.Protocol, sock_path, ssl=certs.client_context()
                )
            tr, cl = await any_loop.create_unix_connection(
                lambda: Recorder(any_loop),
                sock_path,
                ssl=certs.client_context(),
                server_hostname="localhost",
            )
            assert tr.get_extra_info("socket").family == socket.AF_UNIX
            assert tr.get_extra_info("ssl_object") is not None
            assert tr.get_extra_info("peercert")["subject"] == ((("commonName", "localhost"),),)
            payload = pattern(300_000, seed=1)
            tr.write(payload)
            assert await cl.received(len(payload)) == payload
            tr.close()
            assert await asyncio.wait_for(cl.lost, 3) is None
            await wait_until(lambda: protos and protos[0].lost_calls == 1)
            assert protos[0].lost_exc is None
        finally:
            server.close()
            await asyncio.wait_for(server.wait_closed(), 3)
        return cl.lost_calls

    assert run(any_loop, main()) == 1
    assert handler_calls == []


def test_connect_accepted_socket(any_loop, certs, handler_calls):
    async def main():
        with listening_socket() as lsock:
            port = lsock.getsockname()[1]
            connecting = asyncio.ensure_future(tls_client(any_loop, port, certs))
            conn, _ = await any_loop.sock_accept(lsock)
            str_, sv = await any_loop.connect_accepted_socket(
                lambda: Recorder(any_loop, echo=True), conn, ssl=certs.server_context()
            )
            tr, cl = await connecting
            assert str_.get_extra_info("ssl_object").server_side
            await echo_once(tr, cl, b"accepted")
            assert bytes(sv.data) == b"accepted"
            str_.close()  # the server side closes first this time
            assert await asyncio.wait_for(cl.lost, 3) is None
            assert await asyncio.wait_for(sv.lost, 3) is None
            return cl.lost_calls, sv.lost_calls

    assert run(any_loop, main()) == (1, 1)
    assert handler_calls == []


def test_streams_echo(any_loop, certs, handler_calls):
    payload = pattern(200_000, seed=2)

    async def main():
        async def handle(reader, writer):
            assert writer.get_extra_info("ssl_object") is not None
            data = await reader.readexactly(len(payload))
            writer.write(data)
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(handle, HOST, 0, ssl=certs.server_context())
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection(
                HOST, port, ssl=certs.client_context(), server_hostname="localhost"
            )
            assert writer.get_extra_info("peercert")["subject"] == ((("commonName", "localhost"),),)
            writer.write(payload)
            await writer.drain()
            got = await reader.readexactly(len(payload))
            assert await reader.read() == b""  # the server's close_notify
            writer.close()
            await writer.wait_closed()
            return got
        finally:
            server.close()
            await asyncio.wait_for(server.wait_closed(), 3)

    assert run(any_loop, main()) == payload
    assert handler_calls == []


@needs_311
def test_stream_writer_start_tls_both_sides(any_loop, certs, handler_calls):
    async def main():
        served = any_loop.create_future()

        async def handle(reader, writer):
            try:
                assert await reader.readline() == b"STARTTLS\n"
                writer.write(b"OK\n")
                await writer.start_tls(certs.server_context())
                assert writer.get_extra_info("ssl_object").server_side
                line = await reader.readline()
                writer.write(line.upper())
                await writer.drain()
                writer.close()
                await writer.wait_closed()
                served.set_result(line)
            except BaseException as exc:
                served.set_exception(exc)
                raise

        server = await asyncio.start_server(handle, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            assert writer.get_extra_info("ssl_object") is None
            writer.write(b"STARTTLS\n")
            assert await reader.readline() == b"OK\n"
            await writer.start_tls(certs.client_context(), server_hostname="localhost")
            ssl_object = writer.get_extra_info("ssl_object")
            assert isinstance(ssl_object, ssl.SSLObject)
            assert not ssl_object.server_side
            writer.write(b"hello over tls\n")
            assert await reader.readline() == b"HELLO OVER TLS\n"
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()
            return await asyncio.wait_for(served, 3)
        finally:
            server.close()
            await asyncio.wait_for(server.wait_closed(), 3)

    assert run(any_loop, main()) == b"hello over tls\n"
    assert handler_calls == []


def test_loop_start_tls_both_sides(any_loop, certs, handler_calls):
    """A plain connection upgraded with loop.start_tls at both ends."""

    async def main():
        upgraded = any_loop.create_future()
        server_tls = Recorder(any_loop)

        class PlainServer(Recorder):
            def data_received(self, data):
                super().data_received(data)
                if bytes(self.data) == b"STARTTLS\n":
                    # No more plain reads: the ClientHello is for start_tls.
                    self.transport.pause_reading()
                    self.transport.write(b"OK\n")
                    task = asyncio.ensure_future(
                        any_loop.start_tls(
                            self.transport, server_tls, certs.server_context(), server_side=True
                        )
                    )
                    task.add_done_callback(
                        lambda t: (
                            upgraded.set_exception(t.exception())
                            if t.exception()
                            else upgraded.set_result(t.result())
                        )
                    )

        plain_servers = []

        def factory():
            plain_servers.append(PlainServer(any_loop))
            return plain_servers[-1]

        server = await any_loop.create_server(factory, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        try:
            plain_tr, plain_client = await any_loop.create_connection(
                lambda: Recorder(any_loop), HOST, port
            )
            assert plain_tr.get_extra_info("sslcontext") is None
            plain_tr.write(b"STARTTLS\n")
            assert await plain_client.received(3) == b"OK\n"
            client_tls = Recorder(any_loop)
            client_ctx = certs.client_context()
            tls_tr = await any_loop.start_tls(
                plain_tr, client_tls, client_ctx, server_hostname="localhost"
            )
            client_tls.transport = tls_tr
            server_tls.transport = await asyncio.wait_for(upgraded, 3)
            assert tls_tr.get_extra_info("sslcontext") is client_ctx
            assert tls_tr.get_extra_info("ssl_object").version().startswith("TLS")
            assert server_tls.transport.get_extra_info("ssl_object").server_side

            tls_tr.write(b"from the client")
            server_tls.transport.write(b"from the server")
            assert await server_tls.received(15) == b"from the client"
            assert await client_tls.received(15) == b"from the server"

            tls_tr.close()
            assert await asyncio.wait_for(client_tls.lost, 3) is None
            assert await asyncio.wait_for(server_tls.lost, 3) is None
            # The plain protocols were replaced: they never hear of the end.
            return plain_client.events, plain_servers[0].events, client_tls, server_tls
        finally:
            server.close()
            await asyncio.wait_for(server.wait_closed(), 3)

    plain_client_events, plain_server_events, client_tls, server_tls = run(any_loop, main())
    assert plain_client_events == ["made", "data"]
    assert plain_server_events == ["made", "data"]
    # start_tls does not call connection_made on the protocol it is given.
    assert client_tls.events[0] == "data"
    assert server_tls.events[0] == "data"
    assert client_tls.lost_calls == server_tls.lost_calls == 1
    assert handler_calls == []


# --- large transfers with flow control ----------------------------------------


class FlowEcho(Recorder):
    """An echo server that stops reading while its writes are paused."""

    def __init__(self, loop):
        super().__init__(loop, echo=True)
        self.pauses = 0

    def connection_made(self, transport):
        super().connection_made(transport)
        # Small kernel buffers, so that a client that does not read makes
        # this side's writes back up within a few MiB.
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)

    def pause_writing(self):
        self.pauses += 1
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


class FlowSender(Recorder):
    """Sends a payload in chunks, waiting while pause_writing is in force."""

    def __init__(self, loop):
        super().__init__(loop)
        self.flow = []
        self._resumed = None

    def pause_writing(self):
        self.flow.append("pause")
        self._resumed = self.loop.create_future()

    def resume_writing(self):
        self.flow.append("resume")
        self._resumed.set_result(None)

    async def send(self, payload, chunk=256 * 1024):
        for i in range(0, len(payload), chunk):
            self.transport.write(payload[i : i + chunk])
            if self._resumed is not None and not self._resumed.done():
                await asyncio.wait_for(self._resumed, 5)


def test_large_transfer_with_flow_control(any_loop, certs, handler_calls):
    size = 6 * MB + 1234
    payload = pattern(size, seed=3)

    async def main():
        protos = []

        def factory():
            protos.append(FlowEcho(any_loop))
            return protos[-1]

        server = await any_loop.create_server(factory, HOST, 0, ssl=certs.server_context())
        try:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
            sock.setblocking(False)
            await any_loop.sock_connect(sock, (HOST, server.sockets[0].getsockname()[1]))
            tr, cl = await any_loop.create_connection(
                lambda: FlowSender(any_loop),
                sock=sock,
                ssl=certs.client_context(),
                server_hostname="localhost",
            )
            tr.set_write_buffer_limits(high=64 * 1024)
            assert tr.get_write_buffer_limits()[1] == 64 * 1024
            # Nobody reads the echo for a while: the echo server must pause.
            tr.pause_reading()
            sending = asyncio.ensure_future(cl.send(payload))
            await wait_until(lambda: protos and protos[0].pauses > 0, 4)
            tr.resume_reading()
            await asyncio.wait_for(sending, 8)
            echoed = await cl.received(size, 8)
            tr.close()
            assert await asyncio.wait_for(cl.lost, 3) is None
            assert await asyncio.wait_for(protos[0].lost, 3) is None
            return echoed, cl, protos[0]
        finally:
            server.close()
            await asyncio.wait_for(server.wait_closed(), 3)

    echoed, cl, sv = run(any_loop, main(), timeout=20)
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
    assert len(sv.data) == size
    assert cl.flow and cl.flow[0] == "pause"
    assert cl.flow == ["pause", "resume"] * (len(cl.flow) // 2)
    assert cl.lost_calls == sv.lost_calls == 1
    assert handler_calls == []


def test_large_transfer_streams_drain(any_loop, certs, handler_calls):
    size = 5 * MB + 77
    payload = pattern(size, seed=4)
    from_server = pattern(3 * MB, seed=5)

    async def main():
        async def handle(reader, writer):
            got = await reader.readexactly(size)
            writer.transport.set_write_buffer_limits(high=32 * 1024)
            for i in range(0, len(from_server), 100_000):
                writer.write(from_server[i : i + 100_000])
                await writer.drain()
            writer.close()
            await writer.wait_closed()
            served.set_result(hashlib.sha256(got).digest())

        served = any_loop.create_future()
        server = await asyncio.start_server(handle, HOST, 0, ssl=certs.server_context())
        try:
            reader, writer = await asyncio.open_connection(
                HOST,
                server.sockets[0].getsockname()[1],
                ssl=certs.client_context(),
                server_hostname="localhost",
            )
            writer.transport.set_write_buffer_limits(high=32 * 1024)
            for i in range(0, size, 64 * 1024):
                writer.write(payload[i : i + 64 * 1024])
                await writer.drain()
                assert writer.transport.get_write_buffer_size() <= 32 * 1024 + 64 * 1024 + 16_384
            got = await reader.readexactly(len(from_server))
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()
            return got, await asyncio.wait_for(served, 3)
        finally:
            server.close()
            await asyncio.wait_for(server.wait_closed(), 3)

    got, server_digest = run(any_loop, main(), timeout=20)
    assert got == from_server
    assert server_digest == hashlib.sha256(payload).digest()
    assert handler_calls == []


# --- churn --------------------------------------------------------------------


CHURN_WARMUP = 300


CHURN_CONNECTIONS = {"ferroloop": 10_000, "asyncio": 2_000}


CHURN_BATCH = 50


CHURN_RSS_BOUND = 10 * MB


CHURN_CHILD = "FERROLOOP_TEST_CHURN_CHILD"


def test_churn_no_fd_or_memory_left(any_loop, certs, handler_calls, request):
    """10,000 TLS connections (2,000 on the reference), 50 at a time: each opened, one echo, closed
    by the client with close_notify, both ends' connection_lost seen. No fd
    is left and RSS grows by less than CHURN_RSS_BOUND past a warm-up.

    It runs in a fresh pytest process: at the end of a whole test session
    (150 MiB of RSS on 3.13t, heaps shaped by a thousand earlier tests) the
    same churn grew RSS by 3 to 14 MiB from one run to the next without
    anything left alive, and by under 0.5 MiB in a fresh process."""
    if os.environ.get(CHURN_CHILD) != "1":
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider"]
            + [f"{__file__}::{request.node.name}"],
            env={**os.environ, CHURN_CHILD: "1"},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        print(proc.stdout[-3000:])
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
        if re.search(r"\b1 skipped\b", proc.stdout):
            pytest.skip(f"skipped in the child process: {proc.stdout[-500:]}")
        assert re.search(r"\b1 passed\b", proc.stdout), proc.stdout[-3000:]
        return
    server_ctx = certs.server_context()
    client_ctx = certs.client_context()
    kind = "ferroloop" if is_ferroloop(any_loop) else "asyncio"
    connections = CHURN_CONNECTIONS[kind]

    async def main():
        live = {"server": 0, "server_lost": 0, "errors": []}

        class Echo(asyncio.Protocol):
            def connection_made(self, transport):
                self.transport = transport
                live["server"] += 1

            def data_received(self, data):
                self.transport.write(data)

            def connection_lost(self, exc):
                live["server"] -= 1
                live["server_lost"] += 1
                if exc is not None:
                    live["errors"].append(exc)

        server = await any_loop.create_server(Echo, HOST, 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]

        async def one(i):
            tr, cl = await any_loop.create_connection(
                lambda: Recorder(any_loop), HOST, port, ssl=client_ctx, server_hostname="localhost"
            )
            payload = b"ping %d" % i
            tr.write(payload)
            assert await cl.received(len(payload)) == payload
            tr.close()
            exc = await asyncio.wait_for(cl.lost, 3)
            assert exc is None and cl.lost_calls == 1, (exc, cl.events)

        async def churn(n):
            for start in range(0, n, CHURN_BATCH):
                await asyncio.gather(*(one(i) for i in range(start, min(n, start + CHURN_BATCH))))
            await wait_until(lambda: live["server"] == 0, 5)

        try:
            await churn(CHURN_WARMUP)
            gc.collect()
            fds, rss = open_fd_count(), rss_bytes()
            t0 = any_loop.time()
            await churn(connections)
            elapsed = any_loop.time() - t0
            gc.collect()
            await asyncio.sleep(0.05)
            gc.collect()
            return fds, open_fd_count(), rss, rss_bytes(), elapsed, live
        finally:
            server.close()
            await asyncio.wait_for(server.wait_closed(), 5)

    fds0, fds1, rss0, rss1, elapsed, live = run(any_loop, main(), timeout=180)
    print(
        f"\n{kind}: {connections} TLS connections in {elapsed:.2f}s, "
        f"RSS {rss0 / MB:.1f} -> {rss1 / MB:.1f} MiB, fds {fds0} -> {fds1}"
    )
    assert live["server_lost"] == CHURN_WARMUP + connections
    assert live["errors"] == []
    assert fds1 == fds0
    assert rss1 - rss0 < CHURN_RSS_BOUND
    assert handler_calls == []
