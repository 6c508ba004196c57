"""The standard library's own entry points with a loop factory."""

from __future__ import annotations

import asyncio
import sys

import ferroloop
import pytest


async def loop_and_sum(xs):
    loop = asyncio.get_running_loop()
    assert type(loop) is ferroloop.Loop
    total = await loop.run_in_executor(None, sum, xs)
    return loop, total


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Runner is 3.11+")
def test_asyncio_runner():
    with asyncio.Runner(loop_factory=ferroloop.new_event_loop) as runner:
        loop1, total1 = runner.run(loop_and_sum([1, 2, 3]))
        loop2, total2 = runner.run(loop_and_sum(range(10)))
        assert loop1 is loop2 is runner.get_loop()  # one loop for the runner's life
        assert type(loop1) is ferroloop.Loop
        assert (total1, total2) == (6, 45)
    assert loop1.is_closed()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.run(loop_factory=) is 3.12+")
def test_asyncio_run_loop_factory():
    loop, total = asyncio.run(loop_and_sum([4, 5]), loop_factory=ferroloop.new_event_loop)
    assert type(loop) is ferroloop.Loop and loop.is_closed()
    assert total == 9


def test_ferroloop_run():
    loop, total = ferroloop.run(loop_and_sum([7, 8]))
    assert type(loop) is ferroloop.Loop and loop.is_closed()
    assert total == 15
