"""Datagram transports made by create_datagram_endpoint, on real sockets,
with stock asyncio as the reference: the transport's types and extra
info, sendto and datagram_received, and sendto's addresses and data
types. Endpoint options (broadcast, reuse_port, sock=, family, IPv6, Unix
datagram sockets) are in test_udp_options.py; errors, close, resources
and the receive path in test_udp_lifecycle.py.

https://docs.python.org/3/library/asyncio-protocol.html#datagram-transports
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys

import pytest
from support import make_loop
from transport_support import (
    HOST,
    DatagramRecorder,
    endpoint,
    needs_ipv6,
    run,
    wait_until,
)

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

            other = DatagramRecorder(any_loop)
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
