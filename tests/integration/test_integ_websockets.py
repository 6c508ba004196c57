"""The websockets library (its asyncio implementation) on ferroloop."""

from __future__ import annotations

import asyncio

import ferroloop
from integ_support import assert_on_ferroloop, run
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed, ConnectionClosedError


async def echo(ws) -> None:
    assert_on_ferroloop()
    async for message in ws:
        await ws.send(message)


def test_echo_many_messages_text_and_binary():
    async def main():
        assert_on_ferroloop()
        async with serve(echo, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}") as ws:
                # Pipelined: all sent before any is read back.
                for i in range(500):
                    await ws.send(f"text {i}")
                assert [await ws.recv() for _ in range(500)] == [f"text {i}" for i in range(500)]
                blobs = [bytes([i % 256]) * (i * 37 % 5000 + 1) for i in range(200)]
                for blob in blobs:
                    await ws.send(blob)
                    assert await ws.recv() == blob
                big = bytes(range(256)) * 4096  # 1 MiB, fragmented on the wire
                await ws.send(big)
                assert await ws.recv() == big

                # Several clients at once.
                async def one_client(k):
                    async with connect(f"ws://127.0.0.1:{port}") as c:
                        for i in range(50):
                            await c.send(f"{k}:{i}")
                            assert await c.recv() == f"{k}:{i}"
                        return k

                assert await asyncio.gather(*(one_client(k) for k in range(10))) == list(range(10))

    run(main())


def test_ping_and_close_codes():
    closed = []

    async def handler(ws) -> None:
        assert_on_ferroloop()
        try:
            async for message in ws:
                if message == "bye, server":
                    await ws.close(code=4010, reason="server closing")
                    return
                await ws.send(message)
        except ConnectionClosedError:
            pass  # a close code other than 1000/1001 ends `async for` with this
        finally:
            closed.append((ws.close_code, ws.close_reason))

    async def main():
        assert_on_ferroloop()
        async with serve(handler, "127.0.0.1", 0, ping_interval=None) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}", ping_interval=None) as ws:
                pong_waiter = await ws.ping(b"are you there")
                latency = await asyncio.wait_for(pong_waiter, 5)
                assert 0 <= latency < 5
                await ws.send("still here")
                assert await ws.recv() == "still here"
                await ws.close(code=4000, reason="client done")
                assert ws.close_code == 4000 and ws.close_reason == "client done"
            # The server closes: the client's recv raises ConnectionClosed.
            async with connect(f"ws://127.0.0.1:{port}") as ws:
                await ws.send("bye, server")
                try:
                    await ws.recv()
                except ConnectionClosed as exc:
                    assert exc.rcvd.code == 4010 and exc.rcvd.reason == "server closing"
                else:  # pragma: no cover
                    raise AssertionError("recv() did not raise ConnectionClosed")
                assert ws.close_code == 4010
            # Both handlers have returned once serve() has closed the server.
        return type(asyncio.get_running_loop())

    assert run(main()) is ferroloop.Loop
    assert sorted(closed) == [(4000, "client done"), (4010, "server closing")]
