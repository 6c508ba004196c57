"""Writing on a stream transport, TCP and Unix (every test runs on both: the
stream_family fixture): write/writelines of every bytes-like type, writes
after close or write_eof, the write buffer, its limits and
pause_writing/resume_writing, with stock asyncio as the reference.

https://docs.python.org/3/library/asyncio-protocol.html#write-only-transports
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from asyncio import selector_events

import pytest
from support import is_ferroloop
from transport_support import (
    MB,
    FlowClient,
    HashingServer,
    pattern,
    read_all_then_resumed,
    recv_exactly,
    recv_until_eof,
    run,
    wait_until,
)

# --- write --------------------------------------------------------------------


def test_small_write_is_sent_at_once(any_loop, stream_family):
    async def main():
        async with stream_family.pair(any_loop) as (tr, _client, sproto, _server):
            tr.write(b"immediate")
            assert tr.get_write_buffer_size() == 0
            await wait_until(lambda: sproto.data == b"immediate")

    run(any_loop, main())


def test_write_accepts_bytes_like_objects_in_order(any_loop, stream_family):
    async def main():
        async with stream_family.pair(any_loop) as (tr, _client, sproto, _server):
            big = pattern(3 * MB, seed=3)
            parts = [
                b"bytes|",
                bytearray(b"bytearray|"),
                memoryview(b"memoryview|"),
                memoryview(b"xxsliced|xx")[2:-2],
                b"",
                big,
                bytearray(b"|after-big"),
            ]
            expected = b"".join(bytes(p) for p in parts)
            for p in parts:
                tr.write(p)
            tr.writelines(
                [b"L1|", bytearray(b"L2|"), memoryview(b"L3|"), memoryview(b"-L4|-")[1:-1]]
            )
            tr.writelines([])
            expected += b"L1|L2|L3|L4|"
            tr.write_eof()
            await sproto.eof
            assert bytes(sproto.data) == expected

    run(any_loop, main())


def test_writelines_takes_any_iterable(any_loop, stream_family):
    async def main():
        async with stream_family.pair(any_loop) as (tr, _client, sproto, _server):
            tr.writelines(b"%d," % i for i in range(5))  # a generator
            tr.writelines((b"a", bytearray(b"b")))  # a tuple
            tr.writelines(iter([memoryview(b"c")]))
            tr.write_eof()
            await sproto.eof
            assert sproto.data == b"0,1,2,3,4,abc"

    run(any_loop, main())


def test_many_small_buffered_writes_arrive_in_order(any_loop, stream_family):
    if stream_family.name == "unix" and not is_ferroloop(any_loop) and sys.version_info >= (3, 12):
        # Seen on 3.12 and 3.13: stock asyncio does not get these 100,000
        # writes through an AF_UNIX socket in 2 minutes (on TCP, or on
        # ferroloop, well within the 20 s).
        pytest.skip("stock asyncio 3.12+ takes minutes over this on a Unix socket")

    async def main():
        async with stream_family.pair(any_loop) as (tr, _client, sproto, _server):
            sproto.transport.pause_reading()
            tr.set_write_buffer_limits(high=64 * MB)
            expected = bytearray()
            for i in range(100_000):
                chunk = b"%d;" % i
                expected += chunk
                if i % 3 == 0:
                    tr.write(chunk)
                elif i % 3 == 1:
                    tr.write(bytearray(chunk))
                else:
                    tr.writelines([chunk[:1], memoryview(chunk)[1:]])
            sproto.transport.resume_reading()
            tr.write_eof()
            await sproto.eof
            assert sproto.data == expected

    run(any_loop, main(), timeout=20)


def test_write_after_close_is_ignored(any_loop, stream_family, handler_calls):
    async def main():
        async with stream_family.pair(any_loop) as (tr, client, sproto, _server):
            tr.write(b"before")
            tr.close()
            tr.write(b"after close")  # silently dropped
            assert await client.lost is None
            tr.write(b"after connection_lost")
            await sproto.lost
            assert sproto.data == b"before"
            assert client.events == ["made", "lost"]

    run(any_loop, main())
    assert handler_calls == []


def test_write_after_write_eof_raises(any_loop, stream_family):
    async def main():
        async with stream_family.pair(any_loop) as (tr, _client, sproto, _server):
            tr.write(b"x")
            tr.write_eof()
            tr.write_eof()  # a second write_eof is a no-op
            with pytest.raises(RuntimeError, match=r"Cannot call write\(\) after write_eof\(\)"):
                tr.write(b"y")
            with pytest.raises(RuntimeError, match=r"after write_eof\(\)"):
                tr.writelines([b"y"])
            await sproto.eof
            assert sproto.data == b"x"
            assert not tr.is_closing()

    run(any_loop, main())


def asyncio_write_type_error(obj) -> str:
    """What asyncio's own stream transport says write(obj) of a non-bytes
    object (its words changed in 3.14.x): its write() checks the type
    before anything else."""
    with pytest.raises(TypeError) as info:
        selector_events._SelectorSocketTransport.write(None, obj)
    return str(info.value)


@pytest.mark.parametrize(
    "obj, type_name",
    [("text", "str"), (12, "int"), (None, "NoneType"), ([b"a"], "list")],
)
def test_write_non_bytes_raises_type_error(any_loop, stream_family, obj, type_name):
    async def main():
        async with stream_family.pair(any_loop) as (tr, _client, sproto, _server):
            message = asyncio_write_type_error(obj)
            assert message.endswith(f", not '{type_name}'")
            with pytest.raises(TypeError) as info:
                tr.write(obj)
            assert str(info.value) == message
            with pytest.raises(TypeError):
                tr.writelines(["text"])
            assert not tr.is_closing()
            tr.write(b"still usable")
            await wait_until(lambda: sproto.data == b"still usable")

    run(any_loop, main())


def test_write_of_a_non_contiguous_memoryview(any_loop, stream_family, handler_calls):
    """asyncio does not raise from write(): the send fails, the error goes to
    the exception handler and the transport is closed."""

    async def main():
        async with stream_family.pair(any_loop) as (tr, client, _sproto, _server):
            view = memoryview(bytearray(b"abcdefgh"))[::2]
            assert not view.c_contiguous
            tr.write(view)
            exc = await client.lost
            assert tr.is_closing()
            return exc

    exc = run(any_loop, main())
    assert isinstance(exc, BufferError)
    assert len(handler_calls) == 1
    assert handler_calls[0]["message"] == "Fatal write error on socket transport"
    assert handler_calls[0]["exception"] is exc


def test_write_eof_flushes_the_buffer_first(any_loop, stream_family):
    payload = pattern(8 * MB, seed=4)

    async def main():
        async with stream_family.raw_peer(any_loop) as (tr, _client, peer):
            tr.write(payload)
            assert tr.get_write_buffer_size() > 0
            tr.write_eof()
            assert not tr.is_closing()
            got = await recv_until_eof(any_loop, peer)
            assert got == payload
            await wait_until(lambda: tr.get_write_buffer_size() == 0)

    run(any_loop, main())


# --- flow control: writing ----------------------------------------------------


def test_pause_and_resume_writing_with_a_slow_reader(any_loop, stream_family):
    chunk_size = 256 * 1024
    chunks = 200  # 50 MiB
    base = pattern(chunk_size + 256, seed=5)
    expected = hashlib.sha256()
    for i in range(chunks):
        expected.update(base[i % 256 : i % 256 + chunk_size])

    async def main():
        async with stream_family.pair(
            any_loop,
            client_factory=lambda: FlowClient(any_loop),
            server_factory=lambda: HashingServer(any_loop),
        ) as (tr, client, sproto, _server):
            # a slow reader: nothing for a while
            sproto.transport.pause_reading()
            any_loop.call_later(0.2, sproto.transport.resume_reading)
            low, high = tr.get_write_buffer_limits()
            for i in range(chunks):
                await client.can_write.wait()
                tr.write(base[i % 256 : i % 256 + chunk_size])
            tr.write_eof()
            await sproto.eof
            assert sproto.count == chunks * chunk_size
            assert sproto.hash.hexdigest() == expected.hexdigest()
            await wait_until(lambda: tr.get_write_buffer_size() == 0)
            return low, high, client.flow

    low, high, flow = run(any_loop, main(), timeout=30)
    assert flow, "pause_writing was never called"
    kinds = [kind for kind, _ in flow]
    assert kinds == ["pause", "resume"] * (len(kinds) // 2)
    for kind, size in flow:
        if kind == "pause":
            assert size > high
        else:
            assert size <= low


def test_write_buffer_limits(any_loop, stream_family):
    async def main():
        async with stream_family.pair(any_loop) as (tr, _client, _sproto, _server):
            low, high = tr.get_write_buffer_limits()
            assert 0 <= low <= high
            tr.set_write_buffer_limits(high=10_000, low=2_000)
            assert tr.get_write_buffer_limits() == (2_000, 10_000)
            tr.set_write_buffer_limits(high=8_000)
            low, high = tr.get_write_buffer_limits()
            assert high == 8_000 and 0 <= low <= 8_000
            tr.set_write_buffer_limits(low=1_000)
            low, high = tr.get_write_buffer_limits()
            assert low == 1_000 and high >= 1_000
            tr.set_write_buffer_limits(high=0)
            assert tr.get_write_buffer_limits() == (0, 0)
            tr.set_write_buffer_limits(high=300, low=100)
            for bad in (
                {"high": 100, "low": 200},
                {"high": -1},
                {"low": -1},
                {"high": 5, "low": -1},
            ):
                with pytest.raises(ValueError):
                    tr.set_write_buffer_limits(**bad)
            assert tr.get_write_buffer_limits() == (100, 300)
            assert tr.get_write_buffer_size() == 0

    run(any_loop, main())


def test_write_buffer_limits_reset_to_the_defaults(any_loop, stream_family):
    async def main():
        async with stream_family.pair(any_loop) as (tr, _client, _sproto, _server):
            initial = tr.get_write_buffer_limits()
            tr.set_write_buffer_limits(high=10_000, low=2_000)
            tr.set_write_buffer_limits()
            return initial, tr.get_write_buffer_limits()

    initial, after = run(any_loop, main())
    assert after == initial


def test_high_water_zero_pauses_on_any_buffered_data(any_loop, stream_family):
    payload = pattern(8 * MB, seed=6)

    async def main():
        async with stream_family.raw_peer(any_loop, lambda: FlowClient(any_loop)) as (
            tr,
            client,
            peer,
        ):
            tr.set_write_buffer_limits(0)
            tr.write(b"small")  # sent at once: nothing buffered, no pause
            assert client.flow == []
            tr.write(payload)
            buffered = tr.get_write_buffer_size()
            assert buffered > 0
            assert client.flow == [("pause", buffered)]
            await read_all_then_resumed(any_loop, peer, client, b"small" + payload)
            # low is 0: resume_writing only once the buffer is empty
            assert client.flow[1] == ("resume", 0)

    run(any_loop, main())


def test_lowering_the_limits_below_the_buffer_pauses_at_once(any_loop, stream_family):
    payload = pattern(16 * MB, seed=7)

    async def main():
        async with stream_family.raw_peer(any_loop, lambda: FlowClient(any_loop)) as (
            tr,
            client,
            peer,
        ):
            tr.set_write_buffer_limits(high=64 * MB)
            tr.write(payload)
            buffered = tr.get_write_buffer_size()
            assert 0 < buffered < 64 * MB
            assert client.flow == []
            tr.set_write_buffer_limits(high=1024, low=512)
            assert [kind for kind, _ in client.flow] == ["pause"]
            await read_all_then_resumed(any_loop, peer, client, payload)
            assert client.flow[1][0] == "resume"
            assert client.flow[1][1] <= 512

    run(any_loop, main())


def test_pause_writing_only_above_the_high_water_mark(any_loop, stream_family):
    payload = pattern(16 * MB, seed=18)

    async def main():
        async with stream_family.raw_peer(any_loop, lambda: FlowClient(any_loop)) as (
            tr,
            client,
            peer,
        ):
            tr.set_write_buffer_limits(high=256 * MB)
            tr.write(payload)  # fills the kernel buffers; the rest is buffered
            size = tr.get_write_buffer_size()
            assert size > 0
            tr.set_write_buffer_limits(high=size, low=0)
            assert client.flow == []  # size == high: not above it
            tr.set_write_buffer_limits(high=size - 1, low=0)
            assert client.flow == [("pause", size)]
            await read_all_then_resumed(any_loop, peer, client, payload)
            assert client.flow[1] == ("resume", 0)

    run(any_loop, main())


def test_get_write_buffer_size_tracks_what_is_unsent(any_loop, stream_family):
    payload = pattern(16 * MB, seed=8)

    async def main():
        async with stream_family.raw_peer(any_loop) as (tr, _client, peer):
            assert tr.get_write_buffer_size() == 0
            tr.set_write_buffer_limits(high=64 * MB)
            tr.write(payload)
            first = tr.get_write_buffer_size()
            assert 0 < first <= len(payload)
            tr.write(b"tail")
            assert tr.get_write_buffer_size() == first + 4
            got = await recv_exactly(any_loop, peer, len(payload) + 4)
            assert got == payload + b"tail"
            await wait_until(lambda: tr.get_write_buffer_size() == 0)

    run(any_loop, main())


def test_bidirectional_echo_with_back_pressure(any_loop, stream_family):
    """An echo server that stops reading while its writes are paused, and a
    client that writes and reads 16 MiB at once: nothing may deadlock or
    go missing."""
    payload = pattern(16 * MB, seed=17)

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

        def pause_writing(self):
            self.transport.pause_reading()

        def resume_writing(self):
            self.transport.resume_reading()

        def eof_received(self):
            return True  # the reply is still flowing; close once written

    class Client(FlowClient):
        pass

    async def main():
        async with stream_family.pair(
            any_loop, client_factory=lambda: Client(any_loop), server_factory=Echo
        ) as (tr, client, sproto, _server):
            for offset in range(0, len(payload), 128 * 1024):
                await client.can_write.wait()
                tr.write(payload[offset : offset + 128 * 1024])
            await wait_until(lambda: len(client.data) >= len(payload), timeout=15)
            assert client.data == payload
            sproto.transport.close()
            await client.lost

    run(any_loop, main(), timeout=30)
