"""TLS edge cases that uvloop fixed in its own TLS layer, and that users
switching from uvloop expect of ferroloop: the end of a connection, and
the first data of one.

- (a) application data that arrives after our close_notify (the peer sent
  it before it saw ours) is discarded: no
  ssl.SSLError(APPLICATION_DATA_AFTER_CLOSE_NOTIFY), the connection closes
  normally (eof_received, connection_lost(None)).
- (b) the first data, when it arrives in the same read as the end of the
  handshake, is application data delivered to the right party: after a
  start_tls upgrade, only once the code awaiting start_tls has the new
  transport (uvloop's "first data after waiter wakeup"), so that a protocol
  kept across the upgrade does not answer it in clear text, which its
  peer reads as a broken record (WRONG_VERSION_NUMBER).
- (c) a TLS shutdown always ends within ssl_shutdown_timeout, also when the
  close_notify exchange (or the peer's EOF) completed it but the peer does
  not read what is left to send.
- (d) close() while the app transport's reading is paused completes the
  TLS shutdown: connection_lost comes, the peer sees close_notify or EOF.

ferroloop runs asyncio's sslproto with its own data path on 3.11+
(python/ferroloop/_ssl.py). Where stock asyncio behaves the same, a test
runs on both loops (`any_loop`); where it does not, on ferroloop only
(`loop`), and its docstring says what stock asyncio does (checked on
3.11). 3.10 runs asyncio's older sslproto unchanged (no
ssl_shutdown_timeout, no eof_received on close_notify): these tests are
3.11+.

Peers that misbehave on purpose are driven by hand: an ssl.SSLObject over
MemoryBIOs on a plain socket, through the loop's sock_* methods.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys

import pytest
from tls_support import (
    RawTLS,
    Server,
    connected_raw_socket,
    listening_socket,
    raw_tls_client,
    tls_client,
)
from transport_support import HOST, MB, Recorder, pattern, recv_until_closed, run, wait_until

pytestmark = [
    pytest.mark.skipif(
        sys.version_info < (3, 11),
        reason="3.10 runs asyncio's older sslproto (_SSLPipe), unchanged: "
        "no ssl_shutdown_timeout, no eof_received on close_notify; the fixes are 3.11+",
    ),
    # Nothing may hang: each test also runs under asyncio.wait_for (run()).
    pytest.mark.timeout(60),
]


# --- helpers ------------------------------------------------------------------


def capture_handler(loop):
    """Every context the loop's exception handler receives."""
    calls = []
    loop.set_exception_handler(lambda _loop, context: calls.append(context))
    return calls


def tls12_only(ctx):
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


# --- (a) application data after close_notify ---------------------------------


@pytest.mark.parametrize("closer", ["client", "server"])
def test_a_echo_after_close_notify_is_discarded(loop, certs, closer):
    """One side writes its last words and closes; the other echoes them, so
    the echo reaches the closing side after its close_notify. The echo is
    discarded; both ends get eof_received (the close_notify) and
    connection_lost(None); no error, no exception handler call.

    Stock asyncio: the closing side gets connection_lost(ssl.SSLError
    APPLICATION_DATA_AFTER_CLOSE_NOTIFY) (no eof_received, no handler
    call: an SSLError is an OSError)."""

    async def main():
        srv = await Server(loop, echo=False).start(certs.server_context())
        try:
            _, cl = await tls_client(loop, srv.port, certs)
            sv = await srv.first()
            closing, echoing = (cl, sv) if closer == "client" else (sv, cl)
            echoing.echo = True
            closing.transport.write(b"last words")
            closing.transport.close()
            echoing_exc = await asyncio.wait_for(echoing.lost, 5)
            closing_exc = await asyncio.wait_for(closing.lost, 5)
            await asyncio.sleep(0.02)
            return closing, echoing, closing_exc, echoing_exc
        finally:
            await srv.abort()

    handler_calls = capture_handler(loop)
    closing, echoing, closing_exc, echoing_exc = run(loop, main(), timeout=10)
    assert (closing_exc, echoing_exc) == (None, None)
    assert bytes(echoing.data) == b"last words"
    assert bytes(closing.data) == b""  # the echo came after close()
    assert closing.events == ["made", "eof", "lost"]
    assert echoing.events == ["made", "data", "eof", "lost"]
    assert closing.lost_calls == echoing.lost_calls == 1
    assert handler_calls == []


@pytest.mark.parametrize("when", ["before-reading-ours", "with-its-close-notify"])
def test_a_peer_data_after_our_close_notify(loop, certs, when):
    """The server closes; the client sends records after the server's
    close_notify left: at once, before reading it (then answers it), or,
    once it read it, together with its own close_notify in one segment.
    The server discards them and closes normally; the client sees the
    server's close_notify.

    Stock asyncio: the server gets connection_lost(ssl.SSLError
    APPLICATION_DATA_AFTER_CLOSE_NOTIFY)."""

    async def main():
        srv = await Server(loop, echo=False).start(certs.server_context())
        try:
            async with raw_tls_client(loop, srv.port, certs) as peer:
                await peer.handshake()
                sv = await srv.first()
                sv.transport.close()
                late = peer.records(b"late data, " * 1000)
                if when == "before-reading-ours":
                    await loop.sock_sendall(peer.sock, late)
                    await asyncio.sleep(0.05)
                    _, saw_close_notify = await peer.read_until_close()
                    await loop.sock_sendall(peer.sock, peer.close_notify())
                else:
                    _, saw_close_notify = await peer.read_until_close()
                    await loop.sock_sendall(peer.sock, late + peer.close_notify())
                exc = await asyncio.wait_for(sv.lost, 3)
                await asyncio.sleep(0.02)
            return sv, exc, saw_close_notify
        finally:
            await srv.abort()

    handler_calls = capture_handler(loop)
    sv, exc, saw_close_notify = run(loop, main())
    assert exc is None
    assert saw_close_notify
    assert bytes(sv.data) == b""
    assert sv.events == ["made", "eof", "lost"]
    assert sv.lost_calls == 1
    assert handler_calls == []


# --- (b) the first data ----------------------------------------------------------


@pytest.mark.parametrize("role", ["server", "client"])
def test_b_first_data_in_the_same_read_as_the_handshake_end(any_loop, certs, role):
    """The peer's last handshake flight and its first application data
    arrive in one TCP segment: the handshake completes and the data is
    delivered, once, right after connection_made; the answer reaches the
    peer encrypted.

    role "server": our server, a TLS 1.3 client whose Finished and first
    record go together; role "client": our client, a TLS 1.2 server whose
    ChangeCipherSpec/Finished and first record go together."""
    first = b"first data, with the handshake's last flight"

    async def as_server():
        srv = await Server(any_loop, echo=False).start(certs.server_context())
        try:
            async with raw_tls_client(any_loop, srv.port, certs) as peer:
                await peer.handshake(send_last_flight=False)
                assert peer.obj.version() == "TLSv1.3"
                await any_loop.sock_sendall(peer.sock, peer.outgoing.read() + peer.records(first))
                proto = await srv.first()
                await proto.received(len(first))
                proto.transport.write(b"reply")
                answer = await peer.read(5)
                proto.transport.close()
                await peer.answer_close()
                await asyncio.wait_for(proto.lost, 3)
                return proto, answer
        finally:
            await srv.abort()

    async def as_client():
        with listening_socket() as lsock:
            connecting = asyncio.ensure_future(tls_client(any_loop, lsock.getsockname()[1], certs))
            conn, _ = await asyncio.wait_for(any_loop.sock_accept(lsock), 3)
            with conn:
                conn.setblocking(False)
                peer = RawTLS(any_loop, conn, tls12_only(certs.server_context()), server_side=True)
                await peer.handshake(send_last_flight=False)
                assert peer.obj.version() == "TLSv1.2"
                await any_loop.sock_sendall(conn, peer.outgoing.read() + peer.records(first))
                tr, proto = await asyncio.wait_for(connecting, 3)
                await proto.received(len(first))
                tr.write(b"reply")
                answer = await peer.read(5)
                tr.close()
                await peer.answer_close()
                await asyncio.wait_for(proto.lost, 3)
                return proto, answer

    handler_calls = capture_handler(any_loop)
    proto, answer = run(any_loop, as_server() if role == "server" else as_client())
    assert bytes(proto.data) == first
    assert proto.events == ["made", "data", "eof", "lost"]
    assert answer == (b"reply", None)
    assert handler_calls == []


def test_b_start_tls_with_the_client_hello_already_waiting(any_loop, certs):
    """A client sends "STARTTLS\\n" and, without waiting for the answer, its
    ClientHello: when the server's plain protocol (which paused reading at
    the line) upgrades with loop.start_tls, the ClientHello is already
    waiting in the socket. It is read as the handshake it is, and the
    client's first record as application data."""

    async def main():
        go = any_loop.create_future()
        tls_proto = Recorder(any_loop, echo=True)
        upgraded = any_loop.create_future()

        class Plain(Recorder):
            def data_received(self, data):
                super().data_received(data)
                if bytes(self.data) == b"STARTTLS\n":
                    self.transport.pause_reading()
                    self.transport.write(b"OK\n")
                    any_loop.create_task(self.upgrade())

            async def upgrade(self):
                try:
                    await go  # the ClientHello is in the socket by then
                    tls_proto.transport = await any_loop.start_tls(
                        self.transport, tls_proto, certs.server_context(), server_side=True
                    )
                    upgraded.set_result(None)
                except BaseException as exc:
                    upgraded.set_exception(exc)
                    raise

        srv = await Server(any_loop, lambda: Plain(any_loop)).start()
        try:
            sock = await connected_raw_socket(any_loop, srv.port)
            with sock:
                await any_loop.sock_sendall(sock, b"STARTTLS\n")
                plain = await srv.first()
                await wait_until(lambda: bytes(plain.data) == b"STARTTLS\n")
                peer = RawTLS.client(any_loop, sock, certs)
                with pytest.raises(ssl.SSLWantReadError):
                    peer.obj.do_handshake()
                await peer.flush()  # the ClientHello, before the upgrade
                await asyncio.sleep(0.05)
                go.set_result(None)
                assert await any_loop.sock_recv(sock, 3) == b"OK\n"
                await peer.handshake()
                await asyncio.wait_for(upgraded, 3)
                await any_loop.sock_sendall(sock, peer.records(b"hello over tls"))
                answer = await peer.read(14)
                tls_proto.transport.close()
                await peer.answer_close()
                await asyncio.wait_for(tls_proto.lost, 3)
                return plain, answer
        finally:
            await srv.abort()

    handler_calls = capture_handler(any_loop)
    plain, answer = run(any_loop, main())
    assert answer == (b"hello over tls", None)
    assert bytes(plain.data) == b"STARTTLS\n"
    assert handler_calls == []


def test_b_start_tls_first_data_after_the_waiter_wakeup(loop, certs):
    """uvloop's test_first_data_after_wakeup: a server protocol upgrades its
    connection (start_tls, server side) as soon as it is made, keeps itself
    as the protocol, takes the TLS transport when start_tls returns, and
    echoes whatever it receives on whatever transport it holds. The
    client's Finished and first record arrive in one segment: the record
    must be delivered after start_tls returned, so that the echo goes out
    encrypted.

    Stock asyncio delivers it from inside the handshake's completion,
    before start_tls returns: the echo goes out in clear text on the plain
    transport, and the client's TLS fails on it with
    ssl.SSLError(WRONG_VERSION_NUMBER).

    ferroloop's loop.start_tls is asyncio's code building ferroloop's
    SSLProtocol (ferroloop/_ssl.py), which defers that first read."""

    class UpgradingEcho(asyncio.Protocol):
        def __init__(self):
            self.lost = loop.create_future()
            self.transports = []
            self.tr = None

        @property
        def transport(self):  # for Server
            return self.tr

        def connection_made(self, transport):
            self.tr = transport
            transport.pause_reading()  # the upgrade reads the ClientHello

            async def upgrade():
                self.tr = await loop.start_tls(
                    transport, self, certs.server_context(), server_side=True
                )
                self.transports.append(self.tr)

            loop.create_task(upgrade())

        def data_received(self, data):
            self.tr.write(data)  # on whatever transport it holds

        def connection_lost(self, exc):
            self.lost.set_result(exc)

    async def main():
        srv = await Server(loop, UpgradingEcho).start()
        try:
            async with raw_tls_client(loop, srv.port, certs) as peer:
                await peer.handshake(send_last_flight=False)
                await loop.sock_sendall(peer.sock, peer.outgoing.read() + peer.records(b"hello"))
                answer = await peer.read(5)
                proto = srv.protocols[0]
                if answer[1] is not None:  # the client's TLS failed
                    return answer, proto, None
                await loop.sock_sendall(peer.sock, peer.close_notify())
                lost = await asyncio.wait_for(proto.lost, 3)
            return answer, proto, lost
        finally:
            await srv.abort()

    handler_calls = capture_handler(loop)
    answer, proto, lost = run(loop, main())
    assert answer == (b"hello", None), answer
    assert len(proto.transports) == 1
    assert proto.transports[0].get_extra_info("ssl_object") is not None
    assert lost is None
    assert handler_calls == []


# --- (c) the shutdown always ends ---------------------------------------------


@pytest.mark.parametrize("how", ["close_notify", "eof"])
def test_c_peer_ends_and_stops_reading(loop, certs, how):
    """A client ends the connection (its close_notify, or a TCP EOF) while
    the server still has megabytes to send to it, and never reads them: the
    server's TLS shutdown completes at once (close_notify exchange, or
    EOF), but closing the TCP transport waits for its buffer to drain,
    which never happens. After ssl_shutdown_timeout the connection is
    dropped: eof_received, then connection_lost(TimeoutError("SSL shutdown
    timed out")).

    Stock asyncio 3.14+ does the same. 3.11-3.13 cancel (or never start)
    the timer once the shutdown completed: the connection hangs until the
    peer goes away (connection_lost never comes)."""

    async def main():
        srv = await Server(loop, echo=False).start(certs.server_context(), ssl_shutdown_timeout=0.5)
        try:
            async with raw_tls_client(loop, srv.port, certs, rcvbuf=4096) as peer:
                await peer.handshake()
                sv = await srv.first()
                sv.transport.write(pattern(8 * MB))  # far more than the socket buffers
                await asyncio.sleep(0.05)
                t0 = loop.time()
                if how == "close_notify":
                    await loop.sock_sendall(peer.sock, peer.close_notify())
                else:
                    peer.sock.shutdown(socket.SHUT_WR)
                exc = await asyncio.wait_for(sv.lost, 5)
                elapsed = loop.time() - t0
            await asyncio.sleep(0.02)
            return sv, exc, elapsed
        finally:
            await srv.abort()

    handler_calls = capture_handler(loop)
    sv, exc, elapsed = run(loop, main(), timeout=10)
    assert isinstance(exc, TimeoutError), repr(exc)
    assert str(exc) == "SSL shutdown timed out"
    assert 0.4 <= elapsed < 3.0
    assert sv.events == ["made", "eof", "lost"]
    assert sv.lost_calls == 1
    assert handler_calls == []


def test_c_stream_close_with_a_peer_that_never_answers(any_loop, certs):
    """writer.close(); await writer.wait_closed() against a peer that
    completed the handshake and then neither reads nor answers the
    close_notify, with megabytes still unsent: wait_closed() ends after
    ssl_shutdown_timeout, raising its TimeoutError."""

    async def main():
        with listening_socket() as lsock:
            accepting = asyncio.ensure_future(any_loop.sock_accept(lsock))
            connecting = asyncio.ensure_future(
                asyncio.open_connection(
                    HOST, lsock.getsockname()[1], ssl=certs.client_context(),
                    server_hostname="localhost", ssl_shutdown_timeout=0.5,
                )
            )  # fmt: skip
            conn, _ = await asyncio.wait_for(accepting, 3)
            with conn:
                conn.setblocking(False)
                peer = RawTLS(any_loop, conn, certs.server_context(), server_side=True)
                await peer.handshake()
                _reader, writer = await asyncio.wait_for(connecting, 3)
                writer.write(pattern(8 * MB))
                t0 = any_loop.time()
                writer.close()
                with pytest.raises(TimeoutError, match="SSL shutdown timed out"):
                    await asyncio.wait_for(writer.wait_closed(), 5)
                return any_loop.time() - t0

    handler_calls = capture_handler(any_loop)
    elapsed = run(any_loop, main(), timeout=10)
    assert 0.4 <= elapsed < 3.0
    assert handler_calls == []


# --- (d) close() while reading is paused ---------------------------------------


def test_d_close_while_paused_nothing_pending(any_loop, certs):
    """The server pauses reading on its TLS transport, then closes it with
    nothing pending: the close_notify exchange completes; the client sees
    it (eof_received); both ends get connection_lost(None)."""

    async def main():
        srv = await Server(any_loop, echo=False).start(certs.server_context())
        try:
            _, cl = await tls_client(any_loop, srv.port, certs)
            sv = await srv.first()
            sv.transport.pause_reading()
            assert not sv.transport.is_reading()
            sv.transport.close()
            sv_exc = await asyncio.wait_for(sv.lost, 3)
            cl_exc = await asyncio.wait_for(cl.lost, 3)
            return cl, sv, sv_exc, cl_exc
        finally:
            await srv.abort()

    handler_calls = capture_handler(any_loop)
    cl, sv, sv_exc, cl_exc = run(any_loop, main())
    assert (sv_exc, cl_exc) == (None, None)
    assert cl.events == ["made", "eof", "lost"]
    assert sv.events == ["made", "eof", "lost"]
    assert handler_calls == []


@pytest.mark.parametrize("size", [1000, 2 * MB], ids=["some", "beyond-read-high-water"])
def test_d_close_while_paused_with_data_pending(loop, certs, size):
    """The server pauses reading; the client sends data (in the second
    case more than the TLS read buffer's high-water mark, so that the TCP
    transport stops reading too); the server closes without resuming. The
    pending data is discarded, the close_notify exchange completes at once
    (not after ssl_shutdown_timeout), and both ends get
    connection_lost(None).

    Stock asyncio: the server's unwrap() meets the pending records and
    fails: the server gets connection_lost(ssl.SSLError
    APPLICATION_DATA_AFTER_CLOSE_NOTIFY), and the client sees the TCP
    connection end without close_notify (with 2 MB sent: reset,
    ConnectionResetError)."""

    async def main():
        srv = await Server(loop, echo=False).start(certs.server_context(), ssl_shutdown_timeout=5)
        try:
            tr, cl = await tls_client(loop, srv.port, certs)
            sv = await srv.first()
            sv.transport.pause_reading()
            tr.write(pattern(size))
            high = sv.transport.get_read_buffer_limits()[1]
            want = min(size // 2, high)
            await wait_until(lambda: sv.transport.get_read_buffer_size() >= want)
            await asyncio.sleep(0.05)
            t0 = loop.time()
            sv.transport.close()
            sv_exc = await asyncio.wait_for(sv.lost, 4)
            elapsed = loop.time() - t0
            cl_exc = await asyncio.wait_for(cl.lost, 3)
            return cl, sv, sv_exc, cl_exc, elapsed
        finally:
            await srv.abort()

    handler_calls = capture_handler(loop)
    cl, sv, sv_exc, cl_exc, elapsed = run(loop, main(), timeout=10)
    assert (sv_exc, cl_exc) == (None, None)
    assert elapsed < 2.0
    assert bytes(sv.data) == b""
    assert cl.events == ["made", "eof", "lost"]
    assert sv.events == ["made", "eof", "lost"]
    assert handler_calls == []


@pytest.mark.parametrize("how", ["close_notify-and-eof", "eof"])
def test_d_close_while_paused_after_the_peer_ended(loop, certs, how):
    """The server pauses reading; the client sends a record, then ends the
    connection (its close_notify and a TCP EOF, or the EOF alone) while
    the server is still paused; the server then closes without resuming:
    it gets eof_received and connection_lost(None) at once.

    Stock asyncio: the EOF leaves the paused connection in FLUSHING with
    no timer, and close() does nothing there: connection_lost never comes
    (a hang)."""

    async def main():
        srv = await Server(loop, echo=False).start(certs.server_context(), ssl_shutdown_timeout=5)
        try:
            async with raw_tls_client(loop, srv.port, certs) as peer:
                await peer.handshake()
                sv = await srv.first()
                sv.transport.pause_reading()
                await asyncio.sleep(0.02)
                wire = peer.records(b"unread")
                if how == "close_notify-and-eof":
                    wire += peer.close_notify()
                await loop.sock_sendall(peer.sock, wire)
                peer.sock.shutdown(socket.SHUT_WR)
                await asyncio.sleep(0.1)
                assert not sv.lost.done()
                t0 = loop.time()
                sv.transport.close()
                sv_exc = await asyncio.wait_for(sv.lost, 4)
                elapsed = loop.time() - t0
                # The client sees the TCP connection end.
                await asyncio.wait_for(recv_until_closed(loop, peer.sock), 3)
            return sv, sv_exc, elapsed
        finally:
            await srv.abort()

    handler_calls = capture_handler(loop)
    sv, sv_exc, elapsed = run(loop, main(), timeout=10)
    assert sv_exc is None
    assert elapsed < 2.0
    assert bytes(sv.data) == b""
    assert sv.events == ["made", "eof", "lost"]
    assert handler_calls == []


def test_buffered_protocol_with_a_bytearray_gets_every_record(loop, certs):
    """A BufferedProtocol whose buffer is a bytearray gets all of several TLS
    records that arrive in one read. asyncio reads the records after the
    first into `buf[offset:]`, a copy of a bytearray: their bytes were lost
    (zeros reached the app), on stock asyncio as on ferroloop before."""
    records = [bytes([i]) * 1000 for i in range(1, 33)]
    got = bytearray()
    done = loop.create_future()

    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(256 * 1024)

        def get_buffer(self, sizehint):
            return self.buf

        def buffer_updated(self, nbytes):
            got.extend(self.buf[:nbytes])
            if len(got) >= len(records) * 1000 and not done.done():
                done.set_result(None)

    async def main():
        server = await loop.create_server(Buffered, HOST, 0, ssl=certs.server_context())
        _reader, writer = await asyncio.open_connection(
            *server.sockets[0].getsockname(),
            ssl=certs.client_context(),
            server_hostname="localhost",
        )
        await asyncio.sleep(0.05)  # the handshake's last steps
        for record in records:  # one TLS record each, sent in one go
            writer.write(record)
        await writer.drain()
        await asyncio.wait_for(done, 10)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())
    assert bytes(got) == b"".join(records)
