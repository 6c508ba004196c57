"""httpx.AsyncClient (httpcore on anyio's asyncio backend) on ferroloop,
against a local aiohttp.web server."""

from __future__ import annotations

import asyncio

import httpx
from aiohttp import web
from integ_support import assert_on_ferroloop, run, serving

RELEASE = web.AppKey("release", asyncio.Event)


async def echo_json(request: web.Request) -> web.Response:
    assert_on_ferroloop()
    body = await request.json()
    return web.json_response(
        {"method": request.method, "body": body, "agent": request.headers["User-Agent"]}
    )


async def numbers(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for i in range(int(request.query["n"])):
        await resp.write(f"{i}\n".encode())
        await asyncio.sleep(0)
    await resp.write_eof()
    return resp


async def slow(request: web.Request) -> web.Response:
    await request.app[RELEASE].wait()
    return web.Response(text="late")


async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/numbers?n=3")


def make_app() -> web.Application:
    app = web.Application()
    app[RELEASE] = asyncio.Event()
    app.router.add_post("/echo", echo_json)
    app.router.add_put("/echo", echo_json)
    app.router.add_get("/numbers", numbers)
    app.router.add_get("/slow", slow)
    app.router.add_get("/redirect", redirect)
    return app


def test_async_client_requests():
    async def main():
        assert_on_ferroloop()
        app = make_app()
        async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
            r = await client.post("/echo", json={"x": [1, 2, 3]})
            assert r.status_code == 200
            assert r.json()["body"] == {"x": [1, 2, 3]}
            assert r.json()["agent"].startswith("python-httpx/")

            # Concurrent requests over the client's connection pool.
            rs = await asyncio.gather(*(client.put("/echo", json=i) for i in range(40)))
            assert [r.json() for r in rs] == [
                {"method": "PUT", "body": i, "agent": rs[0].json()["agent"]} for i in range(40)
            ]

            r = await client.get("/redirect", follow_redirects=True)
            assert r.status_code == 200 and r.text == "0\n1\n2\n"
            assert [h.status_code for h in r.history] == [302]

            assert (await client.get("/nope")).status_code == 404

            try:
                await client.get("/slow", timeout=0.2)
            except httpx.ReadTimeout:
                pass
            else:  # pragma: no cover
                raise AssertionError("no ReadTimeout")
            finally:
                app[RELEASE].set()

    run(main())


def test_async_client_streaming_response():
    async def main():
        assert_on_ferroloop()
        async with serving(make_app()) as url, httpx.AsyncClient(base_url=url) as client:
            async with client.stream("GET", "/numbers", params={"n": 2000}) as r:
                assert r.status_code == 200
                assert r.headers["transfer-encoding"] == "chunked"
                lines = [line async for line in r.aiter_lines()]
            assert lines == [str(i) for i in range(2000)]

            # A streamed request body.
            async def body():
                yield b'{"k": ['
                for i in range(100):
                    yield b"%d," % i
                    await asyncio.sleep(0)
                yield b"100]}"

            r = await client.post("/echo", content=body())
            assert r.json()["body"] == {"k": list(range(101))}

    run(main())
