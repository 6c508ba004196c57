"""Datagram transports made by create_datagram_endpoint: UDP over IPv4 and
IPv6 and Unix datagram sockets, on real sockets, with stock asyncio as the
reference.

https://docs.python.org/3/library/asyncio-protocol.html#datagram-transports
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import socket
import stat
import sys
import weakref

import pytest
from support import make_loop, open_fd_count
from transport_support import HOST, run, wait_until

# --- helpers ------------------------------------------------------------------


class Recorder(asyncio.DatagramProtocol):
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
    return await loop.create_datagram_endpoint(lambda: Recorder(loop), **kwargs)


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


# --- types and extra info -----------------------------------------------------


def test_udp_transport_types_and_extra_info(any_loop):
    async def main():
        tr, proto = await endpoint(any_loop, local_addr=(HOST, 0))
        try:
            assert proto.events == ["made"]
            assert proto.transport is tr
            assert isinstance(tr, asyncio.BaseTransport)
            if sys.version_info >= (3, 12):
                # asyncio's selector datagram transport is a DatagramTransport
                # only from 3.12 on.
                assert isinstance(tr, asyncio.DatagramTransport)
            assert callable(tr.sendto) and callable(tr.abort)
            sock = tr.get_extra_info("socket")
            assert sock.family == socket.AF_INET
            assert sock.type == socket.SOCK_DGRAM
            sockname = tr.get_extra_info("sockname")
            assert sockname == sock.getsockname()
            assert sockname[0] == HOST and sockname[1] != 0
            assert tr.get_extra_info("peername") is None
            assert tr.get_extra_info("nope") is None
            assert tr.get_extra_info("nope", ()) == ()
            assert tr.get_protocol() is proto
            assert tr.is_closing() is False
            assert tr.get_write_buffer_size() == 0

            other = Recorder(any_loop)
            tr.set_protocol(other)
            assert tr.get_protocol() is other
        finally:
            tr.close()

    run(any_loop, main())


def test_connected_endpoint_extra_info(any_loop):
    async def main():
        server, _ = await endpoint(any_loop, local_addr=(HOST, 0))
        addr = server.get_extra_info("sockname")
        client, _ = await endpoint(any_loop, remote_addr=addr)
        try:
            assert client.get_extra_info("peername") == addr
            assert client.get_extra_info("sockname")[0] == HOST
            assert client.get_extra_info("sockname")[1] != 0  # connect() bound it
        finally:
            client.close()
            server.close()

    run(any_loop, main())


# --- sendto / datagram_received -----------------------------------------------


def test_sendto_and_datagram_received(any_loop, handler_calls):
    sizes = [1, 2, 100, 1400, 9000, 60_000, 3, 0x7FFF]
    payloads = [bytes([i % 251]) * n for i, n in enumerate(sizes)]

    async def main():
        a, pa = await endpoint(any_loop, local_addr=(HOST, 0))
        b, pb = await endpoint(any_loop, local_addr=(HOST, 0))
        try:
            b_addr = b.get_extra_info("sockname")
            for i, p in enumerate(payloads):
                kind = (bytes, bytearray, memoryview)[i % 3]
                a.sendto(kind(p), b_addr)
            await wait_until(lambda: len(pb.datagrams) == len(payloads))
            await asyncio.sleep(0.02)
            assert len(pb.datagrams) == len(payloads)
            assert [d for d, _ in pb.datagrams] == payloads  # boundaries kept
            assert all(type(d) is bytes for d, _ in pb.datagrams)
            assert {addr for _, addr in pb.datagrams} == {a.get_extra_info("sockname")}
            # and back
            b.sendto(b"reply", a.get_extra_info("sockname"))
            await wait_until(lambda: pa.datagrams)
            assert pa.datagrams == [(b"reply", b_addr)]
            assert pa.events == ["made", "datagram"]
        finally:
            a.close()
            b.close()

    run(any_loop, main())
    assert handler_calls == []


def test_a_burst_of_datagrams_is_all_delivered_in_order(any_loop):
    async def main():
        rx, prx = await endpoint(any_loop, local_addr=(HOST, 0))
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            addr = rx.get_extra_info("sockname")
            for i in range(100):  # all queued before the loop gets to read
                tx.sendto(b"%d" % i, addr)
            await wait_until(lambda: len(prx.datagrams) == 100)
            assert [d for d, _ in prx.datagrams] == [b"%d" % i for i in range(100)]
            # tx was bound by its first sendto, to 0.0.0.0:<port>
            assert {a for _, a in prx.datagrams} == {(HOST, tx.getsockname()[1])}
        finally:
            tx.close()
            rx.close()

    run(any_loop, main())


def test_the_largest_udp_datagram(any_loop):
    payload = os.urandom(65_507)  # the IPv4 maximum

    async def main():
        rx, prx = await endpoint(any_loop, local_addr=(HOST, 0))
        tx, _ = await endpoint(any_loop, remote_addr=rx.get_extra_info("sockname"))
        try:
            tx.sendto(payload)
            await wait_until(lambda: prx.datagrams)
            assert prx.datagrams[0][0] == payload
        finally:
            tx.close()
            rx.close()

    run(any_loop, main())


def test_connected_endpoint_sendto_address_rules(any_loop):
    async def main():
        rx, prx = await endpoint(any_loop, local_addr=(HOST, 0))
        addr = rx.get_extra_info("sockname")
        tx, _ = await endpoint(any_loop, remote_addr=addr)
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            tx.sendto(b"one")
            tx.sendto(b"two", addr)
            with pytest.raises(ValueError, match="Invalid address: must be None or"):
                tx.sendto(b"three", (HOST, addr[1] + 1 if addr[1] < 65535 else 1))
            await wait_until(lambda: len(prx.datagrams) == 2)
            assert [d for d, _ in prx.datagrams] == [b"one", b"two"]
            assert prx.datagrams[0][1] == tx.get_extra_info("sockname")
            # A connected socket only hears from its peer.
            _, ptx = tx, tx.get_protocol()
            stranger.sendto(b"not for you", tx.get_extra_info("sockname"))
            rx.sendto(b"from the peer", tx.get_extra_info("sockname"))
            await wait_until(lambda: ptx.datagrams)
            await asyncio.sleep(0.05)
            assert ptx.datagrams == [(b"from the peer", addr)]
        finally:
            stranger.close()
            tx.close()
            rx.close()

    run(any_loop, main())


@pytest.mark.parametrize(
    "obj, type_name", [("text", "str"), (7, "int"), (None, "NoneType"), ([b"x"], "list")]
)
def test_sendto_non_bytes_raises_type_error(any_loop, obj, type_name):
    async def main():
        tr, proto = await endpoint(any_loop, local_addr=(HOST, 0))
        try:
            with pytest.raises(TypeError) as info:
                tr.sendto(obj, tr.get_extra_info("sockname"))
            assert str(info.value) == (
                f"data argument must be a bytes-like object, not '{type_name}'"
            )
            assert not tr.is_closing()
            assert proto.errors == []
        finally:
            tr.close()

    run(any_loop, main())


@pytest.mark.skipif((3, 12) <= sys.version_info < (3, 13), reason="changed during 3.12/3.13")
def test_sendto_empty_data(any_loop):
    async def main():
        rx, prx = await endpoint(any_loop, local_addr=(HOST, 0))
        tx, _ = await endpoint(any_loop, remote_addr=rx.get_extra_info("sockname"))
        try:
            tx.sendto(b"")
            tx.sendto(b"marker")
            await wait_until(lambda: any(d == b"marker" for d, _ in prx.datagrams))
            return [d for d, _ in prx.datagrams]
        finally:
            tx.close()
            rx.close()

    got = run(any_loop, main())
    if sys.version_info >= (3, 13):
        assert got == [b"", b"marker"]  # 3.13 sends zero-length datagrams
    else:
        assert got == [b"marker"]  # earlier versions drop empty data


# sendto's address forms: ferroloop sends bytes/bytearray to numeric
# addresses natively and hands every other form to asyncio's code. Each
# case runs on both loops, and ferroloop's outcome must be asyncio's.


def sendto_outcome(kind, data, make_addr, family=socket.AF_INET):
    """What one `sendto(data, make_addr(port_of_a_receiver))` leads to."""
    host = HOST if family == socket.AF_INET else "::1"
    loop = make_loop(kind)
    handled = []
    loop.set_exception_handler(lambda _, context: handled.append(context))

    async def main():
        rx, prx = await endpoint(loop, local_addr=(host, 0))
        tx, ptx = await endpoint(loop, local_addr=(host, 0))
        try:
            raised = None
            try:
                tx.sendto(data, make_addr(rx.get_extra_info("sockname")[1]))
            except Exception as exc:  # noqa: BLE001 - recorded and compared
                raised = exc
            tx.sendto(b"marker", rx.get_extra_info("sockname")[:2])
            await wait_until(lambda: prx.datagrams or tx.is_closing())
            await asyncio.sleep(0.02)  # anything else that was sent
            sender = tx.get_extra_info("sockname")
            lost = (await ptx.lost) if ptx.lost.done() else "open"
            return {
                "raised": type(raised).__name__,
                "received": [d for d, a in prx.datagrams if a == sender],
                "error_received": [type(e).__name__ for e in ptx.errors],
                "connection_lost": lost if lost == "open" else type(lost).__name__,
            }
        finally:
            tx.close()
            rx.close()

    try:
        got = run(loop, main())
    finally:
        loop.close()
    got["exception_handler"] = [type(c.get("exception")).__name__ for c in handled]
    return got


DATA_TYPES = [b"bytes", bytearray(b"bytearray"), memoryview(b"_memoryview")[1:]]


@pytest.mark.parametrize("data", DATA_TYPES, ids=lambda d: type(d).__name__)
@pytest.mark.parametrize(
    "make_addr",
    [
        lambda port: (HOST, port),
        lambda port: ("localhost", port),
        lambda port: (b"127.0.0.1", port),
    ],
    ids=["numeric", "hostname", "bytes-host"],
)
def test_sendto_address_forms_and_data_types(make_addr, data):
    reference = sendto_outcome("asyncio", data, make_addr)
    assert reference["received"][:1] == [bytes(data)] or make_addr(0)[0] == "localhost"
    assert sendto_outcome("ferroloop", data, make_addr) == reference


@needs_ipv6
@pytest.mark.parametrize(
    "make_addr",
    [
        lambda port: ("::1", port),
        lambda port: ("::1", port, 0),
        lambda port: ("::1", port, 0, 0),
        lambda port: ("0:0:0:0:0:0:0:1", port, 0, 0),
        lambda port: ("::1", port, 1 << 20, 0),
        lambda port: ("::1", port, 0, 0, 0),
    ],
    ids=["pair", "flowinfo", "scope_id", "long-form", "bad-flowinfo", "five"],
)
def test_sendto_ipv6_address_tuples(make_addr):
    reference = sendto_outcome("asyncio", b"six", make_addr, socket.AF_INET6)
    assert sendto_outcome("ferroloop", b"six", make_addr, socket.AF_INET6) == reference


@pytest.mark.parametrize(
    "make_addr",
    [
        lambda port: (HOST, 70000),
        lambda port: (HOST, -1),
        lambda port: (HOST, "port"),
        lambda port: (HOST, float(port)),
        lambda port: (HOST, port, 0),
        lambda port: [HOST, port],
        lambda port: ("127.000.0.1", port),
        lambda port: ("::1", port),
        lambda port: ("no.such.host.invalid", port),
        lambda port: None,
    ],
    ids=[
        "port-too-big",
        "negative-port",
        "str-port",
        "float-port",
        "triple",
        "list",
        "leading-zeros",
        "ipv6-on-ipv4",
        "unknown-host",
        "none",
    ],
)
def test_sendto_bad_or_odd_address_fails_as_asyncio(make_addr):
    """Whatever asyncio does (an exception, error_received for an OSError, a
    fatal error that closes the endpoint, or sending after all), ferroloop
    does the same."""
    reference = sendto_outcome("asyncio", b"x", make_addr)
    assert sendto_outcome("ferroloop", b"x", make_addr) == reference


# --- errors -------------------------------------------------------------------


def test_error_received_for_a_closed_port(any_loop, handler_calls):
    port = closed_udp_port()

    async def main():
        tr, proto = await endpoint(any_loop, remote_addr=(HOST, port))
        try:
            tr.sendto(b"anyone there?")
            await wait_until(lambda: proto.errors)
            assert all(isinstance(e, ConnectionRefusedError) for e in proto.errors)
            assert proto.errors[0].errno == errno.ECONNREFUSED
            # error_received does not close the endpoint
            assert not tr.is_closing()
            assert not proto.lost.done()
            # it still works: point a listener at the port and talk to it
            rx, prx = await endpoint(any_loop, local_addr=(HOST, port))
            try:
                tr.sendto(b"now there is")
                await wait_until(lambda: prx.datagrams)
                assert prx.datagrams[0][0] == b"now there is"
            finally:
                rx.close()
        finally:
            tr.close()
        assert await proto.lost is None
        assert proto.events[0] == "made" and proto.events[-1] == "lost"
        assert "error" in proto.events

    run(any_loop, main())
    assert handler_calls == []


def test_broadcast_needs_allow_broadcast(any_loop):
    async def main():
        tr, proto = await endpoint(any_loop, local_addr=(HOST, 0))
        try:
            sock = tr.get_extra_info("socket")
            assert not sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST)
            tr.sendto(b"to everyone", ("255.255.255.255", 9))
            await wait_until(lambda: proto.errors)
            assert isinstance(proto.errors[0], PermissionError)
            assert not tr.is_closing()
        finally:
            tr.close()

    run(any_loop, main())


def test_allow_broadcast(any_loop):
    async def main():
        tr, proto = await endpoint(any_loop, local_addr=("0.0.0.0", 0), allow_broadcast=True)
        try:
            sock = tr.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST)
            tr.sendto(b"to everyone", ("255.255.255.255", 9))
            await asyncio.sleep(0.05)
            if proto.errors and not isinstance(proto.errors[0], PermissionError):
                pytest.skip(f"no broadcast route here: {proto.errors[0]!r}")
            assert proto.errors == []
        finally:
            tr.close()

    run(any_loop, main())


def test_allow_broadcast_with_remote_addr_does_not_connect(any_loop):
    async def main():
        rx, prx = await endpoint(any_loop, local_addr=(HOST, 0))
        addr = rx.get_extra_info("sockname")
        tx, _ = await endpoint(any_loop, remote_addr=addr, allow_broadcast=True)
        try:
            # asyncio leaves a broadcasting socket unconnected and sends
            # each datagram to remote_addr.
            assert tx.get_extra_info("peername") is None
            tx.sendto(b"hello")
            await wait_until(lambda: prx.datagrams)
            assert prx.datagrams[0][0] == b"hello"
        finally:
            tx.close()
            rx.close()

    run(any_loop, main())


def test_exception_in_datagram_received(any_loop, handler_calls):
    class Bad(Recorder):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            if data == b"bad":
                raise ZeroDivisionError("in datagram_received")

    async def main():
        rx, prx = await any_loop.create_datagram_endpoint(
            lambda: Bad(any_loop), local_addr=(HOST, 0)
        )
        tx, _ = await endpoint(any_loop, remote_addr=rx.get_extra_info("sockname"))
        try:
            tx.sendto(b"bad")
            await wait_until(lambda: handler_calls)
            # The error is reported; the endpoint stays open and keeps receiving.
            assert not rx.is_closing()
            tx.sendto(b"good")
            await wait_until(lambda: len(prx.datagrams) == 2)
            assert [d for d, _ in prx.datagrams] == [b"bad", b"good"]
            assert not prx.lost.done()
        finally:
            tx.close()
            rx.close()

    run(any_loop, main())
    assert [type(c.get("exception")) for c in handler_calls] == [ZeroDivisionError]


# --- options: reuse_port, sock=, family ---------------------------------------


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="needs SO_REUSEPORT")
def test_reuse_port(any_loop):
    async def main():
        a, _ = await endpoint(any_loop, local_addr=(HOST, 0), reuse_port=True)
        port = a.get_extra_info("sockname")[1]
        b = None
        try:
            assert a.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
            b, _ = await endpoint(any_loop, local_addr=(HOST, port), reuse_port=True)
            assert b.get_extra_info("sockname") == (HOST, port)
            with pytest.raises(OSError) as info:
                await endpoint(any_loop, local_addr=(HOST, port))
            assert info.value.errno == errno.EADDRINUSE
        finally:
            a.close()
            if b is not None:
                b.close()

    run(any_loop, main())


def test_endpoint_with_sock(any_loop):
    async def main():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((HOST, 0))
        tr, proto = await any_loop.create_datagram_endpoint(lambda: Recorder(any_loop), sock=sock)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            assert sock.gettimeout() == 0  # made non-blocking
            assert tr.get_extra_info("sockname") == sock.getsockname()
            tx.sendto(b"via sock=", sock.getsockname())
            await wait_until(lambda: proto.datagrams)
            assert proto.datagrams == [(b"via sock=", (HOST, tx.getsockname()[1]))]
        finally:
            tx.close()
            tr.close()
        assert await proto.lost is None
        assert sock.fileno() == -1  # the transport closed it

    run(any_loop, main())


def test_endpoint_argument_errors(any_loop):
    async def main():
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s,
            pytest.raises(ValueError, match="can not be used when sock is specified"),
        ):
            await any_loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=(HOST, 0), sock=s
            )
        with (
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s,
            pytest.raises(ValueError, match="(?i)A (UDP|datagram) socket was expected"),
        ):
            await any_loop.create_datagram_endpoint(asyncio.DatagramProtocol, sock=s)
        with pytest.raises(ValueError, match="unexpected address family"):
            await any_loop.create_datagram_endpoint(asyncio.DatagramProtocol)
        if sys.version_info >= (3, 11):  # an AssertionError before
            with pytest.raises(TypeError, match="2-tuple is expected"):
                await any_loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=HOST)

    run(any_loop, main())


def test_endpoint_with_family_only(any_loop):
    async def main():
        rx, prx = await endpoint(any_loop, local_addr=(HOST, 0))
        tx, _ = await endpoint(any_loop, family=socket.AF_INET)
        try:
            sock = tx.get_extra_info("socket")
            assert sock.family == socket.AF_INET
            assert tx.get_extra_info("sockname") == ("0.0.0.0", 0)  # not bound yet
            tx.sendto(b"unbound sender", rx.get_extra_info("sockname"))
            await wait_until(lambda: prx.datagrams)
            data, addr = prx.datagrams[0]
            assert data == b"unbound sender"
            assert addr == (HOST, sock.getsockname()[1])  # bound by the first sendto
        finally:
            tx.close()
            rx.close()

    run(any_loop, main())


@needs_ipv6
def test_udp_over_ipv6(any_loop):
    async def main():
        a, pa = await endpoint(any_loop, local_addr=("::1", 0))
        b, pb = await endpoint(any_loop, remote_addr=("::1", a.get_extra_info("sockname")[1]))
        try:
            assert a.get_extra_info("socket").family == socket.AF_INET6
            sockname = a.get_extra_info("sockname")
            assert sockname[0] == "::1" and len(sockname) == 4
            b.sendto(b"six")
            await wait_until(lambda: pa.datagrams)
            data, addr = pa.datagrams[0]
            assert data == b"six"
            assert addr == b.get_extra_info("sockname")
            assert len(addr) == 4
            a.sendto(b"back", addr)
            await wait_until(lambda: pb.datagrams)
            assert pb.datagrams[0][0] == b"back"
        finally:
            a.close()
            b.close()

    run(any_loop, main())


# --- close / abort ------------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "abort"])
def test_close_and_abort_call_connection_lost_once(any_loop, how):
    async def main():
        tr, proto = await endpoint(any_loop, local_addr=(HOST, 0))
        addr = tr.get_extra_info("sockname")
        getattr(tr, how)()
        assert tr.is_closing()
        tr.close()
        tr.abort()
        assert await proto.lost is None
        await asyncio.sleep(0.02)
        assert proto.events == ["made", "lost"]
        # the port is free again
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(addr)

    run(any_loop, main())


def test_nothing_is_received_after_close(any_loop):
    async def main():
        rx, prx = await endpoint(any_loop, local_addr=(HOST, 0))
        addr = rx.get_extra_info("sockname")
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            tx.sendto(b"queued before close", addr)
            rx.close()
            await prx.lost
            await asyncio.sleep(0.02)
            assert prx.events == ["made", "lost"]
        finally:
            tx.close()

    run(any_loop, main())


def test_sendto_after_close_on_a_connected_endpoint_is_ignored(any_loop, handler_calls):
    async def main():
        rx, prx = await endpoint(any_loop, local_addr=(HOST, 0))
        tx, ptx = await endpoint(any_loop, remote_addr=rx.get_extra_info("sockname"))
        try:
            tx.sendto(b"before")
            await wait_until(lambda: prx.datagrams)
            tx.close()
            tx.sendto(b"after close")
            await ptx.lost
            tx.sendto(b"after connection_lost")
            await asyncio.sleep(0.05)
            assert [d for d, _ in prx.datagrams] == [b"before"]
            assert ptx.errors == []
        finally:
            rx.close()

    run(any_loop, main())
    assert handler_calls == []


# --- Unix datagram sockets ----------------------------------------------------


unix_only = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs AF_UNIX")


@unix_only
def test_unix_datagram_endpoints(any_loop, tmp_path):
    a_path = str(tmp_path / "a.sock")
    b_path = str(tmp_path / "b.sock")

    async def main():
        a, pa = await endpoint(any_loop, family=socket.AF_UNIX, local_addr=a_path)
        b, pb = await endpoint(
            any_loop, family=socket.AF_UNIX, local_addr=b_path, remote_addr=a_path
        )
        try:
            for tr in (a, b):
                sock = tr.get_extra_info("socket")
                assert sock.family == socket.AF_UNIX and sock.type == socket.SOCK_DGRAM
            assert a.get_extra_info("sockname") == a_path
            assert b.get_extra_info("peername") == a_path
            b.sendto(b"over a unix datagram socket")
            await wait_until(lambda: pa.datagrams)
            assert pa.datagrams == [(b"over a unix datagram socket", b_path)]
            a.sendto(b"reply", b_path)
            await wait_until(lambda: pb.datagrams)
            assert pb.datagrams == [(b"reply", a_path)]
        finally:
            a.close()
            b.close()
        assert await pa.lost is None
        assert await pb.lost is None

    run(any_loop, main())


@unix_only
def test_unix_datagram_from_an_unbound_sender(any_loop, tmp_path):
    path = str(tmp_path / "rx.sock")

    async def main():
        rx, prx = await endpoint(any_loop, family=socket.AF_UNIX, local_addr=path)
        tx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            tx.sendto(b"anonymous", path)
            await wait_until(lambda: prx.datagrams)
            data, addr = prx.datagrams[0]
            assert data == b"anonymous"
            assert not addr  # an unnamed sender has no address
        finally:
            tx.close()
            rx.close()

    run(any_loop, main())


@unix_only
def test_unix_datagram_stale_file_and_address_checks(any_loop, tmp_path):
    path = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.close()
    assert stat.S_ISSOCK(os.stat(path).st_mode)

    async def main():
        tr, _ = await endpoint(any_loop, family=socket.AF_UNIX, local_addr=path)
        tr.close()
        with pytest.raises(TypeError, match="string is expected"):
            await endpoint(any_loop, family=socket.AF_UNIX, local_addr=(HOST, 0))

    run(any_loop, main())


# --- resources ----------------------------------------------------------------


def test_a_thousand_endpoints_leak_no_fd(any_loop, handler_calls):
    async def main():
        gc.collect()
        before = open_fd_count()
        rx, prx = await endpoint(any_loop, local_addr=(HOST, 0))
        addr = rx.get_extra_info("sockname")
        for _ in range(20):
            pairs = [await endpoint(any_loop, remote_addr=addr) for _ in range(50)]
            for tr, _ in pairs:
                tr.sendto(b"x")
            for tr, _ in pairs[::2]:
                tr.close()
            for tr, _ in pairs[1::2]:
                tr.abort()
            assert await asyncio.gather(*(p.lost for _, p in pairs)) == [None] * 50
            del pairs
        rx.close()
        await prx.lost
        await asyncio.sleep(0.01)
        gc.collect()
        return before, open_fd_count(), len(prx.datagrams)

    before, after, received = run(any_loop, main(), timeout=60)
    assert after == before
    assert received > 0
    assert handler_calls == []


def test_datagram_repr_never_fails(any_loop):
    async def main():
        tr, proto = await endpoint(any_loop, local_addr=(HOST, 0))
        reprs = [repr(tr)]
        tr.close()
        reprs.append(repr(tr))
        await proto.lost
        reprs.append(repr(tr))
        return reprs

    for r in run(any_loop, main()):
        assert isinstance(r, str) and r


# --- the receive path ---------------------------------------------------------


def test_an_empty_datagram_is_received(any_loop):
    async def main():
        rx, prx = await endpoint(any_loop, local_addr=(HOST, 0))
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            addr = rx.get_extra_info("sockname")
            tx.sendto(b"", addr)  # a zero-length datagram is not an EOF
            tx.sendto(b"after", addr)
            await wait_until(lambda: len(prx.datagrams) == 2)
            assert [d for d, _ in prx.datagrams] == [b"", b"after"]
            assert not rx.is_closing()
            assert prx.events == ["made", "datagram"]
        finally:
            tx.close()
            rx.close()

    run(any_loop, main())


def test_close_inside_datagram_received_stops_delivery(any_loop):
    class CloseOnFirst(Recorder):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            self.transport.close()

    async def main():
        rx, prx = await any_loop.create_datagram_endpoint(
            lambda: CloseOnFirst(any_loop), local_addr=(HOST, 0)
        )
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for i in range(10):  # all queued before the loop reads
                tx.sendto(b"%d" % i, rx.get_extra_info("sockname"))
            assert await prx.lost is None
            await asyncio.sleep(0.02)
            assert [d for d, _ in prx.datagrams] == [b"0"]
            assert prx.events == ["made", "datagram", "lost"]
        finally:
            tx.close()

    run(any_loop, main())


def test_set_protocol_redirects_datagrams(any_loop):
    async def main():
        rx, first = await endpoint(any_loop, local_addr=(HOST, 0))
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        second = Recorder(any_loop)
        try:
            rx.set_protocol(second)
            tx.sendto(b"for the second", rx.get_extra_info("sockname"))
            await wait_until(lambda: second.datagrams)
            assert first.datagrams == []
            assert second.datagrams[0][0] == b"for the second"
        finally:
            tx.close()
            rx.close()
        assert await second.lost is None
        assert not first.lost.done()

    run(any_loop, main())


def test_exception_in_error_received(any_loop, handler_calls):
    class Bad(Recorder):
        def error_received(self, exc):
            super().error_received(exc)
            raise ValueError("in error_received")

    port = closed_udp_port()

    async def main():
        tr, proto = await any_loop.create_datagram_endpoint(
            lambda: Bad(any_loop), remote_addr=(HOST, port)
        )
        try:
            tr.sendto(b"to nobody")
            await wait_until(lambda: handler_calls)
            # reported; the endpoint stays open and usable
            assert not tr.is_closing()
            rx, prx = await endpoint(any_loop, local_addr=(HOST, port))
            try:
                tr.sendto(b"to somebody")
                await wait_until(lambda: prx.datagrams)
                assert prx.datagrams[0][0] == b"to somebody"
            finally:
                rx.close()
            assert not proto.lost.done()
        finally:
            tr.close()

    run(any_loop, main())
    assert handler_calls
    assert all(str(c.get("exception")) == "in error_received" for c in handler_calls)


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_in_datagram_received_propagates(any_loop, exc_type):
    class Interrupting(Recorder):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            raise exc_type("from datagram_received")

    async def setup():
        return await any_loop.create_datagram_endpoint(
            lambda: Interrupting(any_loop), local_addr=(HOST, 0)
        )

    tr, _ = run(any_loop, setup())
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    never = any_loop.create_future()
    timer = any_loop.call_later(3, never.set_result, "not interrupted")
    try:
        tx.sendto(b"interrupt", tr.get_extra_info("sockname"))
        with pytest.raises(exc_type, match="from datagram_received"):
            any_loop.run_until_complete(never)
    finally:
        timer.cancel()
        tx.close()
        tr.close()
    assert run(any_loop, asyncio.sleep(0.01, "usable")) == "usable"


def test_closed_endpoints_and_protocols_are_freed(any_loop):
    refs = []

    async def main():
        rx, prx = await endpoint(any_loop, local_addr=(HOST, 0))
        addr = rx.get_extra_info("sockname")
        for i in range(50):
            tr, proto = await endpoint(any_loop, remote_addr=addr)
            refs.extend([weakref.ref(tr), weakref.ref(proto)])
            tr.sendto(b"%d" % i)
            await wait_until(lambda i=i: len(prx.datagrams) == i + 1)
            rx.sendto(b"back", tr.get_extra_info("sockname"))
            await wait_until(lambda proto=proto: proto.datagrams)
            if i % 2:
                tr.close()
            else:
                tr.abort()
            await proto.lost
        rx.close()
        await prx.lost

    run(any_loop, main())
    gc.collect()
    assert [r() for r in refs if r() is not None] == []
