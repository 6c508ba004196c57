"""Failures on a stream transport, TCP and Unix (every test runs on both: the
stream_family fixture): exceptions raised by protocol callbacks (and by a
BufferedProtocol's buffers), which go to the loop's exception handler or
propagate, and a peer that goes away during a large write, with stock
asyncio as the reference.

https://docs.python.org/3/library/asyncio-protocol.html
"""

from __future__ import annotations

import asyncio

import pytest
from transport_support import (
    MB,
    BufferedRecorder,
    FlowClient,
    Recorder,
    pattern,
    read_all_then_resumed,
    recv_exactly,
    reset_close,
    run,
    wait_until,
)

# --- exceptions in protocol callbacks -----------------------------------------


class Raising(Recorder):
    def __init__(self, loop, where):
        super().__init__(loop)
        self.where = where
        self.error = None

    def data_received(self, data):
        super().data_received(data)
        if self.where == "data":
            self.error = ZeroDivisionError("in data_received")
            raise self.error

    def eof_received(self):
        super().eof_received()
        if self.where == "eof":
            self.error = LookupError("in eof_received")
            raise self.error


@pytest.mark.parametrize(
    "where, message",
    [
        ("data", "Fatal error: protocol.data_received() call failed."),
        ("eof", "Fatal error: protocol.eof_received() call failed."),
    ],
)
def test_exception_in_protocol_callback_goes_to_the_handler(
    any_loop, stream_family, handler_calls, where, message
):
    async def main():
        async with stream_family.pair(
            any_loop, server_factory=lambda: Raising(any_loop, where)
        ) as (tr, client, sproto, _server):
            tr.write(b"payload")
            if where == "eof":
                tr.write_eof()
            lost_exc = await sproto.lost
            assert sproto.transport.is_closing()
            assert await client.lost is None  # the server side closed
            return lost_exc, sproto

    lost_exc, sproto = run(any_loop, main())
    assert len(handler_calls) == 1
    context = handler_calls[0]
    assert context["message"] == message
    assert context["exception"] is sproto.error
    assert context["transport"] is sproto.transport
    assert context["protocol"] is sproto
    assert lost_exc is sproto.error
    assert sproto.events[-1] == "lost"
    assert sproto.events.count("lost") == 1
    assert any_loop.run_until_complete(asyncio.sleep(0, "alive")) == "alive"


def test_exception_in_connection_lost_still_releases_the_socket(
    any_loop, stream_family, handler_calls
):
    class BadLost(Recorder):
        def connection_lost(self, exc):
            super().connection_lost(exc)
            raise RuntimeError("in connection_lost")

    async def main():
        async with stream_family.pair(any_loop, client_factory=lambda: BadLost(any_loop)) as (
            tr,
            client,
            sproto,
            _server,
        ):
            fd = tr.get_extra_info("socket").fileno()
            tr.close()
            await client.lost
            await sproto.lost  # the socket was closed: the peer got EOF
            await asyncio.sleep(0.01)
            return fd

    fd = run(any_loop, main())
    assert [str(c.get("exception")) for c in handler_calls] == ["in connection_lost"]
    assert fd >= 0


@pytest.mark.parametrize("where", ["pause_writing", "resume_writing"])
def test_exception_in_pause_or_resume_writing_goes_to_the_handler(
    any_loop, stream_family, handler_calls, where
):
    payload = pattern(8 * MB, seed=14)

    class BadFlow(FlowClient):
        def pause_writing(self):
            super().pause_writing()
            if where == "pause_writing":
                self.error = ValueError("in pause_writing")
                raise self.error

        def resume_writing(self):
            super().resume_writing()
            if where == "resume_writing":
                self.error = ValueError("in resume_writing")
                raise self.error

    async def main():
        async with stream_family.raw_peer(any_loop, lambda: BadFlow(any_loop)) as (
            tr,
            client,
            peer,
        ):
            tr.write(payload)
            await read_all_then_resumed(any_loop, peer, client, payload)
            assert not tr.is_closing()  # the transport carries on
            tr.write(b"more")
            assert await recv_exactly(any_loop, peer, 4) == b"more"
            return tr, client

    tr, client = run(any_loop, main())
    assert [kind for kind, _ in client.flow] == ["pause", "resume"]
    assert len(handler_calls) == 1
    context = handler_calls[0]
    assert context["message"] == f"protocol.{where}() failed"
    assert context["exception"] is client.error
    assert context["transport"] is tr
    assert context["protocol"] is client


def test_exception_in_connection_made_goes_to_the_handler(any_loop, stream_family, handler_calls):
    class BadMade(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            self.error = RuntimeError("in connection_made")
            raise self.error

    async def main():
        async with stream_family.pair(any_loop, server_factory=lambda: BadMade(any_loop)) as (
            tr,
            _client,
            sproto,
            _server,
        ):
            # asyncio reports the error and carries on: reading starts anyway.
            tr.write(b"still delivered")
            await wait_until(lambda: sproto.data == b"still delivered")
            assert not sproto.transport.is_closing()
            return sproto

    sproto = run(any_loop, main())
    assert [c.get("exception") for c in handler_calls] == [sproto.error]


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_and_system_exit_in_data_received_propagate(
    any_loop, stream_family, exc_type
):
    """Unlike other exceptions, these are not handed to the exception handler:
    they propagate out of run_until_complete, and the loop stays usable."""

    class Interrupting(Recorder):
        def data_received(self, data):
            super().data_received(data)
            raise exc_type("from data_received")

    async def setup():
        protos = []

        def factory():
            protos.append(Interrupting(any_loop))
            return protos[-1]

        server = await stream_family.start_server(any_loop, factory)
        tr, client = await stream_family.connect(
            any_loop, lambda: Recorder(any_loop), stream_family.address(server)
        )
        await wait_until(lambda: protos and protos[0].transport is not None)
        return server, tr, client, protos[0]

    server, tr, client, sproto = run(any_loop, setup())
    tr.write(b"interrupt me")
    never = any_loop.create_future()
    timer = any_loop.call_later(3, never.set_result, "not interrupted")
    try:
        with pytest.raises(exc_type, match="from data_received"):
            any_loop.run_until_complete(never)
    finally:
        timer.cancel()

    async def cleanup():
        tr.close()
        sproto.transport.close()
        server.close()
        await server.wait_closed()
        await client.lost
        return "usable"

    assert run(any_loop, cleanup()) == "usable"


# --- BufferedProtocol failures ------------------------------------------------


def fail_a_read(loop, stream_family, server_factory):
    """Runs a pair whose server protocol fails on the first read (the
    client writes to it); returns (the exception connection_lost got, the
    server protocol). The server's transport closes; the client sees the
    connection go away: a RST rather than a FIN when the data that
    triggered the failure was never read."""

    async def main():
        async with stream_family.pair(loop, server_factory=server_factory) as (
            tr,
            client,
            sproto,
            _server,
        ):
            tr.write(b"trigger a read")
            lost_exc = await sproto.lost
            assert sproto.transport.is_closing()
            peer_exc = await client.lost
            assert peer_exc is None or isinstance(peer_exc, ConnectionResetError)
            return lost_exc, sproto

    return run(loop, main())


class FailingBuffered(BufferedRecorder):
    def __init__(self, loop, mode):
        super().__init__(loop)
        self.mode = mode
        self.error = None

    def get_buffer(self, sizehint):
        if self.mode == "empty":
            return bytearray()
        if self.mode == "raise":
            self.error = ValueError("no buffer for you")
            raise self.error
        return super().get_buffer(sizehint)

    def buffer_updated(self, nbytes):
        if self.mode == "updated":
            self.error = KeyError("bad update")
            raise self.error
        super().buffer_updated(nbytes)


@pytest.mark.parametrize(
    "mode, message",
    [
        ("empty", "Fatal error: protocol.get_buffer() call failed."),
        ("raise", "Fatal error: protocol.get_buffer() call failed."),
        ("updated", "Fatal error: protocol.buffer_updated() call failed."),
    ],
)
def test_buffered_protocol_errors_close_the_transport(
    any_loop, stream_family, handler_calls, mode, message
):
    lost_exc, sproto = fail_a_read(any_loop, stream_family, lambda: FailingBuffered(any_loop, mode))
    assert len(handler_calls) == 1
    context = handler_calls[0]
    assert context["message"] == message
    if mode == "empty":
        assert type(context["exception"]) is RuntimeError
        assert str(context["exception"]) == "get_buffer() returned an empty buffer"
    else:
        assert context["exception"] is sproto.error
    assert context["transport"] is sproto.transport
    assert context["protocol"] is sproto
    assert lost_exc is context["exception"]
    # The loop keeps running.
    assert any_loop.run_until_complete(asyncio.sleep(0, "alive")) == "alive"


def test_buffered_protocol_with_a_read_only_buffer(any_loop, stream_family, handler_calls):
    class ReadOnly(BufferedRecorder):
        def get_buffer(self, sizehint):
            return b"\0" * 1024  # bytes: recv_into cannot fill it

    exc, sproto = fail_a_read(any_loop, stream_family, lambda: ReadOnly(any_loop))
    assert isinstance(exc, TypeError)
    assert len(handler_calls) == 1
    assert handler_calls[0]["message"] == "Fatal read error on socket transport"
    assert handler_calls[0]["exception"] is exc
    assert handler_calls[0]["protocol"] is sproto
    assert sproto.count == 0


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: None, "Fatal error: protocol.get_buffer() call failed."),  # len() fails
        (lambda: [0] * 16, "Fatal read error on socket transport"),  # not a buffer
        (lambda: "text", "Fatal read error on socket transport"),
    ],
    ids=["None", "list", "str"],
)
def test_buffered_protocol_get_buffer_returns_a_non_buffer(
    any_loop, stream_family, handler_calls, make, message
):
    class NotABuffer(BufferedRecorder):
        def get_buffer(self, sizehint):
            return make()

    exc, _sproto = fail_a_read(any_loop, stream_family, lambda: NotABuffer(any_loop))
    assert isinstance(exc, TypeError)
    assert [(c["message"], c["exception"]) for c in handler_calls] == [(message, exc)]


# --- the peer goes away -------------------------------------------------------


def test_peer_reset_during_a_large_write(any_loop, stream_family, handler_calls):
    async def main():
        async with stream_family.raw_peer(any_loop) as (tr, client, peer):
            payload = pattern(50 * MB, seed=2)
            tr.write(payload)
            got = await recv_exactly(any_loop, peer, 1 * MB)
            assert got == payload[: 1 * MB]
            reset_close(peer)
            exc = await client.lost
            assert isinstance(exc, OSError), exc
            assert client.events == ["made", "lost"]
            assert tr.is_closing()
            assert tr.get_write_buffer_size() == 0
            tr.write(b"into the void")  # ignored, no exception
            return True

    assert run(any_loop, main()) is True
    # The loop keeps running.
    assert any_loop.run_until_complete(asyncio.sleep(0.01, "alive")) == "alive"
    assert handler_calls == []
