"""Reading from a stream transport, TCP and Unix (every test runs on both:
the stream_family fixture): data_received in order and whole,
pause_reading/resume_reading (also from inside the protocol's callbacks),
and BufferedProtocol, with stock asyncio as the reference.

https://docs.python.org/3/library/asyncio-protocol.html#buffered-streaming-protocols
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import sys

import pytest
from transport_support import (
    MB,
    BufferedRecorder,
    Recorder,
    pattern,
    run,
    wait_until,
)

# --- data_received ------------------------------------------------------------


def test_bulk_then_small_reads_arrive_whole_and_in_order(any_loop, stream_family):
    """Large reads (which ferroloop receives straight into the bytes it
    passes on) and small ones (through its shared buffer), mixed: every
    chunk is a bytes object and nothing is lost, doubled or reordered."""
    sizes = [3 * MB, 100, 70_000, 1, 2 * MB, 5, 40_000]
    messages = [pattern(n, seed=i) for i, n in enumerate(sizes)]

    async def main():
        async with stream_family.raw_peer(any_loop) as (_tr, client, peer):
            sent = 0
            for message in messages:
                await any_loop.sock_sendall(peer, message)
                sent += len(message)
                await wait_until(lambda: len(client.data) >= sent)  # noqa: B023
            assert client.data == b"".join(messages)
            peer.shutdown(socket.SHUT_WR)
            await client.lost
            assert client.data_types == {bytes}
            assert client.events == ["made", "data", "eof", "lost"]

    run(any_loop, main(), timeout=20)


# --- flow control: reading ----------------------------------------------------


def test_pause_and_resume_reading(any_loop, stream_family):
    async def main():
        async with stream_family.pair(any_loop) as (tr, _client, sproto, _server):
            stransport = sproto.transport
            assert stransport.is_reading()
            stransport.pause_reading()
            stransport.pause_reading()  # idempotent
            assert not stransport.is_reading()
            tr.write(b"while paused")
            tr.write_eof()
            await asyncio.sleep(0.2)
            assert sproto.events == ["made"]  # neither data nor eof while paused
            stransport.resume_reading()
            assert stransport.is_reading()
            stransport.resume_reading()  # idempotent
            await sproto.eof
            assert sproto.data == b"while paused"
            assert await sproto.lost is None
            assert sproto.events == ["made", "data", "eof", "lost"]
            assert not stransport.is_reading()  # closed
            stransport.pause_reading()  # no-op on a closed transport
            stransport.resume_reading()
            assert not stransport.is_reading()

    run(any_loop, main())


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="3.10 starts reading after connection_made regardless"
)
def test_pause_reading_in_connection_made_is_honoured(any_loop, stream_family):
    class PausedFromTheStart(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.pause_reading()

    async def main():
        async with stream_family.pair(
            any_loop, server_factory=lambda: PausedFromTheStart(any_loop)
        ) as (tr, _client, sproto, _server):
            tr.write(b"early")
            await asyncio.sleep(0.1)
            assert sproto.events == ["made"]
            assert not sproto.transport.is_reading()
            sproto.transport.resume_reading()
            await wait_until(lambda: sproto.data == b"early")

    run(any_loop, main())


def test_pause_reading_throttles_a_large_transfer(any_loop, stream_family):
    payload = pattern(8 * MB, seed=9)

    async def main():
        async with stream_family.pair(any_loop) as (tr, _client, sproto, _server):
            stransport = sproto.transport
            tr.write(payload)
            for _ in range(5):
                await wait_until(lambda: len(sproto.data) > 0)
                stransport.pause_reading()
                seen = len(sproto.data)
                await asyncio.sleep(0.03)
                assert len(sproto.data) == seen
                stransport.resume_reading()
                await asyncio.sleep(0)
            await wait_until(lambda: len(sproto.data) == len(payload))
            assert sproto.data == payload

    run(any_loop, main())


class PausingEachRead(asyncio.Protocol):
    """Pauses reading in every data_received and resumes a little later;
    records any data_received that arrives while paused."""

    def __init__(self, loop):
        self.loop = loop
        self.paused = False
        self.violations = 0
        self.calls = 0
        self.data = bytearray()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if self.paused:
            self.violations += 1
        self.calls += 1
        self.data += data
        self.paused = True
        self.transport.pause_reading()
        self.loop.call_later(0.001, self._resume)

    def _resume(self):
        self.paused = False
        self.transport.resume_reading()

    def eof_received(self):
        if self.paused:
            self.violations += 1

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def test_pause_reading_inside_data_received_stops_delivery_at_once(any_loop, stream_family):
    payload = pattern(4 * MB, seed=13)

    async def main():
        async with stream_family.pair(
            any_loop, server_factory=lambda: PausingEachRead(any_loop)
        ) as (tr, _client, sproto, _server):
            tr.write(payload)
            tr.write_eof()
            assert await sproto.lost is None
            return sproto

    sproto = run(any_loop, main(), timeout=20)
    assert sproto.violations == 0
    assert sproto.calls > 1
    assert sproto.data == payload


# --- BufferedProtocol ---------------------------------------------------------


@pytest.mark.parametrize("size, use_memoryview", [(64 * 1024, False), (1000, True)])
def test_buffered_protocol_receives_a_large_transfer(any_loop, stream_family, size, use_memoryview):
    payload = pattern(20 * MB if size > 1000 else 2 * MB, seed=10)

    async def main():
        async with stream_family.pair(
            any_loop, client_factory=lambda: BufferedRecorder(any_loop, size, use_memoryview)
        ) as (_tr, client, sproto, _server):
            sproto.transport.write(payload)
            sproto.transport.close()
            assert await client.lost is None
            return client

    client = run(any_loop, main(), timeout=20)
    assert client.bad_sizes == []
    assert client.count == len(payload)
    assert client.hash.hexdigest() == hashlib.sha256(payload).hexdigest()
    assert client.events == ["made", "data", "eof", "lost"]


def test_buffered_protocol_on_the_server_side(any_loop, stream_family):
    payload = pattern(10 * MB, seed=11)

    async def main():
        async with stream_family.pair(
            any_loop, server_factory=lambda: BufferedRecorder(any_loop)
        ) as (tr, _client, sproto, _server):
            assert isinstance(sproto, asyncio.BufferedProtocol)
            tr.write(payload)
            tr.write_eof()
            await sproto.eof
            return sproto

    sproto = run(any_loop, main(), timeout=20)
    assert sproto.count == len(payload)
    assert sproto.hash.hexdigest() == hashlib.sha256(payload).hexdigest()


def test_set_protocol_switches_to_a_buffered_protocol(any_loop, stream_family):
    payload = pattern(4 * MB, seed=12)

    class Switcher(Recorder):
        def data_received(self, data):
            super().data_received(data)
            self.transport.set_protocol(self.next)

    async def main():
        buffered = BufferedRecorder(any_loop)

        def factory():
            proto = Switcher(any_loop)
            proto.next = buffered
            return proto

        async with stream_family.pair(any_loop, client_factory=factory) as (
            _tr,
            client,
            sproto,
            _server,
        ):
            sproto.transport.write(b"first")
            await wait_until(lambda: client.data)
            sproto.transport.write(payload)
            sproto.transport.close()
            await buffered.lost
            return client, buffered

    client, buffered = run(any_loop, main())
    first = bytes(client.data)
    assert first == b"first"
    assert buffered.count == len(payload)
    assert buffered.hash.hexdigest() == hashlib.sha256(payload).hexdigest()
    assert buffered.events == ["data", "eof", "lost"]
