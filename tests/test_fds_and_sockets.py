"""fd readiness callbacks (add_reader & co) and the sock_* coroutines on
real sockets, plus fd hygiene: nothing leaks into the process's fd table."""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import socket
import sys
import tempfile
import warnings
import weakref

import pytest
from support import (
    make_loop,
    open_fd_count,
    registered_fds,
    run_forever_with_watchdog,
)

needs_311 = pytest.mark.skipif(sys.version_info < (3, 11), reason="3.11+ API")


@pytest.fixture
def pipe():
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    try:
        yield r, w
    finally:
        for fd in (r, w):
            try:
                os.close(fd)
            except OSError:
                pass


# --- add_reader / add_writer --------------------------------------------------


def test_reader_on_a_socketpair(any_loop, sockpair):
    a, b = sockpair
    got = []

    def on_readable():
        got.append(a.recv(100))
        any_loop.stop()

    assert any_loop.add_reader(a, on_readable) is None
    assert a.fileno() in registered_fds(any_loop)
    b.send(b"ping")
    run_forever_with_watchdog(any_loop)
    assert got == [b"ping"]
    assert any_loop.remove_reader(a) is True
    assert any_loop.remove_reader(a) is False
    assert a.fileno() not in registered_fds(any_loop)


def test_writer_on_a_socketpair(any_loop, sockpair):
    a, _ = sockpair
    calls = []

    def on_writable(tag):
        calls.append(tag)
        any_loop.stop()

    assert any_loop.add_writer(a.fileno(), on_writable, "w") is None
    run_forever_with_watchdog(any_loop)
    assert calls == ["w"]
    assert any_loop.remove_writer(a.fileno()) is True
    assert any_loop.remove_writer(a.fileno()) is False


def test_remove_on_never_registered_fds(any_loop, sockpair):
    a, _ = sockpair
    assert any_loop.remove_reader(a) is False
    assert any_loop.remove_writer(a) is False
    assert any_loop.remove_reader(a.fileno()) is False


def test_reader_and_writer_on_the_same_fd_are_independent(any_loop, sockpair):
    a, b = sockpair
    events = []

    def on_readable():
        events.append(("r", a.recv(10)))
        any_loop.stop()

    def on_writable():
        events.append("w")
        any_loop.remove_writer(a)
        b.send(b"data")

    any_loop.add_reader(a, on_readable)
    any_loop.add_writer(a, on_writable)
    run_forever_with_watchdog(any_loop)
    assert events == ["w", ("r", b"data")]
    assert any_loop.remove_writer(a) is False
    assert any_loop.remove_reader(a) is True


def test_add_reader_replaces_the_previous_reader(any_loop, sockpair):
    a, b = sockpair
    calls = []

    def first():
        calls.append("first")

    def second():
        calls.append(("second", a.recv(10)))
        any_loop.stop()

    any_loop.add_reader(a, first)
    any_loop.add_reader(a, second)
    b.send(b"x")
    run_forever_with_watchdog(any_loop)
    assert calls == [("second", b"x")]
    assert any_loop.remove_reader(a) is True


def test_reader_is_level_triggered(any_loop, sockpair):
    """A reader that does not drain the fd is called again, every iteration."""
    a, b = sockpair
    calls = []

    def on_readable():
        calls.append(any_loop.time())
        if len(calls) == 5:
            any_loop.stop()

    any_loop.add_reader(a, on_readable)
    b.send(b"x")  # never read
    run_forever_with_watchdog(any_loop)
    assert len(calls) == 5
    assert any_loop.remove_reader(a)
    # Still pending in the socket: level, not edge.
    assert a.recv(10) == b"x"


def test_reader_is_not_called_without_data(any_loop, sockpair):
    a, _ = sockpair
    calls = []
    any_loop.add_reader(a, calls.append, "called")
    any_loop.call_later(0.05, any_loop.stop)
    run_forever_with_watchdog(any_loop)
    assert calls == []
    any_loop.remove_reader(a)


def test_removed_reader_in_the_same_iteration_is_not_called(any_loop, sockpair):
    a, b = sockpair
    calls = []

    # Both fds become ready in one poll; the first callback removes the other.
    c, d = socket.socketpair()
    try:

        def first():
            calls.append("first")
            any_loop.remove_reader(c)
            a.recv(10)
            any_loop.call_later(0.02, any_loop.stop)

        any_loop.add_reader(a, first)
        any_loop.add_reader(c, lambda: calls.append("second"))
        b.send(b"x")
        d.send(b"y")
        run_forever_with_watchdog(any_loop)
        any_loop.remove_reader(a)
    finally:
        c.close()
        d.close()
    assert calls.count("first") == 1
    # Either "second" ran before being removed, or it never ran.
    assert calls in (["first"], ["second", "first"])


def test_reader_replaced_from_inside_its_own_callback(any_loop, sockpair):
    a, b = sockpair
    calls = []

    def second():
        calls.append(("second", a.recv(10)))
        any_loop.stop()

    def first():
        calls.append(("first", a.recv(10)))
        assert any_loop.remove_reader(a) is True
        any_loop.add_reader(a, second)
        b.send(b"2")

    any_loop.add_reader(a, first)
    b.send(b"1")
    run_forever_with_watchdog(any_loop)
    assert calls == [("first", b"1"), ("second", b"2")]
    assert any_loop.remove_reader(a) is True


def test_ferroloop_survives_an_fd_number_reused_without_remove_reader(loop):
    """A registered fd closed without remove_reader, its number reused by a
    new socket: ferroloop re-registers it (stock asyncio's selector keeps
    a stale key and never reports the new socket)."""
    a, b = socket.socketpair()
    fd = a.fileno()
    loop.add_reader(fd, int)
    a.close()
    b.close()
    c, d = socket.socketpair()
    try:
        new, other = (c, d) if c.fileno() == fd else (d, c)
        assert new.fileno() == fd, "the fd number was not reused"
        got = []
        loop.add_reader(new, lambda: (got.append(new.recv(10)), loop.stop()))
        other.send(b"fresh")
        run_forever_with_watchdog(loop)
        assert got == [b"fresh"]
        assert loop.remove_reader(new) is True
    finally:
        c.close()
        d.close()


def test_io_that_arrives_during_a_busy_loop_is_seen_within_two_iterations(any_loop):
    """A busy loop (call_soon chain) still polls: data that becomes readable
    while it spins reaches its reader within two iterations. (asyncio polls
    every iteration; ferroloop skips the zero-timeout poll right after one
    that found I/O, so its bound is one iteration longer.)"""
    loop = any_loop
    pairs = [socket.socketpair() for _ in range(2)]
    for a, b in pairs:
        a.setblocking(False)
        b.setblocking(False)
    (first, first_peer), (second, second_peer) = pairs
    tick = 0
    seen = {}

    def spin():
        nonlocal tick
        tick += 1
        if tick > 50:
            loop.stop()
        else:
            loop.call_soon(spin)

    def on_first():
        seen["first"] = tick
        loop.remove_reader(first)
        first.recv(10)
        second_peer.send(b"y")  # readable from the next iteration's poll on

    def on_second():
        seen["second"] = tick
        loop.remove_reader(second)
        loop.stop()

    try:
        loop.add_reader(first, on_first)
        loop.add_reader(second, on_second)
        loop.call_soon(spin)
        first_peer.send(b"x")
        run_forever_with_watchdog(loop)
        assert "second" in seen, seen
        assert 1 <= seen["second"] - seen["first"] <= 2, seen
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_reader_and_writer_on_a_pipe(any_loop, pipe):
    r, w = pipe
    got = []

    def on_writable():
        os.write(w, b"through the pipe")
        assert any_loop.remove_writer(w) is True

    def on_readable():
        got.append(os.read(r, 100))
        any_loop.stop()

    any_loop.add_reader(r, on_readable)
    any_loop.add_writer(w, on_writable)
    run_forever_with_watchdog(any_loop)
    assert got == [b"through the pipe"]
    assert any_loop.remove_reader(r) is True
    assert registered_fds(any_loop).isdisjoint({r, w})


def test_reader_sees_eof_when_the_writer_closes(any_loop, pipe):
    r, w = pipe
    got = []

    def on_readable():
        got.append(os.read(r, 100))
        any_loop.remove_reader(r)
        any_loop.stop()

    any_loop.add_reader(r, on_readable)
    os.close(w)
    run_forever_with_watchdog(any_loop)
    assert got == [b""]


def test_add_reader_on_a_regular_file_is_refused(any_loop):
    with tempfile.TemporaryFile() as f:
        with pytest.raises(PermissionError):
            any_loop.add_reader(f.fileno(), int)
        with pytest.raises(PermissionError):
            any_loop.add_writer(f, int)
        assert any_loop.remove_reader(f) is False
        assert any_loop.remove_writer(f) is False


def test_a_refused_fd_is_not_left_registered(any_loop, request):
    before = registered_fds(any_loop)
    with tempfile.TemporaryFile() as f:
        with pytest.raises(PermissionError):
            any_loop.add_reader(f.fileno(), int)
        assert registered_fds(any_loop) == before
        with pytest.raises(KeyError):
            any_loop._selector.get_key(f.fileno())


@pytest.mark.parametrize("bad", [-1, "not a file", 1.5])
def test_add_reader_with_an_invalid_fd(any_loop, bad):
    with pytest.raises((ValueError, TypeError)):
        any_loop.add_reader(bad, int)


def test_remove_reader_of_an_fd_closed_meanwhile(any_loop):
    a, b = socket.socketpair()
    fd = a.fileno()
    any_loop.add_reader(fd, int)
    a.close()
    b.close()
    assert any_loop.remove_reader(fd) is True
    # And the loop keeps working.
    assert any_loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"


def test_add_reader_refuses_an_fd_owned_by_a_transport(any_loop):
    async def main():
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        sock = writer.get_extra_info("socket")
        try:
            with pytest.raises(RuntimeError, match="is used by transport"):
                any_loop.add_reader(sock.fileno(), int)
        finally:
            writer.close()
            server.close()
            await server.wait_closed()

    any_loop.run_until_complete(main())


def test_closed_loop_add_and_remove(any_loop, sockpair):
    a, _ = sockpair
    any_loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        any_loop.add_reader(a, int)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        any_loop.add_writer(a, int)
    assert any_loop.remove_reader(a) is False
    assert any_loop.remove_writer(a) is False


# --- sock_* on 127.0.0.1 ------------------------------------------------------


async def _tcp_pair(loop, host="127.0.0.1"):
    """A connected (client, server-side) pair of non-blocking TCP sockets."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setblocking(False)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setblocking(False)
    try:
        (conn, peer), none = await asyncio.gather(
            loop.sock_accept(listener), loop.sock_connect(client, (host, port))
        )
    finally:
        listener.close()
    assert none is None
    assert peer == client.getsockname()
    assert conn.gettimeout() == 0  # accepted sockets are non-blocking
    return client, conn


def test_sock_connect_accept_sendall_recv(any_loop):
    async def main():
        client, conn = await _tcp_pair(any_loop)
        with client, conn:
            await any_loop.sock_sendall(client, b"hello")
            assert await any_loop.sock_recv(conn, 100) == b"hello"
            await any_loop.sock_sendall(conn, b"world")
            buf = bytearray(100)
            n = await any_loop.sock_recv_into(client, buf)
            assert bytes(buf[:n]) == b"world"
            client.shutdown(socket.SHUT_WR)
            assert await any_loop.sock_recv(conn, 100) == b""

    any_loop.run_until_complete(asyncio.wait_for(main(), 10))


def test_sock_sendall_larger_than_the_socket_buffers(any_loop):
    payload = os.urandom(8 * 1024 * 1024)

    async def reader(conn):
        chunks, total = [], 0
        while total < len(payload):
            chunk = await any_loop.sock_recv(conn, 256 * 1024)
            assert chunk
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)

    async def main():
        client, conn = await _tcp_pair(any_loop)
        with client, conn:
            _, received = await asyncio.gather(any_loop.sock_sendall(client, payload), reader(conn))
        return received

    assert any_loop.run_until_complete(asyncio.wait_for(main(), 20)) == payload


def test_sock_connect_with_a_hostname(any_loop):
    async def main():
        client, conn = await _tcp_pair(any_loop, host="localhost")
        with client, conn:
            assert client.getpeername()[0] == "127.0.0.1"
            await any_loop.sock_sendall(conn, b"via localhost")
            return await any_loop.sock_recv(client, 100)

    assert any_loop.run_until_complete(asyncio.wait_for(main(), 10)) == b"via localhost"


def test_sock_connect_refused(any_loop):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now

    async def main():
        with socket.socket() as s:
            s.setblocking(False)
            with pytest.raises(ConnectionRefusedError):
                await any_loop.sock_connect(s, ("127.0.0.1", port))

    any_loop.run_until_complete(asyncio.wait_for(main(), 10))


def test_sock_recv_cancelled_leaves_no_reader(any_loop, sockpair):
    a, _ = sockpair

    async def main():
        task = any_loop.create_task(any_loop.sock_recv(a, 10))
        await asyncio.sleep(0.01)
        assert a.fileno() in registered_fds(any_loop)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)

    any_loop.run_until_complete(main())
    assert a.fileno() not in registered_fds(any_loop)


@needs_311
def test_sock_sendto_recvfrom_udp(any_loop):
    async def main():
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
        ):
            rx.setblocking(False)
            tx.setblocking(False)
            rx.bind(("127.0.0.1", 0))
            tx.bind(("127.0.0.1", 0))
            recv = any_loop.create_task(any_loop.sock_recvfrom(rx, 100))
            await asyncio.sleep(0.01)  # the receiver waits in the poller
            assert await any_loop.sock_sendto(tx, b"datagram", rx.getsockname()) == 8
            data, addr = await recv
            assert (data, addr) == (b"datagram", tx.getsockname())
            await any_loop.sock_sendto(tx, b"again", rx.getsockname())
            buf = bytearray(100)
            n, addr = await any_loop.sock_recvfrom_into(rx, buf)
            assert (bytes(buf[:n]), addr) == (b"again", tx.getsockname())

    any_loop.run_until_complete(asyncio.wait_for(main(), 10))


@needs_311
def test_sock_recvfrom_into_accepts_nbytes_keyword(any_loop, request):

    async def main():
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
        ):
            rx.setblocking(False)
            rx.bind(("127.0.0.1", 0))
            tx.sendto(b"0123456789", rx.getsockname())
            buf = bytearray(100)
            n, _ = await any_loop.sock_recvfrom_into(rx, buf, nbytes=4)
            return bytes(buf[:n])

    assert any_loop.run_until_complete(asyncio.wait_for(main(), 10)) == b"0123"


def test_sock_methods_accept_keyword_arguments(any_loop, request, sockpair):
    a, b = sockpair

    async def main():
        await any_loop.sock_sendall(sock=a, data=b"kw")
        return await any_loop.sock_recv(sock=b, n=10)

    assert any_loop.run_until_complete(asyncio.wait_for(main(), 10)) == b"kw"


SOCK_METHODS = ["sock_recv", "sock_recv_into", "sock_sendall", "sock_connect", "sock_accept"]
if sys.version_info >= (3, 11):
    SOCK_METHODS += ["sock_recvfrom", "sock_recvfrom_into", "sock_sendto"]


def test_sock_methods_are_coroutine_functions_with_asyncios_signature(any_loop, request):
    wrong = []
    for method in SOCK_METHODS:
        bound = getattr(any_loop, method)
        reference = getattr(asyncio.SelectorEventLoop, method).__get__(any_loop)
        if not inspect.iscoroutinefunction(bound):
            wrong.append(f"{method} is not a coroutine function")
        if inspect.signature(bound) != inspect.signature(reference):
            wrong.append(f"{method}{inspect.signature(bound)} != {inspect.signature(reference)}")
    assert wrong == []


def _blocking_calls(loop, sock):
    return {
        "sock_recv": lambda: loop.sock_recv(sock, 10),
        "sock_recv_into": lambda: loop.sock_recv_into(sock, bytearray(10)),
        "sock_sendall": lambda: loop.sock_sendall(sock, b"x"),
        "sock_connect": lambda: loop.sock_connect(sock, ("127.0.0.1", 1)),
        "sock_accept": lambda: loop.sock_accept(sock),
    }


@pytest.mark.parametrize(
    "method", ["sock_recv", "sock_recv_into", "sock_sendall", "sock_connect", "sock_accept"]
)
def test_blocking_socket_is_refused_in_debug_mode(any_loop, method):
    """asyncio refuses a blocking socket in debug mode; both loops agree."""
    any_loop.set_debug(True)
    with socket.socket() as sock:
        assert sock.gettimeout() is None
        coro = _blocking_calls(any_loop, sock)[method]()
        with pytest.raises(ValueError, match="the socket must be non-blocking"):
            any_loop.run_until_complete(coro)


@pytest.mark.parametrize(
    "method", ["sock_recv", "sock_recv_into", "sock_sendall", "sock_connect", "sock_accept"]
)
def test_ferroloop_refuses_a_blocking_socket_in_any_mode(loop, method):
    """ferroloop refuses it without debug mode too (it would block the loop)."""
    assert not loop.get_debug()
    with socket.socket() as sock:
        sock.settimeout(5.0)  # a timeout socket is blocking as well
        coro = _blocking_calls(loop, sock)[method]()
        with pytest.raises(ValueError, match="the socket must be non-blocking"):
            loop.run_until_complete(coro)


def test_sock_sendfile(any_loop, tmp_path):
    payload = os.urandom(3 * 1024 * 1024 + 17)
    path = tmp_path / "payload.bin"
    path.write_bytes(payload)

    async def reader(conn, size):
        chunks, total = [], 0
        while total < size:
            chunk = await any_loop.sock_recv(conn, 256 * 1024)
            assert chunk
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)

    async def main(f):
        client, conn = await _tcp_pair(any_loop)
        with client, conn:
            sent, received = await asyncio.gather(
                any_loop.sock_sendfile(client, f), reader(conn, len(payload))
            )
            assert f.tell() == len(payload)
            sent2, received2 = await asyncio.gather(
                any_loop.sock_sendfile(client, f, offset=10, count=100), reader(conn, 100)
            )
        return sent, received, sent2, received2

    with open(path, "rb") as f:
        sent, received, sent2, received2 = any_loop.run_until_complete(
            asyncio.wait_for(main(f), 20)
        )
    assert sent == len(payload)
    assert received == payload
    assert (sent2, received2) == (100, payload[10:110])


def test_sock_sendfile_refuses_a_blocking_socket_in_debug_mode(any_loop, tmp_path):
    any_loop.set_debug(True)
    path = tmp_path / "f"
    path.write_bytes(b"x")
    with (
        socket.socket() as sock,
        open(path, "rb") as f,
        pytest.raises(ValueError, match="the socket must be non-blocking"),
    ):
        any_loop.run_until_complete(any_loop.sock_sendfile(sock, f))


def test_getaddrinfo_and_getnameinfo(any_loop):
    async def main():
        infos = await any_loop.getaddrinfo(
            "127.0.0.1", 8080, family=socket.AF_INET, type=socket.SOCK_STREAM
        )
        names = await any_loop.getnameinfo(
            ("127.0.0.1", 8080), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
        )
        local = await any_loop.getaddrinfo("localhost", None, family=socket.AF_INET)
        return infos, names, local

    infos, names, local = any_loop.run_until_complete(asyncio.wait_for(main(), 10))
    assert (socket.AF_INET, socket.SOCK_STREAM) == infos[0][:2]
    assert infos[0][4] == ("127.0.0.1", 8080)
    assert names == ("127.0.0.1", "8080")
    assert any(info[4][0] == "127.0.0.1" for info in local)


def test_getaddrinfo_error(any_loop):
    async def main():
        await any_loop.getaddrinfo("no-such-host.invalid", 80)

    with pytest.raises(socket.gaierror):
        any_loop.run_until_complete(asyncio.wait_for(main(), 20))


# --- fd hygiene ---------------------------------------------------------------


def test_many_socketpairs_registered_and_removed_leave_no_fd(any_loop):
    """1000 socketpairs, in batches of 100 (all registered at once), each
    reader fired once and removed: no registration and no fd survives."""
    baseline_registered = registered_fds(any_loop)
    before = open_fd_count()
    fired = []

    def on_readable(sock, pending):
        sock.recv(10)
        assert any_loop.remove_reader(sock) is True
        pending.discard(sock)
        fired.append(sock.fileno())
        if not pending:
            any_loop.stop()

    for _batch in range(10):
        pairs = [socket.socketpair() for _ in range(100)]
        pending = set()
        for a, b in pairs:
            a.setblocking(False)
            any_loop.add_reader(a, on_readable, a, pending)
            any_loop.add_writer(b, int)
            pending.add(a)
        assert registered_fds(any_loop) >= {s.fileno() for pair in pairs for s in pair}
        for _, b in pairs:
            assert any_loop.remove_writer(b) is True
            b.send(b"x")
        run_forever_with_watchdog(any_loop)
        for a, b in pairs:
            a.close()
            b.close()
    assert len(fired) == 1000
    assert registered_fds(any_loop) == baseline_registered
    assert open_fd_count() == before


def test_close_releases_the_loops_own_fds(loop_kind):
    before = open_fd_count()
    loop = make_loop(loop_kind)
    assert open_fd_count() > before  # the poller (and self-pipe) are real fds
    loop.run_until_complete(asyncio.sleep(0.001))
    loop.close()
    assert open_fd_count() == before


def test_creating_and_closing_many_loops_leaks_no_fd(loop_kind):
    before = open_fd_count()
    for _ in range(200):
        loop = make_loop(loop_kind)
        loop.call_soon(loop.stop)
        loop.run_forever()
        loop.close()
    assert open_fd_count() == before


@pytest.mark.parametrize("pending", [False, True], ids=["idle", "with-pending-callbacks"])
def test_unclosed_loop_is_collected_and_releases_its_fds(loop_kind, pending):
    """An unreferenced, unclosed loop warns and is closed by the GC, also
    with callbacks, timers and readers that refer back to it."""
    before = open_fd_count()
    loop = make_loop(loop_kind)
    ref = weakref.ref(loop)
    a, b = socket.socketpair()
    try:
        loop.run_until_complete(asyncio.sleep(0))
        if pending:
            # Left pending: each holds a bound method of the loop.
            loop.call_soon(loop.time)
            loop.call_later(3600, loop.time)
            loop.add_reader(a, loop.time)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            del loop
            gc.collect()
        assert any("unclosed event loop" in str(w.message) for w in caught)
        # A recorded warning keeps its `source` (the loop) alive on 3.15.
        del caught
        gc.collect()
        assert ref() is None, "the loop was not garbage-collected"

    finally:
        a.close()
        b.close()
    assert open_fd_count() == before


def test_close_releases_queued_callbacks_and_readers(any_loop, sockpair):
    """close() drops what the loop held: callbacks, timers and readers (and
    what they refer to) are freed without waiting for the loop's own end."""
    a, _ = sockpair

    class Payload:
        pass

    payloads = [Payload() for _ in range(4)]
    refs = [weakref.ref(p) for p in payloads]
    any_loop.call_soon(print, payloads[0])
    any_loop.call_later(3600, print, payloads[1])
    any_loop.add_reader(a, print, payloads[2])
    any_loop.add_writer(a, print, payloads[3])
    del payloads
    assert all(r() is not None for r in refs)
    any_loop.close()
    gc.collect()
    assert [r() for r in refs] == [None] * 4


def test_io_is_seen_on_the_next_iteration_while_tasks_keep_yielding(any_loop, sockpair):
    """asyncio polls on every iteration: data already waiting on a watched
    socket is delivered after one `sleep(0)`, however busy the loop is.
    (ferroloop skips polls on busy iterations only while no fd of the
    program is watched.)"""
    a, b = sockpair
    got = []

    class Collect(asyncio.Protocol):
        def data_received(self, data):
            got.append(data)

    async def main():
        transport, _ = await any_loop.connect_accepted_socket(Collect, a)
        try:
            await asyncio.sleep(0.01)
            b.send(b"x")
            spins = 0
            while not got:
                await asyncio.sleep(0)
                spins += 1
            return spins
        finally:
            transport.close()

    assert any_loop.run_until_complete(asyncio.wait_for(main(), 10)) <= 2
