"""TLS with the user's SSLContext honoured: verification of the server,
mutual TLS, ALPN, SNI, session reuse, and what get_extra_info tells about
the connection, with stock asyncio as the reference (test_tls.py's
docstring says what asyncio does per CPython version).
"""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl

import pytest
from support import open_fd_count
from tls_support import (
    CLIENT_CN,
    NEW_SSLPROTO,
    SNI_NAME,
    X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT,
    Server,
    check_tls_echo,
    echo_once,
    tls_client,
    tls_pair,
)
from transport_support import (
    HOST,
    Recorder,
    run,
)

# --- the SSLContext is honoured -----------------------------------------------


def test_untrusted_server_is_rejected(any_loop, certs, handler_calls):
    async def main():
        fds = open_fd_count()
        srv = await Server(any_loop).start(certs.server_context(cert="untrusted"))
        try:
            with pytest.raises(ssl.SSLCertVerificationError) as info:
                await tls_client(any_loop, srv.port, certs)
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
