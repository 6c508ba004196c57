"""aiohttp's client and server (aiohttp.web) on ferroloop, over 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket

import aiohttp
import ferroloop
from aiohttp import web
from integ_support import assert_on_ferroloop, run, serving

ACKS = web.AppKey("acks", list)
GOT = web.AppKey("got", list)
CLOSE_CODES = web.AppKey("close_codes", asyncio.Queue)
CLIENT = web.AppKey("client", asyncio.Task)


def test_get_and_post_json():
    seen_loops = []

    async def hello(request: web.Request) -> web.Response:
        seen_loops.append(type(asyncio.get_running_loop()))
        return web.json_response({"hello": request.query.get("name", "?")})

    async def total(request: web.Request) -> web.Response:
        seen_loops.append(type(asyncio.get_running_loop()))
        body = await request.json()
        return web.json_response({"n": len(body["xs"]), "sum": sum(body["xs"])}, status=201)

    async def main():
        assert_on_ferroloop()
        app = web.Application()
        app.router.add_get("/hello", hello)
        app.router.add_post("/sum", total)
        async with serving(app) as url, aiohttp.ClientSession() as session:
            async with session.get(f"{url}/hello", params={"name": "ferro"}) as resp:
                assert resp.status == 200
                assert resp.content_type == "application/json"
                assert await resp.json() == {"hello": "ferro"}
            xs = list(range(1000))
            async with session.post(f"{url}/sum", json={"xs": xs}) as resp:
                assert resp.status == 201
                assert await resp.json() == {"n": 1000, "sum": sum(xs)}
            # Many requests at once, over the session's connection pool.
            resps = await asyncio.gather(
                *(session.get(f"{url}/hello", params={"name": str(i)}) for i in range(50))
            )
            bodies = [await r.json() for r in resps]
            for r in resps:
                r.release()
            assert bodies == [{"hello": str(i)} for i in range(50)]
            async with session.get(f"{url}/missing") as resp:
                assert resp.status == 404

    run(main())
    assert seen_loops and set(seen_loops) == {ferroloop.Loop}
    assert len(seen_loops) == 52


def test_streaming_response_is_read_incrementally():
    # The server sends chunk i+1 only after the client has read chunk i: a
    # client that waited for the whole body would never get it.
    n = 20

    async def stream(request: web.Request) -> web.StreamResponse:
        assert_on_ferroloop()
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(n):
            await resp.write(f"line {i}\n".encode())
            await asyncio.wait_for(request.app[ACKS][i].wait(), 5)
        await resp.write_eof()
        return resp

    async def main():
        assert_on_ferroloop()
        app = web.Application()
        app[ACKS] = [asyncio.Event() for _ in range(n)]
        app.router.add_get("/stream", stream)
        async with (
            serving(app) as url,
            aiohttp.ClientSession() as session,
            session.get(f"{url}/stream") as resp,
        ):
            assert resp.status == 200
            assert resp.headers["Transfer-Encoding"] == "chunked"
            lines = []
            for i in range(n):
                line = await resp.content.readline()
                lines.append(line)
                app[ACKS][i].set()
            assert await resp.content.read() == b""
            assert resp.content.at_eof()
        assert lines == [f"line {i}\n".encode() for i in range(n)]

    run(main())


def test_streaming_request_body():
    # The client sends part i+1 only after the server has read part i.
    n = 20
    parts = [os.urandom(1000).replace(b"\n", b"x") + b"\n" for _ in range(n)]

    async def upload(request: web.Request) -> web.Response:
        assert_on_ferroloop()
        assert request.headers.get("Transfer-Encoding") == "chunked"
        digest = hashlib.sha256()
        for i in range(n):
            part = await request.content.readline()
            assert part == parts[i]
            digest.update(part)
            request.app[GOT][i].set()
        assert await request.content.read() == b""
        return web.json_response({"sha256": digest.hexdigest(), "parts": n})

    async def main():
        assert_on_ferroloop()
        app = web.Application()
        app[GOT] = [asyncio.Event() for _ in range(n)]
        app.router.add_post("/upload", upload)

        async def body():
            for i, part in enumerate(parts):
                yield part
                await asyncio.wait_for(app[GOT][i].wait(), 5)

        async with (
            serving(app) as url,
            aiohttp.ClientSession() as session,
            session.post(f"{url}/upload", data=body()) as resp,
        ):
            assert resp.status == 200
            result = await resp.json()
        assert result == {"sha256": hashlib.sha256(b"".join(parts)).hexdigest(), "parts": n}

    run(main())


def test_websocket_echo_and_close_codes():
    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        assert_on_ferroloop()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    if msg.data == "close-from-server":
                        await ws.close(code=4002, message=b"server says bye")
                        break
                    await ws.send_str("echo:" + msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    await ws.send_bytes(msg.data[::-1])
        finally:
            request.app[CLOSE_CODES].put_nowait(ws.close_code)
        return ws

    async def main():
        assert_on_ferroloop()
        app = web.Application()
        app[CLOSE_CODES] = close_codes = asyncio.Queue()
        app.router.add_get("/ws", ws_handler)
        async with serving(app) as url, aiohttp.ClientSession() as session:
            # Client-initiated close, with a code the server sees.
            async with session.ws_connect(f"{url}/ws") as ws:
                for i in range(100):
                    await ws.send_str(f"m{i}")
                for i in range(100):
                    assert await ws.receive_str() == f"echo:m{i}"
                payload = bytes(range(256)) * 64
                await ws.send_bytes(payload)
                assert await ws.receive_bytes() == payload[::-1]
                await ws.send_json({"a": [1, 2]})
                assert json.loads((await ws.receive_str())[len("echo:") :]) == {"a": [1, 2]}
                assert await ws.close(code=4001, message=b"client says bye")
                # The client's close_code is the code of the server's reply.
                assert ws.closed and ws.close_code == 1000
            assert await close_codes.get() == 4001
            # Server-initiated close: the client sees the server's code, the
            # server the code of the client's reply.
            async with session.ws_connect(f"{url}/ws") as ws:
                await ws.send_str("close-from-server")
                msg = await ws.receive()
                assert msg.type == aiohttp.WSMsgType.CLOSE
                assert msg.data == 4002 and msg.extra == "server says bye"
                await ws.close()
                assert ws.close_code == 4002
            assert await close_codes.get() == 1000

    run(main())


def test_web_run_app_on_a_ferroloop_loop():
    # web.run_app(loop=...) runs the app on the given loop (it closes it at
    # the end); with handle_signals=True, SIGTERM stops it through the loop's
    # add_signal_handler.
    results = {}

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=type(asyncio.get_running_loop()).__name__)

    async def client(port: int) -> None:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/") as resp,
            ):
                results["body"] = await resp.text()
            results["client_loop"] = type(asyncio.get_running_loop())
        finally:
            # Only if aiohttp installed its handler: SIGTERM's default
            # action would kill the test run.
            if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                results["error"] = "no SIGTERM handler installed"
                raise web.GracefulExit

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]

    async def on_startup(app: web.Application) -> None:
        assert_on_ferroloop()
        app[CLIENT] = asyncio.get_running_loop().create_task(client(port))

    app = web.Application()
    app.router.add_get("/", hello)
    app.on_startup.append(on_startup)
    loop = ferroloop.new_event_loop()
    timer = loop.call_later(15, loop.stop)  # a watchdog: the test fails, not hangs
    try:
        web.run_app(app, sock=sock, loop=loop, handle_signals=True, print=None)
    finally:
        timer.cancel()
        asyncio.set_event_loop(None)  # run_app leaves its (closed) loop set
        sock.close()
    assert loop.is_closed()
    assert results == {"body": "Loop", "client_loop": ferroloop.Loop}
    assert type(loop) is ferroloop.Loop
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
