"""What a transport may keep of the data and objects it is given, on the
socket, pipe and datagram transports, with stock asyncio as the reference.

The native transports reference `bytes` they buffer instead of copying them,
hold their Python transport from a core object, and take the write-buffer
marks into Rust integers; these tests pin the cases where that could differ
from asyncio: `bytes` subclasses (whose `__del__` runs Python code, or whose
`__buffer__` exports other bytes), a protocol keeping only `transport.write`,
a closed transport's lifetime, and marks that are floats or huge.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import pty
import socket
import sys
import warnings
import weakref

import pytest
from transport_support import HOST, run, wait_until

MB = 1 << 20


class CallsBackOnDel(bytes):
    """A bytes whose __del__ writes to a transport (set on the class)."""

    transport = None

    def __del__(self):
        transport = type(self).transport
        if transport is not None and not transport.is_closing():
            transport.write(b"tail")


async def read_all(loop, fd, n):
    got = bytearray()
    while len(got) < n:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            await asyncio.sleep(0.001)
            continue
        if not chunk:
            break
        got += chunk
    return bytes(got)


def test_bytes_subclass_freed_while_draining_a_pipe(any_loop):
    """Its __del__ writes to the same transport: no deadlock, no data lost."""

    async def main():
        r, w = os.pipe()
        os.set_blocking(r, False)
        try:
            tr, _ = await any_loop.connect_write_pipe(asyncio.Protocol, os.fdopen(w, "wb", 0))
            CallsBackOnDel.transport = tr
            tr.write(b"x" * MB)  # fills the pipe: what follows is buffered
            tr.write(CallsBackOnDel(b"y" * 8192))
            got = await read_all(any_loop, r, MB + 8192 + 4)
            tr.close()
            return got
        finally:
            CallsBackOnDel.transport = None
            os.close(r)

    got = run(any_loop, main())
    assert got == b"x" * MB + b"y" * 8192 + b"tail"


def test_bytes_subclass_freed_while_draining_a_socket(any_loop):
    async def main():
        a, b = socket.socketpair()
        b.setblocking(False)
        try:
            tr, _ = await any_loop.connect_accepted_socket(asyncio.Protocol, a)
            CallsBackOnDel.transport = tr
            tr.write(b"x" * (8 * MB))
            tr.writelines([CallsBackOnDel(b"y" * 8192)])
            got = bytearray()
            while len(got) < 8 * MB + 8192 + 4:
                got += await any_loop.sock_recv(b, 1 << 16)
            tr.close()
            return bytes(got)
        finally:
            CallsBackOnDel.transport = None
            b.close()

    got = run(any_loop, main(), timeout=20)
    assert got == b"x" * (8 * MB) + b"y" * 8192 + b"tail"


@pytest.mark.skipif(sys.version_info < (3, 12), reason="__buffer__ is 3.12+ (PEP 688)")
@pytest.mark.parametrize("kind", ["socket", "pipe"])
def test_bytes_subclass_exporting_other_bytes(any_loop, kind):
    """What is sent is what the buffer protocol exports, as asyncio's
    send/os.write read it."""

    class Exports(bytes):
        def __buffer__(self, flags):
            return memoryview(b"B" * 10_000)

    async def main():
        if kind == "socket":
            a, rd = socket.socketpair()
            tr, _ = await any_loop.connect_accepted_socket(asyncio.Protocol, a)
            rfd = rd.fileno()
        else:
            rfd, w = os.pipe()
            tr, _ = await any_loop.connect_write_pipe(asyncio.Protocol, os.fdopen(w, "wb", 0))
        os.set_blocking(rfd, False)
        try:
            tr.writelines([b"a" * 100, Exports(b"e" * 8000)])
            tr.write(Exports(b"e" * 8000))
            got = await read_all(any_loop, rfd, 100 + 20_000)
            tr.close()
            await asyncio.sleep(0)
            return got
        finally:
            os.close(rfd) if kind == "pipe" else rd.close()

    assert run(any_loop, main()) == b"a" * 100 + b"B" * 20_000


def test_a_kept_write_method_never_writes_to_a_reused_fd(any_loop, tmp_path):
    """A protocol keeping only `transport.write` of a pty write pipe (not
    watched for a closed peer): the transport may be freed; what is written
    after that must not land in whatever file got its fd number."""

    async def main():
        master, slave = pty.openpty()
        os.set_blocking(master, False)
        tr, _ = await any_loop.connect_write_pipe(asyncio.Protocol, os.fdopen(slave, "wb", 0))
        write = tr.write
        write(b"hello")
        assert await read_all(any_loop, master, 5) == b"hello"
        ref = weakref.ref(tr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)  # dropped open, on purpose
            del tr
            gc.collect()
        victim = tmp_path / "victim"
        fd = os.open(victim, os.O_WRONLY | os.O_CREAT)  # likely the freed fd number
        try:
            with contextlib.suppress(Exception):  # only the file's content matters
                write(b"SECRET")
            await asyncio.sleep(0.01)
        finally:
            os.close(fd)
        if ref() is not None:
            ref().close()
        os.close(master)
        return victim.read_bytes()

    assert run(any_loop, main()) == b""


@pytest.mark.parametrize("kind", ["socket", "pipe"])
@pytest.mark.parametrize(
    "args",
    [(65536.0,), (1 << 70,), (-5,), (None, 100.5), (10, 20), (2.5, 2.5), ("64", "16")],
    ids=repr,
)
def test_write_buffer_limits_as_asyncio_takes_them(kind, args):
    """Any real numbers, the same ValueError, and the marks given back."""
    from support import make_loop

    def outcome(loop_kind):
        loop = make_loop(loop_kind)

        async def main():
            if kind == "socket":
                a, b = socket.socketpair()
                tr, _ = await loop.connect_accepted_socket(asyncio.Protocol, a)
                keep = b
            else:
                r, w = os.pipe()
                tr, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(w, "wb", 0))
                keep = os.fdopen(r, "rb")
            try:
                try:
                    tr.set_write_buffer_limits(*args)
                except Exception as exc:  # noqa: BLE001 - compared
                    return type(exc).__name__, str(exc)
                return "ok", tr.get_write_buffer_limits()
            finally:
                tr.close()
                await asyncio.sleep(0)
                keep.close()

        try:
            return run(loop, main())
        finally:
            loop.close()

    assert outcome("ferroloop") == outcome("asyncio")


def test_a_float_high_mark_pauses_as_its_floor(any_loop):
    """pause_writing when the buffer goes above a float mark."""

    class Flow(asyncio.Protocol):
        paused = 0

        def pause_writing(self):
            self.paused += 1

    async def main():
        a, b = socket.socketpair()
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        try:
            tr, proto = await any_loop.connect_accepted_socket(Flow, a)
            tr.write(b"x" * MB)  # the kernel takes part; the rest is buffered
            size = tr.get_write_buffer_size()
            assert size > 1000
            tr.set_write_buffer_limits(high=size - 0.5)  # size > high: pause
            paused_above = proto.paused
            tr.abort()
            return paused_above
        finally:
            b.close()

    assert run(any_loop, main()) == 1


def test_a_closed_datagram_transport_is_freed_without_the_cyclic_gc(any_loop):
    async def main():
        tr, _ = await any_loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=(HOST, 0)
        )
        tr.sendto(b"x", tr.get_extra_info("sockname"))
        ref = weakref.ref(tr)
        tr.close()
        del tr
        for _ in range(3):
            await asyncio.sleep(0)
        return ref

    gc.disable()
    try:
        ref = run(any_loop, main())
        assert ref() is None
    finally:
        gc.enable()


def _dual_stack_available():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind(("::", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _dual_stack_available(), reason="no dual-stack IPv6")
def test_ipv4_mapped_sender_address_is_written_as_python_does(any_loop):
    async def main():
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", 0))
        received = []

        class Rx(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                received.append(addr)

        tr, _ = await any_loop.create_datagram_endpoint(Rx, sock=sock)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.bind((HOST, 0))
            tx.sendto(b"four", (HOST, sock.getsockname()[1]))
            await wait_until(lambda: received)
            port = tx.getsockname()[1]
        tr.close()
        return received[0], port

    addr, port = run(any_loop, main())
    assert addr == ("::ffff:127.0.0.1", port, 0, 0)
