"""How a TLS connection ends: close_notify, abort, a TCP EOF in the middle
of a record, handshake timeouts, a peer that goes away during the
handshake, and ssl_shutdown_timeout, with stock asyncio as the reference
(test_tls.py's docstring says what asyncio does per CPython version).
"""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl

import pytest
from support import open_fd_count
from tls_support import (
    NEW_SSLPROTO,
    RawTLS,
    Server,
    check_tls_echo,
    connected_raw_socket,
    echo_once,
    listening_socket,
    needs_311,
    plain_tls_pair,
    raw_tls_client,
    tls_client,
    tls_pair,
)
from transport_support import (
    HOST,
    Recorder,
    recv_until_closed,
    reset_close,
    run,
    wait_until,
)

# --- shutdown, abort, failures ------------------------------------------------


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
            async with raw_tls_client(any_loop, srv.port, certs) as peer:
                await peer.handshake()
                whole = peer.records(b"a whole record")
                half = peer.records(b"a record cut in two")
                await any_loop.sock_sendall(peer.sock, whole + half[: len(half) // 2])
                await wait_until(lambda: srv.made() and len(srv.made()[0].data) >= 14)
                peer.sock.shutdown(socket.SHUT_WR)
                sv = srv.made()[0]
                exc = await asyncio.wait_for(sv.lost, 3)
                await recv_until_closed(any_loop, peer.sock)  # the server closed its end too
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
                await tls_client(any_loop, lsock.getsockname()[1], certs, ssl_handshake_timeout=0.2)
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
            tr, cl = await tls_client(any_loop, srv.port, certs)
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
                    reset_close(conn)
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
                reset_close(sock)
            else:
                sock.close()
            await asyncio.sleep(0.1)
            assert [p.events for p in srv.protocols] in ([], [[]])
            tr, cl = await tls_client(any_loop, srv.port, certs)
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
                tls_client(any_loop, lsock.getsockname()[1], certs, ssl_shutdown_timeout=0.3)
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
