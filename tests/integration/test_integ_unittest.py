"""unittest.IsolatedAsyncioTestCase on ferroloop: through the loop_factory
class attribute (Python 3.13+), or through the event loop policy (any
version), set in setUpClass and restored in tearDownClass."""

from __future__ import annotations

import asyncio
import sys
import unittest

import ferroloop
from integ_support import get_policy as _get_policy
from integ_support import set_policy as _set_policy


class LoopChecks:
    """Tests shared by both ways of putting IsolatedAsyncioTestCase on ferroloop."""

    async def asyncSetUp(self):
        self.setup_loop = asyncio.get_running_loop()
        self.assertIs(type(self.setup_loop), ferroloop.Loop)
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.addAsyncCleanup(self.cleanup_server)

    async def cleanup_server(self):
        self.assertIs(asyncio.get_running_loop(), self.setup_loop)
        self.server.close()
        await self.server.wait_closed()

    async def handle(self, reader, writer):
        writer.write((await reader.readline()).upper())
        await writer.drain()
        writer.close()

    async def test_loop_is_ferroloop(self):
        loop = asyncio.get_running_loop()
        self.assertIs(type(loop), ferroloop.Loop)
        self.assertIs(loop, self.setup_loop)
        self.assertTrue(loop.get_debug())  # IsolatedAsyncioTestCase runs in debug mode

    async def test_tcp_roundtrip(self):
        self.assertIs(type(asyncio.get_running_loop()), ferroloop.Loop)
        port = self.server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping\n")
        self.assertEqual(await reader.readline(), b"PING\n")
        writer.close()
        await writer.wait_closed()

    async def test_timeout_and_executor(self):
        self.assertIs(type(asyncio.get_running_loop()), ferroloop.Loop)
        with self.assertRaises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.sleep(10), 0.01)
        result = await asyncio.get_running_loop().run_in_executor(None, sum, [1, 2, 3])
        self.assertEqual(result, 6)


LOOP_FACTORY_ATTRIBUTE = unittest.skipIf(
    sys.version_info < (3, 13), "IsolatedAsyncioTestCase.loop_factory is 3.13+"
)


@LOOP_FACTORY_ATTRIBUTE
class TestLoopFactoryFunction(LoopChecks, unittest.IsolatedAsyncioTestCase):
    # A plain function as a class attribute would be bound to the test case
    # (and called with it): staticmethod() keeps it a plain function.
    loop_factory = staticmethod(ferroloop.new_event_loop)


@LOOP_FACTORY_ATTRIBUTE
class TestLoopFactoryClass(LoopChecks, unittest.IsolatedAsyncioTestCase):
    loop_factory = ferroloop.Loop  # a class is not bound: usable as it is


class TestPolicyInSetUpClass(LoopChecks, unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._saved_policy = _get_policy()
        _set_policy(ferroloop.EventLoopPolicy())

    @classmethod
    def tearDownClass(cls):
        _set_policy(cls._saved_policy)
        super().tearDownClass()
