"""create_datagram_endpoint's options on real sockets, with stock asyncio
as the reference: allow_broadcast, reuse_port, sock=, family, UDP over
IPv6, and Unix datagram sockets (paths, unbound senders, stale files).

https://docs.python.org/3/library/asyncio-eventloop.html#opening-network-connections
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import stat
import sys

import pytest
from transport_support import (
    HOST,
    DatagramRecorder,
    endpoint,
    needs_ipv6,
    run,
    wait_until,
)

# --- broadcast ----------------------------------------------------------------


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
        tr, proto = await any_loop.create_datagram_endpoint(
            lambda: DatagramRecorder(any_loop), sock=sock
        )
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
