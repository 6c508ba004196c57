"""Helpers for the integration tests (imported as a plain module)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import warnings

import ferroloop

# Every coroutine a test runs gets this long before it fails the test:
# a hang is a failure, not a stuck suite.
TIMEOUT = 15.0


def assert_on_ferroloop() -> asyncio.AbstractEventLoop:
    """Fail unless the running loop is ferroloop's; return it."""
    loop = asyncio.get_running_loop()
    assert type(loop) is ferroloop.Loop, f"running on {type(loop)!r}, not ferroloop.Loop"
    return loop


def run(coro):
    """Run a coroutine on a fresh ferroloop loop (ferroloop.run), with a timeout."""

    async def main():
        assert_on_ferroloop()
        return await asyncio.wait_for(coro, TIMEOUT)

    return ferroloop.run(main())


PY311 = sys.version_info >= (3, 11)
PY312 = sys.version_info >= (3, 12)
PY313 = sys.version_info >= (3, 13)


@contextlib.asynccontextmanager
async def serving(app):
    """Serve an aiohttp.web app on 127.0.0.1, an ephemeral port; yield its
    base URL."""
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        assert host == "127.0.0.1" and port > 0
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def get_policy() -> asyncio.AbstractEventLoopPolicy:
    """asyncio's event loop policy, without 3.14's DeprecationWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return asyncio.get_event_loop_policy()


def set_policy(policy) -> None:
    """Sets asyncio's event loop policy, without 3.14's DeprecationWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(policy)
