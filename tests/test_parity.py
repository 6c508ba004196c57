"""Behaviours that third-party suites (anyio's, websockets') and uvloop's
users rely on: differential (`any_loop`) where stock asyncio behaves the
same, ferroloop-only where ferroloop goes beyond it (as uvloop does; the
README's compatibility section lists those).
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import socket
import threading
import weakref

import pytest
from support import is_ferroloop


def test_handles_are_weak_referenceable(any_loop):
    handle = any_loop.call_soon(lambda: None)
    timer = any_loop.call_later(3600, lambda: None)
    refs = weakref.WeakValueDictionary(h=handle, t=timer)
    assert refs["h"] is handle and refs["t"] is timer
    timer.cancel()
    any_loop.run_until_complete(asyncio.sleep(0))
    del handle, timer
    gc.collect()
    assert len(refs) == 0


@pytest.mark.parametrize("schedule", ["call_soon", "call_later"])
def test_an_object_in_a_cycle_through_its_own_handle_is_collected(any_loop, schedule):
    """`self._handle = loop.call_soon(self.method)` makes a cycle (object,
    handle, bound method): the GC must see inside handles to free it, as
    with asyncio's and uvloop's. (rloop 0.5 and rsloop 0.1.66 make handles
    the GC cannot see: measured for issue #20, the object is never freed.)"""

    class Owner:
        def callback(self):
            pass

    owner = Owner()
    if schedule == "call_soon":
        owner.handle = any_loop.call_soon(owner.callback)
    else:
        owner.handle = any_loop.call_later(0, owner.callback)
    any_loop.run_until_complete(asyncio.sleep(0.01))  # it ran: the loop let go
    ref = weakref.ref(owner)
    del owner
    gc.collect()
    assert ref() is None


def test_each_handle_gets_its_own_context_copy(any_loop):
    """call_soon without context= copies the current context per handle
    (`Handle.get_context()`: asyncio's from 3.12, ferroloop's on every
    version; stock 3.10/3.11 keep it in `_context`)."""
    handles = [any_loop.call_soon(lambda: None) for _ in range(3)]
    contexts = [h.get_context() if hasattr(h, "get_context") else h._context for h in handles]
    assert all(isinstance(c, contextvars.Context) for c in contexts)
    assert len({id(c) for c in contexts}) == 3
    for h in handles:
        h.cancel()


@pytest.mark.parametrize("direction", ["reader", "writer"])
def test_remove_callback_of_a_closed_socket_object(any_loop, direction):
    """anyio closes a socket, then removes its reader by the socket object
    (fileno() is -1 by then): asyncio finds the registration by the object."""
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        getattr(any_loop, f"add_{direction}")(a, lambda: None)
        fd = a.fileno()
        a.close()
        assert getattr(any_loop, f"remove_{direction}")(a) is True
        assert fd not in any_loop._selector.get_map()
        # Once gone, the closed object is nowhere to be found.
        with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
            getattr(any_loop, f"remove_{direction}")(a)
    finally:
        a.close()
        b.close()


def test_closed_socket_found_after_the_other_direction_came_and_went(any_loop):
    """A writer added and removed by fd number leaves the reader's object
    registration intact."""
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        any_loop.add_reader(a, lambda: None)
        fd = a.fileno()
        any_loop.add_writer(fd, lambda: None)
        assert any_loop.remove_writer(fd) is True
        a.close()
        assert any_loop.remove_reader(a) is True
        assert fd not in any_loop._selector.get_map()
    finally:
        a.close()
        b.close()


def test_remove_reader_of_a_never_registered_closed_socket_raises(any_loop):
    a, b = socket.socketpair()
    a.close()
    b.close()
    with pytest.raises(ValueError, match="Invalid file"):
        any_loop.remove_reader(a)


def _nodelay(sock) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


@pytest.mark.parametrize("proto", [0, socket.IPPROTO_TCP])
def test_tcp_nodelay_on_sockets_handed_in(any_loop, proto):
    """A TCP socket made with proto 0 (socket.socket()'s default) gets
    TCP_NODELAY on ferroloop, as on uvloop; asyncio sets it only when
    sock.proto is IPPROTO_TCP."""

    async def main():
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        accepted = []

        def on_client(reader, writer):
            accepted.append(_nodelay(writer.get_extra_info("socket")))
            writer.close()  # 3.12+: wait_closed() waits for the connections

        server = await asyncio.start_server(on_client, sock=listener)
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
        client.setblocking(False)
        await any_loop.sock_connect(client, listener.getsockname())
        _reader, writer = await asyncio.open_connection(sock=client)
        while not accepted:
            await asyncio.sleep(0.01)
        result = (_nodelay(writer.get_extra_info("socket")), accepted[0])
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return result

    expected = proto == socket.IPPROTO_TCP or is_ferroloop(any_loop)
    result = any_loop.run_until_complete(asyncio.wait_for(main(), 10))
    assert result == (expected, expected)


class CountingSocket(socket.socket):
    """A socket.socket subclass that overrides its I/O methods (as
    websockets' tests do): a loop must call them, not the fd."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = {"recv": 0, "recv_into": 0, "send": 0}

    def recv(self, *args):
        self.calls["recv"] += 1
        return super().recv(*args)

    def recv_into(self, *args):
        self.calls["recv_into"] += 1
        return super().recv_into(*args)

    def send(self, *args):
        self.calls["send"] += 1
        return super().send(*args)


def _counting_pair():
    a, b = socket.socketpair()
    sub = CountingSocket(a.family, a.type, a.proto, fileno=a.detach())
    sub.setblocking(False)
    b.setblocking(False)
    return sub, b


def test_sock_methods_call_a_subclass_s_own_methods(any_loop):
    sub, peer = _counting_pair()

    async def main():
        await any_loop.sock_sendall(sub, b"ping")
        assert await any_loop.sock_recv(peer, 10) == b"ping"
        await any_loop.sock_sendall(peer, b"pong!")
        assert await any_loop.sock_recv(sub, 4) == b"pong"
        buf = bytearray(4)
        assert await any_loop.sock_recv_into(sub, buf) == 1
        assert bytes(buf[:1]) == b"!"

    try:
        any_loop.run_until_complete(main())
    finally:
        sub.close()
        peer.close()
    assert sub.calls == {"recv": 1, "recv_into": 1, "send": 1}


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_stream_transport_calls_a_subclass_s_own_methods(any_loop, tls, request):
    certs = request.getfixturevalue("certs") if tls else None

    async def echo(reader, writer):
        writer.write(await reader.readexactly(4))
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(
            echo, "127.0.0.1", 0, ssl=certs.server_context() if tls else None
        )
        sub = CountingSocket(socket.AF_INET, socket.SOCK_STREAM)
        sub.setblocking(False)
        async with server:
            await any_loop.sock_connect(sub, server.sockets[0].getsockname())
            reader, writer = await asyncio.open_connection(
                sock=sub,
                ssl=certs.client_context() if tls else None,
                server_hostname="localhost" if tls else None,
            )
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            writer.close()
            await writer.wait_closed()
        return sub.calls

    calls = any_loop.run_until_complete(main())
    assert calls["send"] >= 1
    assert calls["recv"] + calls["recv_into"] >= 1


@pytest.mark.parametrize("connected", [False, True], ids=["unconnected", "connected"])
def test_datagram_sendto_after_close_is_dropped(loop, connected, caplog):
    """Once a closed transport's connection is lost, sendto() drops the
    datagram (warning after asyncio's threshold), connected or not; stock
    asyncio fails an unconnected one through a loop that is gone
    (`AttributeError` in its exception path)."""
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    async def main():
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol,
            local_addr=("127.0.0.1", 0),
            remote_addr=peer.getsockname() if connected else None,
        )
        addr = None if connected else peer.getsockname()
        transport.close()
        await asyncio.sleep(0.05)
        for _ in range(8):
            transport.sendto(b"later", addr)
        with pytest.raises(BlockingIOError):
            peer.recv(100)
        peer.close()

    loop.run_until_complete(main())
    assert errors == []
    assert "socket.send() raised exception." in caplog.text


@pytest.mark.parametrize("family", ["unix", "tcp"])
def test_buffered_protocol_gets_all_data_when_the_peer_sends_and_closes(any_loop, family, tmp_path):
    """A peer sends more than the BufferedProtocol's buffer and closes at
    once (EPOLLHUP with data pending): all of it arrives, then EOF."""
    payload = bytes(range(256)) * 4096  # 1 MiB
    got = bytearray()
    events = []
    done = any_loop.create_future()

    class Small(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(1000)

        def get_buffer(self, sizehint):
            return self.buf

        def buffer_updated(self, nbytes):
            got.extend(self.buf[:nbytes])

        def eof_received(self):
            events.append("eof")

        def connection_lost(self, exc):
            events.append("lost")
            if not done.done():
                done.set_result(None)

    async def main():
        if family == "unix":
            path = str(tmp_path / "s")
            server = await any_loop.create_unix_server(Small, path)
            peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            peer.connect(path)
        else:
            server = await any_loop.create_server(Small, "127.0.0.1", 0)
            peer = socket.create_connection(server.sockets[0].getsockname())
        peer.setblocking(True)
        # More than the socket buffers hold: sent from a thread, which
        # closes as soon as the last byte is queued.
        sender = threading.Thread(target=lambda: (peer.sendall(payload), peer.close()))
        sender.start()
        await asyncio.wait_for(done, 10)
        sender.join(10)
        server.close()
        await server.wait_closed()

    any_loop.run_until_complete(main())
    assert len(got) == len(payload) and bytes(got) == payload
    assert events == ["eof", "lost"]


def test_cancelled_sock_recv_into_lets_go_of_the_buffer(any_loop):
    """A cancelled sock_recv_into holds no export of the caller's buffer:
    the caller's own memoryview can be released while the cancellation
    unwinds (anyio does so)."""
    a, b = socket.socketpair()
    a.setblocking(False)
    buf = bytearray(16)

    async def reader():
        with memoryview(buf) as view:
            await any_loop.sock_recv_into(a, view)

    async def main():
        task = any_loop.create_task(reader())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        buf.extend(b"resizable again")

    try:
        any_loop.run_until_complete(main())
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("operation", ["sock_recv", "sock_recv_into", "sock_accept"])
def test_closing_a_socket_under_a_pending_sock_call(any_loop, operation):
    """Closing a socket while a sock_* call waits on it: Linux reports
    nothing for a closed fd, so the call stays pending, as on stock asyncio
    (and uvloop 0.23: measured for issue #19); cancelling it then ends it
    cleanly, and the loop goes on serving other sockets."""
    if operation == "sock_accept":
        sock = socket.create_server(("127.0.0.1", 0))
        peer = None
    else:
        sock, peer = socket.socketpair()
    sock.setblocking(False)
    call = {
        "sock_recv": lambda: any_loop.sock_recv(sock, 16),
        "sock_recv_into": lambda: any_loop.sock_recv_into(sock, bytearray(16)),
        "sock_accept": lambda: any_loop.sock_accept(sock),
    }[operation]

    async def main():
        task = any_loop.create_task(call())
        await asyncio.sleep(0.01)
        sock.close()
        done, _ = await asyncio.wait([task], timeout=0.1)
        assert not done  # still pending: the kernel said nothing
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        a, b = socket.socketpair()
        with a, b:
            a.setblocking(False)
            b.send(b"still serving")
            assert await any_loop.sock_recv(a, 64) == b"still serving"

    try:
        any_loop.run_until_complete(main())
    finally:
        sock.close()
        if peer is not None:
            peer.close()
