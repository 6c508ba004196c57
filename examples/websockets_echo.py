"""A WebSocket echo server and clients with the websockets library's
asyncio API (websockets >= 13: websockets.asyncio.server / .client)."""

# requires: websockets.asyncio.server

from __future__ import annotations

import asyncio

from _runner import print_loop, run
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosedOK


async def echo(ws: ServerConnection) -> None:
    """Called for each connection; returning closes it."""
    async for message in ws:  # ends when the client closes the connection
        await ws.send(message)


async def client(uri: str, name: str) -> list[str]:
    replies = []
    async with connect(uri) as ws:
        for i in range(3):
            await ws.send(f"{name} message {i}")
            replies.append(await ws.recv())
        await ws.send(b"\x00\x01binary")  # bytes go as binary frames
        replies.append(repr(await ws.recv()))
    return replies


async def main() -> None:
    print_loop()
    # Port 0: the OS picks a free port.
    async with serve(echo, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        uri = f"ws://127.0.0.1:{port}"
        replies = await asyncio.gather(*(client(uri, f"client-{i}") for i in range(3)))
        for reply in sorted(r for rs in replies for r in rs):
            print("echoed:", reply)

        # A closed connection: recv() raises ConnectionClosedOK.
        async with connect(uri) as ws:
            await ws.close()
            try:
                await ws.recv()
            except ConnectionClosedOK as exc:
                print("after close():", type(exc).__name__, exc.rcvd.code)


if __name__ == "__main__":
    run(main)
