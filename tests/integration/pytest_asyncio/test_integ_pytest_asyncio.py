"""pytest-asyncio tests, their async fixtures included, run on ferroloop
(see this directory's conftest.py)."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import ferroloop
import pytest
import pytest_asyncio


@pytest.mark.asyncio
async def test_runs_on_ferroloop():
    assert type(asyncio.get_running_loop()) is ferroloop.Loop
    await asyncio.sleep(0.001)
    assert await asyncio.gather(*(asyncio.sleep(0, i) for i in range(3))) == [0, 1, 2]


@pytest_asyncio.fixture
async def echo_server():
    """A TCP echo server on 127.0.0.1, started on the test's loop."""
    loop = asyncio.get_running_loop()
    assert type(loop) is ferroloop.Loop

    async def handle(reader, writer):
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield loop, server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.mark.asyncio
async def test_async_fixture_shares_the_loop(echo_server):
    fixture_loop, port = echo_server
    assert asyncio.get_running_loop() is fixture_loop
    assert type(fixture_loop) is ferroloop.Loop
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"hello ferroloop\n")
    await writer.drain()
    assert await reader.readline() == b"hello ferroloop\n"
    writer.close()
    await writer.wait_closed()


@pytest.mark.asyncio(loop_scope="class")
class TestClassScopedLoop:
    loops: ClassVar[list] = []

    async def test_first(self):
        self.loops.append(asyncio.get_running_loop())
        assert type(self.loops[0]) is ferroloop.Loop

    async def test_second_uses_the_same_loop(self):
        self.loops.append(asyncio.get_running_loop())
        assert type(self.loops[-1]) is ferroloop.Loop
        assert len(self.loops) == 2 and self.loops[0] is self.loops[1]
