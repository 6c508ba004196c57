"""What stream transports, TCP and Unix, hold and let go (every test runs on
both: the stream_family fixture): file descriptors over a thousand
connections, ResourceWarning for an unclosed transport, garbage
collection, repr, and the transport's fd kept from add_reader/add_writer,
with stock asyncio as the reference.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import weakref

import pytest
from support import collected_warnings, open_fd_count
from transport_support import (
    MB,
    BufferedRecorder,
    Recorder,
    pattern,
    run,
    wait_until,
)

# --- file descriptors ---------------------------------------------------------


class CloseOnReply(asyncio.Protocol):
    def __init__(self, loop):
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        transport.write(b"ping")

    def data_received(self, data):
        self.transport.close()

    def connection_lost(self, exc):
        self.lost.set_result(exc)


class EchoThenLose(asyncio.Protocol):
    def __init__(self, loop, lost_list, close_first=False):
        self.lost = loop.create_future()
        lost_list.append(self.lost)
        self.close_first = close_first

    def connection_made(self, transport):
        self.transport = transport
        if self.close_first:
            transport.write(b"bye")
            transport.close()

    def data_received(self, data):
        self.transport.write(data)

    def connection_lost(self, exc):
        self.lost.set_result(exc)


class WaitForEof(asyncio.Protocol):
    def __init__(self, loop):
        self.lost = loop.create_future()

    def connection_lost(self, exc):
        self.lost.set_result(exc)


@pytest.mark.parametrize("who_closes", ["client", "server"])
def test_a_thousand_connections_leak_no_fd(any_loop, stream_family, handler_calls, who_closes):
    async def main():
        gc.collect()
        before = open_fd_count()
        server_lost = []
        server = await stream_family.start_server(
            any_loop,
            lambda: EchoThenLose(any_loop, server_lost, close_first=who_closes == "server"),
        )
        address = stream_family.address(server)
        client_factory = (
            (lambda: CloseOnReply(any_loop))
            if who_closes == "client"
            else (lambda: WaitForEof(any_loop))
        )
        for _ in range(20):
            pairs = await asyncio.gather(
                *(stream_family.connect(any_loop, client_factory, address) for _ in range(50))
            )
            results = await asyncio.gather(*(proto.lost for _, proto in pairs))
            assert results == [None] * 50
            del pairs
        await wait_until(lambda: len(server_lost) == 1000 and all(f.done() for f in server_lost))
        assert all(f.result() is None for f in server_lost)
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.01)
        gc.collect()
        return before, open_fd_count()

    before, after = run(any_loop, main(), timeout=60)
    assert after == before
    assert handler_calls == []


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/self/fd")
def test_transport_fd_is_released_on_connection_lost(any_loop, stream_family):
    async def main():
        async with stream_family.pair(any_loop) as (tr, client, _sproto, _server):
            fd = tr.get_extra_info("socket").fileno()
            assert os.path.exists(f"/proc/self/fd/{fd}")
            target = os.readlink(f"/proc/self/fd/{fd}")
            tr.close()
            await client.lost
            gone = (
                not os.path.exists(f"/proc/self/fd/{fd}")
                or os.readlink(f"/proc/self/fd/{fd}") != target
            )
            return gone

    assert run(any_loop, main()) is True


def test_a_transports_fd_cannot_be_watched_directly(any_loop, stream_family):
    async def main():
        async with stream_family.pair(any_loop) as (tr, _client, sproto, _server):
            fd = tr.get_extra_info("socket").fileno()
            for method in (any_loop.add_reader, any_loop.add_writer):
                with pytest.raises(RuntimeError, match="is used by transport"):
                    method(fd, print)
            for method in (any_loop.remove_reader, any_loop.remove_writer):
                with pytest.raises(RuntimeError, match="is used by transport"):
                    method(fd)
            # the transport still works
            tr.write(b"ok")
            await wait_until(lambda: sproto.data == b"ok")

    run(any_loop, main())


# --- ResourceWarning, garbage, repr -------------------------------------------


@pytest.mark.parametrize("client_kind", ["plain", "holds-transport", "buffered"])
def test_unclosed_transport_resource_warning(any_loop, stream_family, client_kind):
    # "holds-transport": the protocol keeps its transport, a reference cycle
    # through the transport that only the garbage collector can break.
    client_factory = {
        "plain": asyncio.Protocol,
        "holds-transport": lambda: Recorder(any_loop),
        "buffered": lambda: BufferedRecorder(any_loop),
    }[client_kind]

    async def open_and_drop():
        server_protocols = []

        def factory():
            server_protocols.append(Recorder(any_loop))
            return server_protocols[-1]

        server = await stream_family.start_server(any_loop, factory)
        tr, proto = await stream_family.connect(
            any_loop, client_factory, stream_family.address(server)
        )
        # Paused, the loop holds no reference to the transport.
        tr.pause_reading()
        ref = weakref.ref(tr)
        del tr, proto
        await wait_until(lambda: server_protocols)
        return server, server_protocols[0], ref

    server, sproto, ref = run(any_loop, open_and_drop())
    with collected_warnings() as caught:
        pass
    assert ref() is None
    messages = [text for category, text in caught if issubclass(category, ResourceWarning)]
    # (the transport's socket may warn too)
    assert [m for m in messages if m.startswith("unclosed transport")], messages

    async def peer_sees_the_close():
        try:
            await sproto.lost
            assert sproto.events[-2:] == ["eof", "lost"]
        finally:
            server.close()
            await server.wait_closed()

    run(any_loop, peer_sees_the_close())


def test_closed_transport_gives_no_resource_warning(any_loop, stream_family):
    async def main():
        async with stream_family.pair(any_loop) as (tr, client, _sproto, _server):
            tr.close()
            await client.lost
            return weakref.ref(tr)

    with collected_warnings() as caught:
        ref = run(any_loop, main())
    assert ref() is None
    assert [text for _, text in caught if "unclosed transport" in text] == []


def test_closed_transports_and_protocols_are_freed(any_loop, stream_family):
    refs = []

    class Tracked(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            refs.append(weakref.ref(self))
            refs.append(weakref.ref(transport))

    async def main():
        server_protos = []

        def factory():
            server_protos.append(Tracked(any_loop))
            return server_protos[-1]

        server = await stream_family.start_server(any_loop, factory)
        address = stream_family.address(server)
        for i in range(50):
            tr, proto = await stream_family.connect(any_loop, lambda: Tracked(any_loop), address)
            tr.write(b"x" * i)
            if i % 2:
                tr.close()
            else:
                tr.abort()
            await proto.lost
        await wait_until(lambda: len(refs) == 200)
        await wait_until(lambda: all(p.lost.done() for p in server_protos))
        server_protos.clear()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.01)

    run(any_loop, main())
    gc.collect()
    alive = [r() for r in refs if r() is not None]
    assert alive == []


def test_repr_never_fails(any_loop, stream_family):
    async def main():
        async with stream_family.pair(any_loop) as (tr, client, sproto, server):
            reprs = [repr(tr), repr(sproto.transport), repr(server)]
            tr.write(pattern(8 * MB))
            reprs.append(repr(tr))
            sproto.transport.pause_reading()
            reprs.append(repr(sproto.transport))
            tr.close()
            reprs.append(repr(tr))
            tr.abort()
            await client.lost
            reprs.append(repr(tr))
            return tr, reprs

    tr, reprs = run(any_loop, main())
    any_loop.close()
    reprs.append(repr(tr))
    for r in reprs:
        assert isinstance(r, str) and r
