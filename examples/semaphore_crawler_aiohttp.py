"""A crawler fetching many URLs with aiohttp, at most 3 at a time
(asyncio.Semaphore). It crawls a local aiohttp server it starts itself."""

# requires: aiohttp

from __future__ import annotations

import asyncio

import aiohttp
from _runner import print_loop, run
from aiohttp import web

LIMIT = 3
PAGES = 12


class Stats:
    """How many requests the server is handling right now, and the most ever."""

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0


async def start_server(stats: Stats) -> tuple[web.AppRunner, str]:
    async def page(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        stats.current += 1
        stats.peak = max(stats.peak, stats.current)
        try:
            await asyncio.sleep(0.01)  # a slow page
            if n == 7:
                raise web.HTTPNotFound()
            return web.Response(text=f"page {n} " + "x" * n)
        finally:
            stats.current -= 1

    app = web.Application()
    app.router.add_get("/page/{n}", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)  # port 0: any free port
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def fetch(
    session: aiohttp.ClientSession, semaphore: asyncio.Semaphore, url: str
) -> tuple[int, int]:
    # Waits while LIMIT fetches are in progress, then holds one of the slots
    # until the response has been read.
    async with semaphore, session.get(url) as response:
        body = await response.text()
        return response.status, len(body)


async def main() -> None:
    print_loop()
    stats = Stats()
    runner, base = await start_server(stats)
    try:
        semaphore = asyncio.Semaphore(LIMIT)
        paths = [f"/page/{n}" for n in range(PAGES)]
        async with aiohttp.ClientSession(base) as session:
            results = await asyncio.gather(*(fetch(session, semaphore, p) for p in paths))
    finally:
        await runner.cleanup()

    for path, (status, length) in sorted(zip(paths, results), key=lambda r: int(r[0][6:])):
        print(f"{path}: HTTP {status}, {length} bytes")
    print(f"fetched {len(results)} pages, {sum(s == 200 for s, _ in results)} OK")
    print(f"server never handled more than {LIMIT} at once:", stats.peak <= LIMIT)


if __name__ == "__main__":
    run(main)
