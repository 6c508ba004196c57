"""Async context managers (`async with`) and async iterators (`async for`):
as classes, with contextlib.asynccontextmanager, and as async generators."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from _runner import print_loop, run


class Connection:
    """An async context manager: __aenter__/__aexit__ may await."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def __aenter__(self):  # returns what `as` binds
        await asyncio.sleep(0.001)  # e.g. a handshake
        print(f"{self.name}: opened")
        return self

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        await asyncio.sleep(0.001)  # e.g. a goodbye message
        print(f"{self.name}: closed (exception: {exc!r})")
        return False  # True would swallow the exception


class Countdown:
    """An async iterator: __aiter__ returns it, __anext__ is a coroutine
    that raises StopAsyncIteration at the end."""

    def __init__(self, start: int) -> None:
        self.n = start

    def __aiter__(self) -> Countdown:
        return self

    async def __anext__(self) -> int:
        if self.n <= 0:
            raise StopAsyncIteration
        await asyncio.sleep(0.001)
        self.n -= 1
        return self.n + 1


@contextlib.asynccontextmanager
async def transaction(name: str) -> AsyncIterator[str]:
    print(f"{name}: begin")
    try:
        yield name
    except ValueError:
        print(f"{name}: rollback")
        raise
    else:
        print(f"{name}: commit")


async def ticks(label: str, count: int) -> AsyncIterator[int]:
    """An async generator: the simplest async iterator."""
    try:
        for i in range(count):
            await asyncio.sleep(0.001)
            yield i
    finally:
        print(f"{label}: generator closed")


async def main() -> None:
    print_loop()

    async with Connection("db") as conn:
        print("using", conn.name)
    try:
        async with Connection("cache"):
            raise KeyError("boom")
    except KeyError:
        print("the KeyError went through __aexit__")

    async with transaction("tx-1"):
        pass
    with contextlib.suppress(ValueError):
        async with transaction("tx-2"):
            raise ValueError("bad row")

    async for n in Countdown(3):
        print("countdown:", n)

    # Async comprehensions work on any async iterator.
    print("squares:", [i * i async for i in ticks("comprehension", 5)])

    # Leaving an async generator early: contextlib.aclosing (3.10+) closes it
    # at once, so its finally block runs at a known point.
    async with contextlib.aclosing(ticks("aclosing", 100)) as gen:
        async for i in gen:
            if i == 2:
                break
    print("after aclosing")

    # Without aclosing, the event loop's async-generator hooks close an
    # abandoned generator soon after it is garbage-collected.
    async for i in ticks("abandoned", 100):
        if i == 2:
            break
    await asyncio.sleep(0.05)
    print("after the loop closed the abandoned generator")


if __name__ == "__main__":
    run(main)
