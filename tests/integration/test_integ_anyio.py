"""anyio's asyncio backend running on ferroloop.

anyio.run(..., backend="asyncio", backend_options={"loop_factory": ...})
takes a loop factory on every supported Python (anyio backports
asyncio.Runner for 3.10); anyio's pytest plugin takes the same options
through the `anyio_backend` fixture.
"""

from __future__ import annotations

import asyncio
import sys
import threading

import anyio
import anyio.from_thread
import anyio.to_thread
import ferroloop
import pytest
from anyio.abc import SocketAttribute
from integ_support import TIMEOUT, assert_on_ferroloop

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

BACKEND_OPTIONS = {"loop_factory": ferroloop.new_event_loop}


def anyio_run(func):
    async def main():
        assert_on_ferroloop()
        with anyio.fail_after(TIMEOUT):
            return await func()

    return anyio.run(main, backend="asyncio", backend_options=BACKEND_OPTIONS)


def test_task_group_cancellation():
    async def main():
        assert_on_ferroloop()
        cancelled = []

        async def sleeper(i: int, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
            task_status.started(i)
            try:
                await anyio.sleep(3600)
            except anyio.get_cancelled_exc_class():
                cancelled.append(i)
                raise

        async with anyio.create_task_group() as tg:
            started = [await tg.start(sleeper, i) for i in range(5)]
            await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        assert started == list(range(5))
        assert sorted(cancelled) == list(range(5))

        # An error in one task cancels its siblings and is raised in a group.
        finished = []

        async def failing() -> None:
            await anyio.sleep(0.01)
            raise ValueError("boom")

        async def sibling() -> None:
            try:
                await anyio.sleep(3600)
            finally:
                finished.append("sibling")

        with pytest.raises(ExceptionGroup) as info:
            async with anyio.create_task_group() as tg:
                tg.start_soon(sibling)
                tg.start_soon(failing)
        assert [repr(e) for e in info.value.exceptions] == [repr(ValueError("boom"))]
        assert finished == ["sibling"]

        # Timeouts.
        with anyio.move_on_after(0.02) as scope:
            await anyio.sleep(3600)
        assert scope.cancel_called and scope.cancelled_caught
        with pytest.raises(TimeoutError):
            with anyio.fail_after(0.02):
                await anyio.sleep(3600)

        # A shielded scope runs to the end inside a cancelled one.
        shielded = []
        with anyio.CancelScope() as outer:
            outer.cancel()
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.01)
                shielded.append("ran")
            await anyio.sleep(3600)
        assert shielded == ["ran"] and outer.cancelled_caught
        return type(asyncio.get_running_loop())

    assert anyio_run(main) is ferroloop.Loop


def test_memory_object_streams():
    async def main():
        assert_on_ferroloop()
        received = []
        send, receive = anyio.create_memory_object_stream[int](0)  # unbuffered

        async def producer(stream, start: int) -> None:
            async with stream:
                for i in range(start, start + 500):
                    await stream.send(i)

        async def consumer(stream) -> None:
            async with stream:
                async for item in stream:
                    received.append(item)

        async with anyio.create_task_group() as tg:
            # Two producers, each on its own clone; the stream ends when
            # every send side is closed.
            tg.start_soon(producer, send.clone(), 0)
            tg.start_soon(producer, send.clone(), 500)
            send.close()
            tg.start_soon(consumer, receive)
        assert sorted(received) == list(range(1000))
        assert [x for x in received if x < 500] == list(range(500))  # per-producer order

        # A buffered stream, and its errors.
        send, receive = anyio.create_memory_object_stream[str](3)
        for s in "abc":
            send.send_nowait(s)
        with pytest.raises(anyio.WouldBlock):
            send.send_nowait("d")
        assert [receive.receive_nowait() for _ in range(3)] == ["a", "b", "c"]
        send.close()
        with pytest.raises(anyio.EndOfStream):
            await receive.receive()
        receive.close()
        return type(asyncio.get_running_loop())

    assert anyio_run(main) is ferroloop.Loop


def test_tcp_streams():
    async def handle(client) -> None:
        assert_on_ferroloop()
        async with client:
            async for chunk in client:
                await client.send(chunk.upper())

    async def main():
        assert_on_ferroloop()
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        port = listener.extra(SocketAttribute.local_port)
        assert port > 0
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handle)

            async def one_client(k: int) -> bytes:
                async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                    assert stream.extra(SocketAttribute.remote_port) == port
                    payload = f"client {k} ".encode() * 2000
                    await stream.send(payload)
                    got = b""
                    while len(got) < len(payload):
                        got += await stream.receive()
                    await stream.send_eof()
                    with pytest.raises(anyio.EndOfStream):
                        await stream.receive()
                    return got

            results = await asyncio.gather(*(one_client(k) for k in range(8)))
            assert results == [f"CLIENT {k} ".encode() * 2000 for k in range(8)]
            tg.cancel_scope.cancel()
        return type(asyncio.get_running_loop())

    assert anyio_run(main) is ferroloop.Loop


def test_to_thread_and_back():
    async def main():
        loop = assert_on_ferroloop()
        main_thread = threading.get_ident()

        def blocking(x: int) -> tuple[int, int, str]:
            # Back into the loop's thread from the worker thread.
            name = anyio.from_thread.run_sync(lambda: type(asyncio.get_running_loop()).__name__)
            return x * x, threading.get_ident(), name

        results = await asyncio.gather(*(anyio.to_thread.run_sync(blocking, i) for i in range(10)))
        assert [r[0] for r in results] == [i * i for i in range(10)]
        assert all(r[1] != main_thread for r in results)
        assert {r[2] for r in results} == {"Loop"}

        # A limiter of 1 runs the calls one at a time.
        limiter = anyio.CapacityLimiter(1)
        running = []
        peak = []

        def tracked() -> None:
            running.append(1)
            peak.append(len(running))
            anyio.from_thread.run(anyio.sleep, 0.005)
            running.pop()

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(lambda: anyio.to_thread.run_sync(tracked, limiter=limiter))
        assert peak == [1] * 5
        assert asyncio.get_running_loop() is loop
        return type(loop)

    assert anyio_run(main) is ferroloop.Loop


# anyio's pytest plugin: the `anyio_backend` fixture carries the options.
@pytest.fixture
def anyio_backend():
    return "asyncio", BACKEND_OPTIONS


@pytest.mark.anyio
async def test_anyio_pytest_plugin():
    assert_on_ferroloop()
    send, receive = anyio.create_memory_object_stream[int](10)
    async with send, receive:
        await send.send(42)
        assert await receive.receive() == 42
    assert await anyio.to_thread.run_sync(sum, [1, 2, 3]) == 6
