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
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import os
import re
import socket
import ssl
import struct
import subprocess
import sys

import pytest
from support import is_ferroloop, open_fd_count
from tls_support import (
    CLIENT_CN,
    SNI_NAME,
    RawTLS,
    connected_raw_socket,
    listening_socket,
)
from transport_support import HOST, MB, Recorder, pattern, recv_until_closed, run, wait_until

NEW_SSLPROTO = sys.version_info >= (3, 11)
needs_311 = pytest.mark.skipif(
    not NEW_SSLPROTO, reason="ssl_shutdown_timeout and StreamWriter.start_tls are 3.11+"
)

X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT = 18
X509_V_ERR_HOSTNAME_MISMATCH = 62


# --- helpers ------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class Server:
    """A TLS create_server server whose protocols are Recorders (echoing
    unless told otherwise), all kept."""

    def __init__(self, loop, echo=True):
        self.loop = loop
        self.echo = echo
        self.protocols = []
        self.server = None

    def factory(self):
        proto = Recorder(self.loop, echo=self.echo)
        self.protocols.append(proto)
        return proto

    async def start(self, ssl_ctx, **kw):
        self.server = await self.loop.create_server(self.factory, HOST, 0, ssl=ssl_ctx, **kw)
        return self

    @property
    def port(self):
        return self.server.sockets[0].getsockname()[1]

    def made(self):
        return [p for p in self.protocols if p.transport is not None]

    async def close(self):
        for p in self.made():
            if not p.transport.is_closing():
                p.transport.close()
        await asyncio.wait_for(
            asyncio.gather(*(p.lost for p in self.made()), return_exceptions=True), 3
        )
        self.server.close()
        await asyncio.wait_for(self.server.wait_closed(), 3)


@contextlib.asynccontextmanager
async def tls_pair(loop, server_ctx, client_ctx, *, server_hostname="localhost", **client_kw):
    """A TLS server and one TLS client of it, both ends established.

    Yields (client transport, client Recorder, server Recorder, Server);
    closes both ends gracefully and waits for connection_lost on exit."""
    srv = await Server(loop).start(server_ctx)
    client = None
    try:
        transport, client = await loop.create_connection(
            lambda: Recorder(loop),
            HOST,
            srv.port,
            ssl=client_ctx,
            server_hostname=server_hostname,
            **client_kw,
        )
        await wait_until(lambda: srv.made())
        yield transport, client, srv.made()[0], srv
    finally:
        if client is not None and not client.transport.is_closing():
            client.transport.close()
        if client is not None:
            await asyncio.wait_for(client.lost, 3)
        await srv.close()


def plain_tls_pair(loop, certs, **client_kw):
    """tls_pair with fresh default contexts."""
    return tls_pair(loop, certs.server_context(), certs.client_context(), **client_kw)


async def echo_once(transport, proto, payload=b"ping"):
    before = len(proto.data)
    transport.write(payload)
    data = await proto.received(before + len(payload))
    assert data[before:] == payload


async def check_tls_echo(loop, certs):
    """The loop still serves TLS: a fresh server and client, one echo, a
    clean close on both ends."""
    async with plain_tls_pair(loop, certs) as (tr, cl, sv, _):
        await echo_once(tr, cl, b"still alive")
        tr.close()
        assert await asyncio.wait_for(cl.lost, 3) is None
        assert await asyncio.wait_for(sv.lost, 3) is None
    assert cl.lost_calls == sv.lost_calls == 1


def reset_and_close(sock):
    """Close with SO_LINGER 0: the peer gets an RST, not a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# --- ssl= on every way to make a connection -------------------------------------


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

            tr, cl = await any_loop.create_connection(
                lambda: Recorder(any_loop),
                HOST,
                srv.port,
                ssl=certs.client_context(),
                server_hostname="localhost",
            )
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
            connecting = asyncio.ensure_future(
                any_loop.create_connection(
                    lambda: Recorder(any_loop),
                    HOST,
                    port,
                    ssl=certs.client_context(),
                    server_hostname="localhost",
                )
            )
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


# --- the SSLContext is honoured -------------------------------------------------


def test_untrusted_server_is_rejected(any_loop, certs, handler_calls):
    async def main():
        fds = open_fd_count()
        srv = await Server(any_loop).start(certs.server_context(cert="untrusted"))
        try:
            with pytest.raises(ssl.SSLCertVerificationError) as info:
                await any_loop.create_connection(
                    lambda: Recorder(any_loop),
                    HOST,
                    srv.port,
                    ssl=certs.client_context(),
                    server_hostname="localhost",
                )
            assert info.value.verify_code == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
            # The server's handshake failed too: its protocol never started.
            await asyncio.sleep(0.05)
            assert [p.events for p in srv.protocols] in ([], [[]])
        finally:
            await srv.close()
        await check_tls_echo(any_loop, certs)
        gc.collect()
        assert open_fd_count() == fds

    run(any_loop, main())
    assert handler_calls == []


@pytest.mark.parametrize("tls_version", ["TLSv1_2", "TLSv1_3"])
def test_mutual_tls(any_loop, certs, handler_calls, tls_version):
    version = getattr(ssl.TLSVersion, tls_version)

    def client_ctx(with_cert):
        ctx = certs.client_context(with_cert=with_cert)
        ctx.minimum_version = ctx.maximum_version = version
        return ctx

    async def main():
        srv = await Server(any_loop).start(certs.server_context(require_client_cert=True))
        try:
            # With a client certificate: the server sees it.
            tr, cl = await any_loop.create_connection(
                lambda: Recorder(any_loop),
                HOST,
                srv.port,
                ssl=client_ctx(True),
                server_hostname="localhost",
            )
            await echo_once(tr, cl)
            sv = srv.made()[0]
            peercert = sv.transport.get_extra_info("peercert")
            assert peercert["subject"] == ((("commonName", CLIENT_CN),),)
            assert sv.transport.get_extra_info("ssl_object").version() == version.name.replace(
                "_", "."
            )
            assert tr.get_extra_info("peercert")["subject"] == ((("commonName", "localhost"),),)
            tr.close()
            assert await asyncio.wait_for(cl.lost, 3) is None

            # Without one: refused.
            made_before = len(srv.made())
            if version is ssl.TLSVersion.TLSv1_2:
                # The server refuses during the handshake: create_connection
                # fails. asyncio's server drops the connection without
                # sending its alert, so the client sees the TCP connection end.
                with pytest.raises(ConnectionResetError):
                    await any_loop.create_connection(
                        lambda: Recorder(any_loop),
                        HOST,
                        srv.port,
                        ssl=client_ctx(False),
                        server_hostname="localhost",
                    )
            else:
                # TLS 1.3: the client's handshake is over before the server
                # checks its certificate, so create_connection succeeds; then
                # the server drops the connection (again without its alert):
                # to the client, a TCP EOF without close_notify.
                tr, cl = await any_loop.create_connection(
                    lambda: Recorder(any_loop),
                    HOST,
                    srv.port,
                    ssl=client_ctx(False),
                    server_hostname="localhost",
                )
                assert await asyncio.wait_for(cl.lost, 3) is None
                assert cl.events == ["made", "eof", "lost"]
                # (3.10's SSL transport only says it is closing after close().)
                assert tr.is_closing() or not NEW_SSLPROTO
            await asyncio.sleep(0.05)
            assert len(srv.made()) == made_before  # no server protocol started
        finally:
            await srv.close()
        await check_tls_echo(any_loop, certs)

    run(any_loop, main())
    assert handler_calls == []


@pytest.mark.parametrize(
    "client_alpn, expected",
    [
        (["h2", "http/1.1"], "h2"),
        (["http/1.1", "h2"], "h2"),  # the server's preference wins
        (["http/1.1"], "http/1.1"),
        (["spdy/3"], None),
        (None, None),
    ],
)
def test_alpn(any_loop, certs, handler_calls, client_alpn, expected):
    async def main():
        async with tls_pair(
            any_loop,
            certs.server_context(alpn=["h2", "http/1.1"]),
            certs.client_context(alpn=client_alpn),
        ) as (tr, cl, sv, _):
            await echo_once(tr, cl)
            return (
                tr.get_extra_info("ssl_object").selected_alpn_protocol(),
                sv.transport.get_extra_info("ssl_object").selected_alpn_protocol(),
            )

    assert run(any_loop, main()) == (expected, expected)
    assert handler_calls == []


def test_sni_callback_sees_the_name_and_switches_context(any_loop, certs, handler_calls):
    sni_ctx = certs.server_context(cert="sni")
    seen = []

    def sni_callback(ssl_object, server_name, ctx):
        seen.append(server_name)
        if server_name == SNI_NAME:
            ssl_object.context = sni_ctx

    server_ctx = certs.server_context()
    server_ctx.sni_callback = sni_callback

    async def main():
        names = {}
        for hostname in (SNI_NAME, "localhost", HOST):
            async with tls_pair(
                any_loop, server_ctx, certs.client_context(), server_hostname=hostname
            ) as (tr, cl, sv, _):
                await echo_once(tr, cl)
                cert = tr.get_extra_info("peercert")
                names[hostname] = dict(cert["subject"][0])["commonName"]
                server_side = sv.transport.get_extra_info("ssl_object")
                assert server_side.context is (sni_ctx if hostname == SNI_NAME else server_ctx)
        return names

    names = run(any_loop, main())
    assert names == {SNI_NAME: SNI_NAME, "localhost": "localhost", HOST: "localhost"}
    # An IP address is not sent as SNI: the callback still runs, with None.
    assert seen == [SNI_NAME, "localhost", None]
    assert handler_calls == []


class SessionContext(ssl.SSLContext):
    """asyncio has no session= argument; its sslproto makes the SSLObject
    with the context's wrap_bio(), so a context can hand it a session."""

    session = None

    def wrap_bio(self, incoming, outgoing, server_side=False, server_hostname=None, session=None):
        return super().wrap_bio(
            incoming,
            outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
            session=session or self.session,
        )


@pytest.mark.parametrize("tls_version", ["TLSv1_2", "TLSv1_3"])
def test_session_reuse(any_loop, certs, handler_calls, tls_version):
    client_ctx = certs.client_context(context_class=SessionContext)
    client_ctx.maximum_version = getattr(ssl.TLSVersion, tls_version)

    async def main():
        srv = await Server(any_loop).start(certs.server_context())
        reused = []
        try:
            for _ in range(2):
                tr, cl = await any_loop.create_connection(
                    lambda: Recorder(any_loop),
                    HOST,
                    srv.port,
                    ssl=client_ctx,
                    server_hostname="localhost",
                )
                # (TLS 1.3 tickets come after the handshake: read something.)
                await echo_once(tr, cl)
                ssl_object = tr.get_extra_info("ssl_object")
                reused.append(ssl_object.session_reused)
                client_ctx.session = ssl_object.session
                assert client_ctx.session is not None
                tr.close()
                assert await asyncio.wait_for(cl.lost, 3) is None
            server_reused = [
                p.transport.get_extra_info("ssl_object").session_reused for p in srv.made()
            ]
        finally:
            await srv.close()
        return reused, server_reused

    assert run(any_loop, main()) == ([False, True], [False, True])
    assert handler_calls == []


def test_get_extra_info(any_loop, certs, handler_calls):
    server_ctx = certs.server_context()
    client_ctx = certs.client_context()

    async def main():
        async with tls_pair(any_loop, server_ctx, client_ctx) as (tr, cl, sv, srv):
            await echo_once(tr, cl)
            info = {}
            for side, transport in (("client", tr), ("server", sv.transport)):
                info[side] = {
                    name: transport.get_extra_info(name)
                    for name in (
                        "ssl_object",
                        "peercert",
                        "cipher",
                        "compression",
                        "sslcontext",
                        "socket",
                        "peername",
                        "sockname",
                    )
                }
                assert transport.get_extra_info("no such thing", "dflt") == "dflt"
            return info, srv.port

    info, port = run(any_loop, main())
    client, server = info["client"], info["server"]

    assert isinstance(client["ssl_object"], ssl.SSLObject)
    assert isinstance(server["ssl_object"], ssl.SSLObject)
    assert not client["ssl_object"].server_side and server["ssl_object"].server_side
    assert client["sslcontext"] is client_ctx and server["sslcontext"] is server_ctx

    peercert = client["peercert"]
    assert peercert["subject"] == ((("commonName", "localhost"),),)
    assert ("DNS", "localhost") in peercert["subjectAltName"]
    assert ("IP Address", HOST) in peercert["subjectAltName"]
    assert server["peercert"] is None  # no client certificate asked for

    for side in (client, server):
        name, version, bits = side["cipher"]
        assert (name, version, bits) == side["ssl_object"].cipher()
        assert version.startswith("TLS") and bits >= 128
        assert side["compression"] == side["ssl_object"].compression()
        assert side["compression"] is None
        sock = side["socket"]
        assert sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM
    assert client["peername"] == (HOST, port)
    assert server["sockname"] == (HOST, port)
    assert server["peername"] == client["sockname"]
    assert handler_calls == []


# --- shutdown, abort, failures ----------------------------------------------------


@pytest.mark.parametrize("closer", ["client", "server"])
def test_clean_shutdown_close_notify(any_loop, certs, handler_calls, closer):
    async def main():
        async with plain_tls_pair(any_loop, certs) as (tr, cl, sv, _):
            await echo_once(tr, cl)
            # (An echo of "last words" would reach the client after its
            # close_notify: SSLError APPLICATION_DATA_AFTER_CLOSE_NOTIFY.)
            sv.echo = False
            closing, other = (cl, sv) if closer == "client" else (sv, cl)
            closing.transport.write(b"last words")
            closing.transport.close()
            assert closing.transport.is_closing()
            assert await asyncio.wait_for(other.lost, 3) is None
            assert await asyncio.wait_for(closing.lost, 3) is None
            await asyncio.sleep(0.02)
            return closing, other

    closing, other = run(any_loop, main())
    # What was written before close() is delivered, then both ends get
    # connection_lost(None), once.
    assert bytes(other.data).endswith(b"last words")
    if NEW_SSLPROTO:
        # 3.11+: a close_notify is reported with eof_received(): on the
        # other side when it arrives, and on the side that closed when the
        # peer's close_notify answers its own.
        assert other.events[-2:] == ["eof", "lost"]
        assert closing.events[-2:] == ["eof", "lost"]
    else:
        # 3.10: a close_notify is not reported with eof_received(); the
        # side that closed may see the peer's TCP FIN as one, depending on
        # whether it arrives before its close_notify is processed.
        assert other.events[-2:] == ["data", "lost"]
        assert closing.events[-2:] in (["data", "lost"], ["eof", "lost"])
    assert closing.lost_calls == other.lost_calls == 1
    assert handler_calls == []


@pytest.mark.parametrize("aborter", ["client", "server"])
def test_abort(any_loop, certs, handler_calls, aborter):
    async def main():
        async with plain_tls_pair(any_loop, certs) as (tr, cl, sv, _):
            await echo_once(tr, cl)
            aborting, other = (cl, sv) if aborter == "client" else (sv, cl)
            aborting.transport.abort()
            assert aborting.transport.is_closing()
            aborting.transport.write(b"ignored")  # no error after abort()
            assert await asyncio.wait_for(aborting.lost, 3) is None
            # The peer sees the TCP connection end without close_notify.
            other_exc = await asyncio.wait_for(other.lost, 3)
            await asyncio.sleep(0.02)
            return aborting, other, other_exc

    aborting, other, other_exc = run(any_loop, main())
    assert aborting.events[-1] == "lost" and "eof" not in aborting.events
    assert other_exc is None
    assert other.events[-2:] == ["eof", "lost"]
    assert aborting.lost_calls == other.lost_calls == 1
    assert handler_calls == []


def test_peer_eof_in_the_middle_of_a_record(any_loop, certs, handler_calls):
    """A client whose TCP stream ends halfway through a TLS record: the
    complete records before it are delivered, then eof_received and
    connection_lost(None) (no error for the truncated record)."""

    async def main():
        srv = await Server(any_loop, echo=False).start(certs.server_context())
        try:
            sock = await connected_raw_socket(any_loop, srv.port)
            with sock:
                peer = RawTLS.client(any_loop, sock, certs)
                await peer.handshake()
                whole = peer.records(b"a whole record")
                half = peer.records(b"a record cut in two")
                await any_loop.sock_sendall(sock, whole + half[: len(half) // 2])
                await wait_until(lambda: srv.made() and len(srv.made()[0].data) >= 14)
                sock.shutdown(socket.SHUT_WR)
                sv = srv.made()[0]
                exc = await asyncio.wait_for(sv.lost, 3)
                await recv_until_closed(any_loop, sock)  # the server closed its end too
            await asyncio.sleep(0.02)
            return sv, exc
        finally:
            await srv.close()

    sv, exc = run(any_loop, main())
    assert exc is None
    assert bytes(sv.data) == b"a whole record"
    assert sv.events == ["made", "data", "eof", "lost"]
    assert sv.lost_calls == 1
    assert handler_calls == []
    run(any_loop, check_tls_echo(any_loop, certs))


def test_handshake_timeout_client(any_loop, certs, handler_calls):
    """A server that accepts the TCP connection and never answers the
    ClientHello. asyncio reports ConnectionAbortedError (3.10 to 3.13)."""

    async def main():
        fds = open_fd_count()
        with listening_socket() as lsock:
            accepting = asyncio.ensure_future(any_loop.sock_accept(lsock))
            t0 = any_loop.time()
            with pytest.raises(ConnectionAbortedError) as info:
                await any_loop.create_connection(
                    lambda: Recorder(any_loop),
                    HOST,
                    lsock.getsockname()[1],
                    ssl=certs.client_context(),
                    server_hostname="localhost",
                    ssl_handshake_timeout=0.2,
                )
            elapsed = any_loop.time() - t0
            assert str(info.value) == (
                "SSL handshake is taking longer than 0.2 seconds: aborting the connection"
            )
            conn, _ = await asyncio.wait_for(accepting, 1)
            with conn:
                hello = await asyncio.wait_for(recv_until_closed(any_loop, conn), 2)
        assert hello[:1] == b"\x16"  # a handshake record: the ClientHello
        await check_tls_echo(any_loop, certs)
        gc.collect()
        assert open_fd_count() == fds
        return elapsed

    elapsed = run(any_loop, main())
    assert 0.15 <= elapsed < 2.0
    assert handler_calls == []


def test_handshake_timeout_server(any_loop, certs, handler_calls):
    """A client that connects and sends nothing: the server drops it after
    ssl_handshake_timeout; its protocol never hears of it; it keeps serving."""

    async def main():
        srv = await Server(any_loop).start(certs.server_context(), ssl_handshake_timeout=0.2)
        try:
            sock = await connected_raw_socket(any_loop, srv.port)
            with sock:
                t0 = any_loop.time()
                got = await asyncio.wait_for(recv_until_closed(any_loop, sock), 2)
                elapsed = any_loop.time() - t0
            assert got == b""
            assert [p.events for p in srv.protocols] in ([], [[]])
            await wait_until(lambda: not srv.made())
            # The same server still serves.
            tr, cl = await any_loop.create_connection(
                lambda: Recorder(any_loop),
                HOST,
                srv.port,
                ssl=certs.client_context(),
                server_hostname="localhost",
            )
            await echo_once(tr, cl)
            tr.close()
            assert await asyncio.wait_for(cl.lost, 3) is None
            return elapsed
        finally:
            await srv.close()

    elapsed = run(any_loop, main())
    assert 0.15 <= elapsed < 2.0
    assert handler_calls == []


@pytest.mark.parametrize("how", ["reset", "eof"])
def test_server_goes_away_during_handshake(any_loop, certs, handler_calls, how):
    """The server reads the ClientHello, then resets (or closes) the TCP
    connection: create_connection raises ConnectionResetError."""

    async def main():
        fds = open_fd_count()
        with listening_socket() as lsock:

            async def bad_server():
                conn, _ = await any_loop.sock_accept(lsock)
                await any_loop.sock_recv(conn, 65536)  # the ClientHello
                if how == "reset":
                    reset_and_close(conn)
                else:
                    conn.close()

            task = asyncio.ensure_future(bad_server())
            protos = []
            with pytest.raises(ConnectionResetError):
                await any_loop.create_connection(
                    lambda: protos.append(Recorder(any_loop)) or protos[-1],
                    HOST,
                    lsock.getsockname()[1],
                    ssl=certs.client_context(),
                    server_hostname="localhost",
                )
            await asyncio.wait_for(task, 1)
        await asyncio.sleep(0.02)
        assert [p.events for p in protos] == [[]]  # never made, never lost
        await check_tls_echo(any_loop, certs)
        gc.collect()
        assert open_fd_count() == fds

    run(any_loop, main())
    assert handler_calls == []


@pytest.mark.parametrize("how", ["reset", "eof"])
def test_client_goes_away_during_handshake(any_loop, certs, handler_calls, how):
    """A client sends its ClientHello, reads the server's first flight,
    then resets (or closes) the TCP connection: the server's protocol never
    starts, nothing is reported, and the server keeps serving."""

    async def main():
        srv = await Server(any_loop).start(certs.server_context())
        try:
            sock = await connected_raw_socket(any_loop, srv.port)
            peer = RawTLS.client(any_loop, sock, certs)
            with pytest.raises(ssl.SSLWantReadError):
                peer.obj.do_handshake()
            await peer.flush()  # the ClientHello
            assert (await any_loop.sock_recv(sock, 65536))[:1] == b"\x16"  # the ServerHello
            if how == "reset":
                reset_and_close(sock)
            else:
                sock.close()
            await asyncio.sleep(0.1)
            assert [p.events for p in srv.protocols] in ([], [[]])
            tr, cl = await any_loop.create_connection(
                lambda: Recorder(any_loop),
                HOST,
                srv.port,
                ssl=certs.client_context(),
                server_hostname="localhost",
            )
            await echo_once(tr, cl)
            tr.close()
            assert await asyncio.wait_for(cl.lost, 3) is None
            assert len(srv.made()) == 1
        finally:
            await srv.close()

    run(any_loop, main())
    assert handler_calls == []


@needs_311
def test_ssl_shutdown_timeout(any_loop, certs, handler_calls):
    """The peer never answers our close_notify: after ssl_shutdown_timeout
    the connection is dropped with connection_lost(TimeoutError)."""

    async def main():
        with listening_socket() as lsock:
            accepting = asyncio.ensure_future(any_loop.sock_accept(lsock))
            connecting = asyncio.ensure_future(
                any_loop.create_connection(
                    lambda: Recorder(any_loop),
                    HOST,
                    lsock.getsockname()[1],
                    ssl=certs.client_context(),
                    server_hostname="localhost",
                    ssl_shutdown_timeout=0.3,
                )
            )
            conn, _ = await asyncio.wait_for(accepting, 2)
            with conn:
                peer = RawTLS(any_loop, conn, certs.server_context(), server_side=True)
                await peer.handshake()
                tr, cl = await asyncio.wait_for(connecting, 2)
                await peer.flush()
                await any_loop.sock_sendall(conn, peer.records(b"hi"))
                await cl.received(2)
                # From here on the peer reads nothing.
                t0 = any_loop.time()
                tr.close()
                exc = await asyncio.wait_for(cl.lost, 3)
                elapsed = any_loop.time() - t0
        await asyncio.sleep(0.02)
        return exc, elapsed, cl

    exc, elapsed, cl = run(any_loop, main())
    assert isinstance(exc, TimeoutError)
    assert str(exc) == "SSL shutdown timed out"
    assert 0.25 <= elapsed < 2.0
    assert cl.events == ["made", "data", "lost"]
    assert cl.lost_calls == 1
    assert handler_calls == []
    run(any_loop, check_tls_echo(any_loop, certs))


@needs_311
def test_ssl_shutdown_timeout_is_accepted_everywhere(any_loop, certs, sock_path):
    async def main():
        srv = await Server(any_loop).start(certs.server_context(), ssl_shutdown_timeout=1.5)
        unix = await any_loop.create_unix_server(
            asyncio.Protocol, sock_path, ssl=certs.server_context(), ssl_shutdown_timeout=1.5
        )
        try:
            async with tls_pair(
                any_loop, certs.server_context(), certs.client_context(), ssl_shutdown_timeout=2.0
            ) as (tr, cl, _, _):
                await echo_once(tr, cl)
            with pytest.raises(
                ValueError, match="ssl_shutdown_timeout is only meaningful with ssl"
            ):
                await any_loop.create_connection(
                    asyncio.Protocol, HOST, srv.port, ssl_shutdown_timeout=1
                )
            with pytest.raises(
                ValueError, match="ssl_shutdown_timeout is only meaningful with ssl"
            ):
                await any_loop.create_server(asyncio.Protocol, HOST, 0, ssl_shutdown_timeout=1)
            # loop.start_tls takes it too.
            plain_tr, _ = await any_loop.create_connection(asyncio.Protocol, HOST, srv.port)
            proto = Recorder(any_loop)
            tls_tr = await any_loop.start_tls(
                plain_tr,
                proto,
                certs.client_context(),
                server_hostname="localhost",
                ssl_shutdown_timeout=1.0,
            )
            proto.transport = tls_tr
            await echo_once(tls_tr, proto)
            tls_tr.close()
            assert await asyncio.wait_for(proto.lost, 3) is None
        finally:
            unix.close()
            await srv.close()

    run(any_loop, main())


# --- large transfers with flow control ------------------------------------------


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


# --- churn ------------------------------------------------------------------------

CHURN_WARMUP = 300
# ferroloop: the 10,000 connections issue #5 asks for; stock asyncio, the
# reference that the test's expectations hold, needs fewer to show it.
CHURN_CONNECTIONS = {"ferroloop": 10_000, "asyncio": 2_000}
CHURN_BATCH = 50
# Measured growth over 2,000 connections (2 cores, CPython 3.10-3.13t,
# either loop): under 0.5 MiB. On 3.11+ a leaked SSLProtocol alone holds a
# 256 KiB read buffer, and 10 MiB over 10,000 connections is ~1 KiB each:
# a leak of any Python object per connection (a transport, a protocol,
# its dict) goes over it.
CHURN_RSS_BOUND = 10 * MB
# Set in the child process that runs the churn itself (see below).
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


# --- ferroloop's TLS data path (python/ferroloop/_ssl.py) ------------------------


def test_records_and_close_notify_in_one_read(any_loop, certs, handler_calls):
    """Many records of different sizes and the close_notify arrive in one TCP
    segment burst: every byte is delivered in order (one data_received per
    batch), then eof_received (3.11+) and connection_lost(None), as asyncio
    does."""
    sizes = [1, 100, 16_384, 16_385, 5_000, 70_000, 3]

    async def main():
        srv = await Server(any_loop, echo=False).start(certs.server_context())
        try:
            sock = await connected_raw_socket(any_loop, srv.port)
            with sock:
                peer = RawTLS.client(any_loop, sock, certs)
                await peer.handshake()
                payload = pattern(sum(sizes))
                wire, offset = b"", 0
                for size in sizes:
                    wire += peer.records(payload[offset : offset + size])
                    offset += size
                with contextlib.suppress(ssl.SSLWantReadError):
                    peer.obj.unwrap()  # queues our close_notify
                wire += peer.outgoing.read()
                await any_loop.sock_sendall(sock, wire)
                await wait_until(lambda: srv.made())
                sv = srv.made()[0]
                exc = await asyncio.wait_for(sv.lost, 3)
                await recv_until_closed(any_loop, sock)  # the server closed its end too
            return sv, exc, payload
        finally:
            await srv.close()

    sv, exc, payload = run(any_loop, main())
    assert exc is None
    assert bytes(sv.data) == payload
    if NEW_SSLPROTO:
        assert sv.events == ["made", "data", "eof", "lost"]
    else:
        assert sv.events == ["made", "data", "lost"]
    assert sv.lost_calls == 1
    assert handler_calls == []


SSLOBJECT_CALLS = {"read": 0, "write": 0}


class CountingSSLObject(ssl.SSLObject):
    """An SSLObject subclass (SSLContext.sslobject_class): its own methods
    must be the ones called."""

    def read(self, len=1024, buffer=None):
        SSLOBJECT_CALLS["read"] += 1
        return super().read(len, buffer)

    def write(self, data):
        SSLOBJECT_CALLS["write"] += 1
        return super().write(data)


def test_sslobject_subclass_is_used(any_loop, certs, handler_calls):
    server_ctx = certs.server_context()
    server_ctx.sslobject_class = CountingSSLObject
    SSLOBJECT_CALLS.update(read=0, write=0)

    async def main():
        async with tls_pair(any_loop, server_ctx, certs.client_context()) as (tr, cl, sv, _):
            payload = pattern(200_000)
            tr.write(payload)
            assert await cl.received(len(payload)) == payload
            assert bytes(sv.data) == payload

    run(any_loop, main())
    assert SSLOBJECT_CALLS["read"] >= 2  # 200 kB: more than one batch
    assert SSLOBJECT_CALLS["write"] >= 1  # the server's echoes
    assert handler_calls == []


def test_ferroloop_tls_protocol_class(any_loop, certs):
    """3.11+: ferroloop's connections run ferroloop._ssl.SSLProtocol (asyncio's
    class with the shorter data path); 3.10 and stock asyncio run asyncio's."""
    from asyncio import sslproto

    import ferroloop._ssl

    async def main():
        async with plain_tls_pair(any_loop, certs) as (tr, cl, sv, _):
            await echo_once(tr, cl)
            return type(tr._ssl_protocol), type(sv.transport._ssl_protocol)

    client_class, server_class = run(any_loop, main())
    expected = sslproto.SSLProtocol
    if is_ferroloop(any_loop) and NEW_SSLPROTO:
        expected = ferroloop._ssl.SSLProtocol
        assert expected is not sslproto.SSLProtocol
    assert client_class is server_class is expected


class SmallBufferProtocol(asyncio.BufferedProtocol):
    """A BufferedProtocol with a 1,000-byte buffer: TLS records are larger,
    so the buffer fills and the read resumes on a later iteration."""

    def __init__(self, loop):
        self.buf = bytearray(1000)
        self.data = bytearray()
        self.events = []
        self.updates = 0
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.events.append("made")

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, nbytes):
        assert 0 < nbytes <= len(self.buf)
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.updates += 1
        self.data += self.buf[:nbytes]

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


def test_buffered_protocol_over_tls(any_loop, certs, handler_calls):
    """A TLS server whose protocol is a BufferedProtocol gets every byte, in
    order, through get_buffer/buffer_updated, then eof_received (3.11+) and
    connection_lost(None) when the client closes."""
    protocols = []

    async def main():
        def factory():
            protocols.append(SmallBufferProtocol(any_loop))
            return protocols[-1]

        server = await any_loop.create_server(factory, HOST, 0, ssl=certs.server_context())
        try:
            port = server.sockets[0].getsockname()[1]
            tr, _ = await any_loop.create_connection(
                lambda: Recorder(any_loop), HOST, port, ssl=certs.client_context(),
                server_hostname="localhost",
            )  # fmt: skip
            payload = pattern(150_000)
            for start in range(0, len(payload), 7_000):
                tr.write(payload[start : start + 7_000])
            await wait_until(lambda: protocols and len(protocols[0].data) >= len(payload))
            tr.close()
            exc = await asyncio.wait_for(protocols[0].lost, 3)
            return payload, exc
        finally:
            server.close()
            await asyncio.wait_for(server.wait_closed(), 3)

    payload, exc = run(any_loop, main())
    proto = protocols[0]
    assert exc is None
    assert bytes(proto.data) == payload
    assert proto.updates >= len(payload) // 1000
    if NEW_SSLPROTO:
        assert proto.events == ["made", "data", "eof", "lost"]
    else:
        assert proto.events == ["made", "data", "lost"]
    assert handler_calls == []
