"""A datagram endpoint's life after it is made, on real sockets, with stock
asyncio as the reference: error_received, exceptions in the protocol's
callbacks, close and abort, fds and memory over many endpoints, repr, and
the receive path (empty datagrams, close or set_protocol inside
datagram_received).

https://docs.python.org/3/library/asyncio-protocol.html#datagram-protocols
"""

from __future__ import annotations

import asyncio
import errno
import gc
import socket
import weakref

import pytest
from support import open_fd_count
from transport_support import (
    HOST,
    DatagramRecorder,
    closed_udp_port,
    endpoint,
    run,
    wait_until,
)

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


# --- exceptions in protocol callbacks -----------------------------------------


def test_exception_in_datagram_received(any_loop, handler_calls):
    class Bad(DatagramRecorder):
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
    class CloseOnFirst(DatagramRecorder):
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
        second = DatagramRecorder(any_loop)
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
    class Bad(DatagramRecorder):
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
    class Interrupting(DatagramRecorder):
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
