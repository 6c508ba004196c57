"""Pipe transports made by loop.connect_read_pipe / connect_write_pipe on
os.pipe() ends, FIFOs, socketpair ends and ptys (character devices), with
stock asyncio as the reference (issue #6).

https://docs.python.org/3/library/asyncio-eventloop.html#working-with-pipes
https://docs.python.org/3/library/asyncio-protocol.html#read-only-transports
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import os
import socket
import sys
import tty
import warnings
import weakref

import pytest
from support import collected_warnings, open_fd_count
from transport_support import MB, FlowClient, Recorder, pattern, run, wait_until

KINDS = ("pipe", "fifo", "socketpair", "pty")


def check_reading(transport, expected: bool) -> None:
    """transport.is_reading() is `expected`. asyncio's read pipe transport
    has is_reading() from 3.11 on; 3.10's raises ReadTransport's
    NotImplementedError. ferroloop's has it on every version (as uvloop's):
    on 3.10 either is accepted, but an answer must be the right one."""
    if sys.version_info < (3, 11):
        try:
            answer = transport.is_reading()
        except NotImplementedError:
            return
    else:
        answer = transport.is_reading()
    assert answer is expected


# --- helpers ------------------------------------------------------------------


def _file(fd: int, mode: str):
    return open(fd, mode, buffering=0)


@pytest.fixture
def ends(tmp_path):
    """ends(kind) -> (read_end, write_end): two connected file-like objects
    (with fileno()) of that kind; whatever a test leaves open is closed."""
    opened = []

    def make(kind):
        if kind == "pipe":
            r, w = os.pipe()
            pair = _file(r, "rb"), _file(w, "wb")
        elif kind == "fifo":
            path = tmp_path / f"fifo{len(opened)}"
            os.mkfifo(path)
            r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            w = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            pair = _file(r, "rb"), _file(w, "wb")
        elif kind == "socketpair":
            pair = socket.socketpair()
        elif kind == "pty":
            # Raw mode: no echo, no line editing, no output processing.
            master, slave = os.openpty()
            tty.setraw(slave)
            pair = _file(master, "rb"), _file(slave, "wb")
        else:
            raise AssertionError(kind)
        opened.extend(pair)
        return pair

    yield make
    for f in opened:
        f.close()


def is_closed(end) -> bool:
    if isinstance(end, socket.socket):
        return end.fileno() == -1
    return end.closed


class Fd:
    """A bare fd with fileno() and close(): all a pipe transport uses."""

    def __init__(self, fd):
        self.fd = fd

    def fileno(self):
        return self.fd

    def close(self):
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):  # a test's not-open fd
                os.close(fd)


def raw_pipe():
    """A plain os.pipe(): (read fd, write fd)."""
    return os.pipe()


async def read_all_raw(fd, size, delay=0.0, chunk=65536):
    """Read `size` bytes from a non-blocking fd, optionally slowly."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    out = bytearray()
    while len(out) < size:
        try:
            data = os.read(fd, min(chunk, size - len(out)))
        except BlockingIOError:
            await asyncio.sleep(0.001)
            continue
        assert data, "unexpected EOF"
        out += data
        if delay:
            await asyncio.sleep(delay)
    await asyncio.sleep(0)
    assert loop.is_running()
    return bytes(out)


# --- the transports over each kind of fd --------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_types_extra_info_and_nonblocking(any_loop, ends, kind):
    read_end, write_end = ends(kind)

    async def main():
        rt, rp = await any_loop.connect_read_pipe(lambda: Recorder(any_loop), read_end)
        wt, wp = await any_loop.connect_write_pipe(lambda: FlowClient(any_loop), write_end)
        assert rp.events == ["made"] and wp.events == ["made"]  # before the await returned
        assert rp.transport is rt and wp.transport is wt
        assert isinstance(rt, asyncio.ReadTransport)
        assert isinstance(wt, asyncio.WriteTransport)
        assert rt.get_extra_info("pipe") is read_end
        assert wt.get_extra_info("pipe") is write_end
        assert rt.get_extra_info("nope", "default") == "default"
        assert wt.get_extra_info("nope") is None
        assert not os.get_blocking(read_end.fileno())
        assert not os.get_blocking(write_end.fileno())
        assert rt.get_protocol() is rp and wt.get_protocol() is wp
        check_reading(rt, True)
        assert not rt.is_closing() and not wt.is_closing()
        assert wt.can_write_eof()
        assert wt.get_write_buffer_size() == 0
        wt.close()
        rt.close()
        await asyncio.gather(rp.lost, wp.lost)

    run(any_loop, main())


@pytest.mark.parametrize("kind", KINDS)
def test_large_transfer_then_write_eof(any_loop, ends, handler_calls, kind):
    read_end, write_end = ends(kind)
    data = pattern(4 * MB, seed=3)

    async def main():
        _rt, rp = await any_loop.connect_read_pipe(lambda: Recorder(any_loop), read_end)
        wt, wp = await any_loop.connect_write_pipe(lambda: FlowClient(any_loop), write_end)
        view = memoryview(data)
        for i in range(0, len(data), 256 * 1024):
            await wp.can_write.wait()
            wt.write(view[i : i + 256 * 1024])
        wt.write_eof()
        assert wt.is_closing()
        assert await wp.lost is None
        assert wt.get_write_buffer_size() == 0
        assert is_closed(write_end)  # closed by the transport
        return await rp.lost, rp

    exc, rp = run(any_loop, main(), timeout=20)
    assert len(rp.data) == len(data)
    assert rp.data == data
    if kind == "pty":
        # The master reads EIO once the slave is closed: connection_lost
        # gets the OSError, with no eof_received and no error reported.
        assert isinstance(exc, OSError) and exc.errno == errno.EIO
        assert rp.events == ["made", "data", "lost"]
    else:
        assert exc is None
        assert rp.events == ["made", "data", "eof", "lost"]
    assert handler_calls == []


def test_pty_slave_as_read_pipe_sees_eof_when_master_closes(any_loop, ends):
    master, slave = ends("pty")  # the helper's read end is the master

    async def main():
        _rt, rp = await any_loop.connect_read_pipe(lambda: Recorder(any_loop), slave)
        os.write(master.fileno(), b"to the slave")
        await wait_until(lambda: rp.data)
        master.close()
        return await rp.lost, rp

    exc, rp = run(any_loop, main())
    assert exc is None
    assert rp.events == ["made", "data", "eof", "lost"]
    assert rp.data == b"to the slave"


def test_pty_slave_as_write_pipe_gets_eio_once_the_master_is_closed(any_loop, ends, handler_calls):
    master, slave = ends("pty")

    async def main():
        wt, wp = await any_loop.connect_write_pipe(lambda: FlowClient(any_loop), slave)
        master.close()
        wt.write(b"nobody reads this")
        exc = await wp.lost
        wt.write(b"dropped")  # after the loss: ignored
        await asyncio.sleep(0.01)
        return exc, wp, wt

    exc, wp, wt = run(any_loop, main())
    assert isinstance(exc, OSError) and exc.errno == errno.EIO
    assert wp.events == ["made", "lost"]
    assert wt.is_closing()
    assert handler_calls == []


@pytest.mark.parametrize("api", ["connect_read_pipe", "connect_write_pipe"])
def test_regular_file_is_rejected(any_loop, tmp_path, api):
    path = tmp_path / "regular"
    path.write_bytes(b"data")
    made = []

    def factory():
        proto = Recorder(any_loop)
        made.append(proto)
        return proto

    async def main(f):
        with pytest.raises(ValueError, match="^Pipe transport is "):
            await getattr(any_loop, api)(factory, f)
        assert not f.closed
        os.fstat(f.fileno())  # still open: the caller owns it
        await asyncio.sleep(0.01)

    with open(path, "rb" if api == "connect_read_pipe" else "r+b", buffering=0) as f:
        run(any_loop, main(f))
    assert len(made) == 1 and made[0].events == []  # asyncio made the protocol, called nothing


def test_directory_and_closed_fd_are_rejected(any_loop, tmp_path):
    not_open = 1_000_000  # far above any fd this process has

    async def main():  # (asyncio warns about its half-made transports: ignored)
        directory = Fd(os.open(tmp_path, os.O_RDONLY))
        try:
            with pytest.raises(ValueError, match="^Pipe transport is "):
                await any_loop.connect_read_pipe(lambda: Recorder(any_loop), directory)
        finally:
            directory.close()
        with pytest.raises(OSError) as info:
            await any_loop.connect_read_pipe(lambda: Recorder(any_loop), Fd(not_open))
        assert info.value.errno == errno.EBADF
        with pytest.raises(OSError) as info:
            await any_loop.connect_write_pipe(lambda: Recorder(any_loop), Fd(not_open))
        assert info.value.errno == errno.EBADF

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        run(any_loop, main())
        gc.collect()


def test_data_received_exception_goes_to_the_handler_and_reading_goes_on(
    any_loop, ends, handler_calls
):
    # asyncio's read pipe transport does not catch it: the loop's handler
    # reports the failed callback, and the transport keeps reading.
    read_end, write_end = ends("pipe")

    class Failing(Recorder):
        def data_received(self, data):
            super().data_received(data)
            if len(self.data) == 3:
                raise ZeroDivisionError("in data_received")

    async def main():
        rt, rp = await any_loop.connect_read_pipe(lambda: Failing(any_loop), read_end)
        os.write(write_end.fileno(), b"one")
        await wait_until(lambda: handler_calls)
        os.write(write_end.fileno(), b"two")
        await wait_until(lambda: rp.data == b"onetwo")
        assert not rt.is_closing()
        write_end.close()
        assert await rp.lost is None
        return rp.events

    assert run(any_loop, main()) == ["made", "data", "eof", "lost"]
    assert len(handler_calls) == 1
    assert isinstance(handler_calls[0]["exception"], ZeroDivisionError)
    assert handler_calls[0]["message"].startswith("Exception in callback ")


def test_set_protocol_redirects_data(any_loop, ends):
    read_end, write_end = ends("pipe")

    async def main():
        rt, first = await any_loop.connect_read_pipe(lambda: Recorder(any_loop), read_end)
        os.write(write_end.fileno(), b"to first")
        await wait_until(lambda: first.data == b"to first")
        second = Recorder(any_loop)
        second.events.append("made")  # never gets connection_made
        rt.set_protocol(second)
        assert rt.get_protocol() is second
        os.write(write_end.fileno(), b"to second")
        write_end.close()
        assert await second.lost is None
        return first, second

    first, second = run(any_loop, main())
    assert first.events == ["made", "data"]
    assert second.data == b"to second"
    assert second.events == ["made", "data", "eof", "lost"]


def test_written_buffers_are_copied_when_kept(any_loop):
    # A bytearray (or a view of one) changed after write() does not change
    # what is sent, even when the transport had to keep it.
    r, w = raw_pipe()
    size = 1 * MB

    async def main():
        wt, wp = await any_loop.connect_write_pipe(lambda: FlowClient(any_loop), _file(w, "wb"))
        assert wt.get_write_buffer_limits() == (16 * 1024, 64 * 1024)  # asyncio's defaults
        first = bytearray(b"a" * size)
        second = bytearray(b"c" * size)
        wt.write(first)
        wt.write(memoryview(second))
        assert wt.get_write_buffer_size() > size  # kept, not all sent
        first[:] = b"b" * size
        second[:] = b"d" * size
        wt.close()
        got = await read_all_raw(r, 2 * size)
        await wp.lost
        return got

    try:
        got = run(any_loop, main())
    finally:
        os.close(r)
    assert got == b"a" * size + b"c" * size


# --- write flow control -------------------------------------------------------


def test_write_flow_control_with_a_slow_reader(any_loop):
    r, w = raw_pipe()
    data = pattern(2 * MB, seed=9)

    async def main():
        wt, wp = await any_loop.connect_write_pipe(lambda: FlowClient(any_loop), _file(w, "wb"))
        wt.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
        assert wt.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        # Nobody reads yet: the kernel's pipe buffer fills, then ours.
        sent = 0
        while not wp.flow:
            wt.write(data[sent : sent + 32 * 1024])
            sent += 32 * 1024
        assert wp.flow[0][0] == "pause" and wp.flow[0][1] > 64 * 1024
        assert wt.get_write_buffer_size() == wp.flow[0][1]
        reader = asyncio.ensure_future(read_all_raw(r, len(data), delay=0.001, chunk=16 * 1024))
        while sent < len(data):
            await wp.can_write.wait()
            wt.write(data[sent : sent + 32 * 1024])
            sent += 32 * 1024
        wt.close()
        got = await reader
        assert await wp.lost is None
        return got, wp.flow

    try:
        got, flow = run(any_loop, main(), timeout=20)
    finally:
        os.close(r)
    assert got == data
    pauses = [size for event, size in flow if event == "pause"]
    resumes = [size for event, size in flow if event == "resume"]
    assert len(pauses) >= 2 and len(resumes) >= 2
    assert [event for event, _ in flow] == ["pause", "resume"] * (len(flow) // 2)
    assert all(size > 64 * 1024 for size in pauses)
    assert all(size <= 16 * 1024 for size in resumes)


def test_set_write_buffer_limits_validates(any_loop):
    r, w = raw_pipe()

    async def main():
        wt, wp = await any_loop.connect_write_pipe(lambda: FlowClient(any_loop), _file(w, "wb"))
        with pytest.raises(ValueError):
            wt.set_write_buffer_limits(high=10, low=20)
        wt.set_write_buffer_limits(high=100)
        assert wt.get_write_buffer_limits() == (25, 100)
        wt.set_write_buffer_limits(low=0, high=0)
        wt.write(b"x" * 100)  # fits in the kernel's pipe buffer: no pause
        assert wp.flow == []
        wt.close()
        await wp.lost

    try:
        run(any_loop, main())
    finally:
        os.close(r)


def test_flow_control_callbacks_raising_go_to_the_handler(any_loop, handler_calls):
    r, w = raw_pipe()

    class Raising(FlowClient):
        def pause_writing(self):
            super().pause_writing()
            raise ValueError("in pause_writing")

        def resume_writing(self):
            super().resume_writing()
            raise ValueError("in resume_writing")

    async def main():
        wt, wp = await any_loop.connect_write_pipe(lambda: Raising(any_loop), _file(w, "wb"))
        wt.write(pattern(300_000))
        assert [event for event, _ in wp.flow] == ["pause"]
        got = await read_all_raw(r, 300_000)
        await wait_until(lambda: len(wp.flow) == 2)
        wt.close()
        assert await wp.lost is None
        return got, wp.flow

    try:
        got, flow = run(any_loop, main())
    finally:
        os.close(r)
    assert got == pattern(300_000)
    assert [event for event, _ in flow] == ["pause", "resume"]
    assert [(c["message"], str(c["exception"])) for c in handler_calls] == [
        ("protocol.pause_writing() failed", "in pause_writing"),
        ("protocol.resume_writing() failed", "in resume_writing"),
    ]


def test_many_small_writes_keep_their_order(any_loop):
    r, w = raw_pipe()
    pieces = [pattern(1 + i % 700, seed=i) for i in range(5000)]

    async def main():
        wt, wp = await any_loop.connect_write_pipe(lambda: FlowClient(any_loop), _file(w, "wb"))
        for i, piece in enumerate(pieces):
            kind = i % 3
            wt.write(piece if kind == 0 else bytearray(piece) if kind == 1 else memoryview(piece))
            wt.write(b"")  # nothing
            wt.write(bytearray())
        wt.writelines([b"tail-", bytearray(b"of-"), memoryview(b"writes")])
        wt.close()
        expected = sum(map(len, pieces)) + len(b"tail-of-writes")
        got = await read_all_raw(r, expected)
        await wp.lost
        return got

    try:
        got = run(any_loop, main(), timeout=20)
    finally:
        os.close(r)
    assert got == b"".join(pieces) + b"tail-of-writes"


# --- write_eof, close, abort --------------------------------------------------


def test_write_eof_flushes_the_buffer_first(any_loop):
    r, w = raw_pipe()
    data = pattern(1 * MB)

    async def main():
        wt, wp = await any_loop.connect_write_pipe(lambda: FlowClient(any_loop), _file(w, "wb"))
        wt.write(data)
        assert wt.get_write_buffer_size() > 0
        wt.write_eof()
        wt.write_eof()  # a second one is a no-op
        assert wt.is_closing()
        assert not wp.lost.done()
        got = await read_all_raw(r, len(data))
        assert await wp.lost is None
        assert os.read(r, 10) == b""  # EOF
        return got, wp.events

    try:
        got, events = run(any_loop, main())
    finally:
        os.close(r)
    assert got == data
    assert events == ["made", "lost"]


def test_write_after_write_eof_or_close_is_dropped(any_loop, handler_calls):
    r, w = raw_pipe()

    async def main():
        wt, wp = await any_loop.connect_write_pipe(lambda: FlowClient(any_loop), _file(w, "wb"))
        wt.write(b"first")
        wt.write_eof()
        wt.write(b"second")  # asyncio's pipe transport ignores it (no error)
        await wp.lost
        wt.write(b"third")
        wt.close()
        await asyncio.sleep(0.01)
        os.set_blocking(r, False)
        return os.read(r, 100), os.read(r, 100), wp.events

    try:
        assert run(any_loop, main()) == (b"first", b"", ["made", "lost"])
    finally:
        os.close(r)
    assert handler_calls == []


def test_abort_drops_the_buffer(any_loop):
    r, w = raw_pipe()
    data = pattern(1 * MB)

    async def main():
        wt, wp = await any_loop.connect_write_pipe(lambda: FlowClient(any_loop), _file(w, "wb"))
        wt.write(data)
        assert wt.get_write_buffer_size() > 0
        wt.abort()
        assert wt.is_closing()
        assert await wp.lost is None
        assert wt.get_write_buffer_size() == 0
        wt.close()  # after the loss: nothing more happens
        await asyncio.sleep(0.01)
        os.set_blocking(r, False)
        got = bytearray()
        while chunk := os.read(r, MB):
            got += chunk
        return bytes(got), wp.events

    try:
        got, events = run(any_loop, main())
    finally:
        os.close(r)
    assert len(got) < len(data) and data.startswith(got)
    assert events == ["made", "lost"]


def test_read_transport_close(any_loop, ends):
    read_end, write_end = ends("pipe")

    async def main():
        rt, rp = await any_loop.connect_read_pipe(lambda: Recorder(any_loop), read_end)
        os.write(write_end.fileno(), b"before")
        await wait_until(lambda: rp.data)
        rt.close()
        assert rt.is_closing()
        check_reading(rt, False)
        rt.close()
        rt.pause_reading()  # no-ops once closing
        rt.resume_reading()
        assert await rp.lost is None
        assert read_end.closed  # the transport closed the pipe
        with pytest.raises(BrokenPipeError):
            os.write(write_end.fileno(), b"after")
        return rp.events

    assert run(any_loop, main()) == ["made", "data", "lost"]


def test_read_transport_close_while_paused(any_loop, ends):
    read_end, _write_end = ends("pipe")

    async def main():
        rt, rp = await any_loop.connect_read_pipe(lambda: Recorder(any_loop), read_end)
        rt.pause_reading()
        rt.close()
        assert await rp.lost is None
        return rp.events

    assert run(any_loop, main()) == ["made", "lost"]


# --- pause/resume reading -----------------------------------------------------


@pytest.mark.parametrize("kind", ["pipe", "socketpair"])
def test_pause_and_resume_reading(any_loop, ends, kind):
    read_end, write_end = ends(kind)

    def send(data):
        if kind == "socketpair":
            write_end.sendall(data)
        else:
            os.write(write_end.fileno(), data)

    async def main():
        rt, rp = await any_loop.connect_read_pipe(lambda: Recorder(any_loop), read_end)
        check_reading(rt, True)
        rt.pause_reading()
        rt.pause_reading()  # idempotent
        check_reading(rt, False)
        send(b"while paused")
        await asyncio.sleep(0.05)
        assert rp.data == b""
        rt.resume_reading()
        rt.resume_reading()
        check_reading(rt, True)
        await wait_until(lambda: rp.data == b"while paused")
        # EOF arriving while paused is seen on resume.
        rt.pause_reading()
        send(b"more")
        write_end.close()
        await asyncio.sleep(0.05)
        assert rp.events == ["made", "data"]
        rt.resume_reading()
        assert await rp.lost is None
        return rp

    rp = run(any_loop, main())
    assert rp.data == b"while pausedmore"
    assert rp.events == ["made", "data", "eof", "lost"]


# --- the peer closing ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["pipe", "fifo", "socketpair"])
def test_read_pipe_peer_close_gives_eof_then_connection_lost_none(
    any_loop, ends, handler_calls, kind
):
    read_end, write_end = ends(kind)

    async def main():
        rt, rp = await any_loop.connect_read_pipe(lambda: Recorder(any_loop), read_end)
        write_end.close()
        exc = await rp.lost
        await asyncio.sleep(0.01)
        return exc, rp.events, rt

    exc, events, rt = run(any_loop, main())
    assert exc is None
    assert events == ["made", "eof", "lost"]
    assert rt.is_closing()
    assert handler_calls == []


@pytest.mark.parametrize("kind", ["pipe", "fifo", "socketpair"])
def test_write_pipe_peer_close_with_nothing_buffered(any_loop, ends, handler_calls, kind):
    # asyncio watches a pipe's (or socket's) write end for readability:
    # the reader closing is noticed without writing.
    read_end, write_end = ends(kind)

    async def main():
        wt, wp = await any_loop.connect_write_pipe(lambda: FlowClient(any_loop), write_end)
        read_end.close()
        exc = await wp.lost
        wt.write(b"dropped")
        await asyncio.sleep(0.01)
        return exc, wp.events, wt

    exc, events, wt = run(any_loop, main())
    assert exc is None
    assert events == ["made", "lost"]
    assert wt.is_closing()
    assert handler_calls == []


def test_write_pipe_on_a_socket_whose_peer_sends_counts_it_as_closed(any_loop, ends, handler_calls):
    # asyncio's write pipe transport watches a socket for readability to
    # learn the peer closed: data arriving is taken as the peer closing.
    read_end, write_end = ends("socketpair")

    async def main():
        wt, wp = await any_loop.connect_write_pipe(lambda: FlowClient(any_loop), write_end)
        read_end.sendall(b"unexpected")
        exc = await wp.lost
        return exc, wp.events, wt.is_closing()

    assert run(any_loop, main()) == (None, ["made", "lost"], True)
    assert handler_calls == []


@pytest.mark.parametrize("kind", ["pipe", "fifo", "socketpair"])
def test_write_pipe_peer_close_with_data_buffered(any_loop, ends, handler_calls, kind):
    read_end, write_end = ends(kind)

    async def main():
        wt, wp = await any_loop.connect_write_pipe(lambda: FlowClient(any_loop), write_end)
        wt.write(pattern(4 * MB))
        assert wt.get_write_buffer_size() > 0
        read_end.close()
        exc = await wp.lost
        await asyncio.sleep(0.01)
        return exc, wp.events, wt.get_write_buffer_size()

    exc, events, size = run(any_loop, main())
    assert isinstance(exc, BrokenPipeError)
    assert events == ["made", "lost"]
    assert size == 0
    assert handler_calls == []  # an OSError: not reported to the handler


# --- garbage collection -------------------------------------------------------


def test_unclosed_read_pipe_transport_warns_and_closes_the_pipe(any_loop, ends):
    read_end, _write_end = ends("pipe")

    async def main():
        rt, rp = await any_loop.connect_read_pipe(lambda: Recorder(any_loop), read_end)
        rt.pause_reading()  # the loop no longer holds it
        rp.transport = None
        return weakref.ref(rt)

    ref = run(any_loop, main())
    with collected_warnings() as caught:
        pass
    assert ref() is None
    messages = [text for category, text in caught if issubclass(category, ResourceWarning)]
    assert [m for m in messages if m.startswith("unclosed transport")], messages
    assert read_end.closed


def test_unclosed_write_pipe_transport_warns_and_closes_the_pipe(any_loop, ends):
    # On a pty the write transport watches nothing while its buffer is empty.
    _master, slave = ends("pty")

    async def main():
        wt, wp = await any_loop.connect_write_pipe(lambda: FlowClient(any_loop), slave)
        wt.write(b"x")
        wp.transport = None
        return weakref.ref(wt)

    ref = run(any_loop, main())
    with collected_warnings() as caught:
        pass
    assert ref() is None
    messages = [text for category, text in caught if issubclass(category, ResourceWarning)]
    assert [m for m in messages if m.startswith("unclosed transport")], messages
    assert slave.closed


def test_closed_pipe_transports_give_no_warning_and_leave_no_fd(any_loop):
    async def main():
        for _ in range(50):
            r, w = raw_pipe()
            _rt, rp = await any_loop.connect_read_pipe(lambda: Recorder(any_loop), _file(r, "rb"))
            wt, wp = await any_loop.connect_write_pipe(lambda: FlowClient(any_loop), _file(w, "wb"))
            wt.write(b"ping")
            wt.close()
            await asyncio.gather(rp.lost, wp.lost)
            assert rp.data == b"ping"

    run(any_loop, main())  # warm-up
    before = open_fd_count()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(any_loop, main())
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert open_fd_count() == before
