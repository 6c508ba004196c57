"""The public API of the ferroloop package."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import gc
import sys
import warnings

import ferroloop
import pytest
from support import sleep_until_cancelled


@pytest.fixture
def restore_policy():
    """Put back whatever event loop policy was installed before the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # policies: 3.14+
        old = asyncio.get_event_loop_policy()
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop_policy(old)


def test_exports():
    for name in ferroloop.__all__:
        assert hasattr(ferroloop, name), name
    assert {"Loop", "new_event_loop", "run", "install", "EventLoopPolicy"} <= set(ferroloop.__all__)
    assert isinstance(ferroloop.__version__, str)


def test_new_event_loop_is_an_abstract_event_loop():
    loop = ferroloop.new_event_loop()
    try:
        assert isinstance(loop, ferroloop.Loop)
        assert isinstance(loop, asyncio.AbstractEventLoop)
        assert not loop.is_running()
        assert not loop.is_closed()
    finally:
        loop.close()
    assert loop.is_closed()


def test_each_call_makes_a_new_loop():
    a, b = ferroloop.new_event_loop(), ferroloop.new_event_loop()
    try:
        assert a is not b
    finally:
        a.close()
        b.close()


def test_close_is_idempotent():
    loop = ferroloop.new_event_loop()
    loop.close()
    loop.close()
    assert loop.is_closed()


def test_repr_mentions_state():
    loop = ferroloop.new_event_loop()
    try:
        assert "running=False" in repr(loop)
        assert "closed=False" in repr(loop)
    finally:
        loop.close()
    assert "closed=True" in repr(loop)


def test_run_returns_the_coroutine_result():
    async def main(x):
        await asyncio.sleep(0)
        return x * 2

    assert ferroloop.run(main(21)) == 42


def test_run_uses_a_ferroloop_loop_and_closes_it():
    seen = []

    async def main():
        seen.append(asyncio.get_running_loop())

    ferroloop.run(main())
    (loop,) = seen
    assert isinstance(loop, ferroloop.Loop)
    assert loop.is_closed()


def test_run_propagates_the_exception():
    async def main():
        raise LookupError("boom")

    with pytest.raises(LookupError, match="boom"):
        ferroloop.run(main())


def test_run_cancels_leftover_tasks():
    cancelled = []

    async def main():
        asyncio.get_running_loop().create_task(sleep_until_cancelled(cancelled))
        await asyncio.sleep(0)  # let it start
        return "done"

    assert ferroloop.run(main()) == "done"
    assert cancelled == [True]


def test_run_shuts_down_async_generators():
    finalised = []
    keep = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            finalised.append(True)

    async def main():
        gen = agen()
        keep.append(gen)  # not garbage: only shutdown_asyncgens can close it
        assert await gen.__anext__() == 1

    ferroloop.run(main())
    assert finalised == [True]


def test_run_shuts_down_the_default_executor():
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_default_executor(executor)
        return await loop.run_in_executor(None, sum, [1, 2, 3])

    try:
        assert ferroloop.run(main()) == 6
        with pytest.raises(RuntimeError):
            executor.submit(int)
    finally:
        executor.shutdown(wait=True)


def test_run_debug_flag():
    async def main():
        return asyncio.get_running_loop().get_debug()

    assert ferroloop.run(main(), debug=True) is True
    assert ferroloop.run(main(), debug=False) is False


@pytest.mark.parametrize("not_a_coro", [None, 42, lambda: None, asyncio.sleep])
def test_run_rejects_non_coroutines(not_a_coro):
    with pytest.raises(ValueError, match="coroutine was expected"):
        ferroloop.run(not_a_coro)


def test_run_refuses_to_run_inside_a_running_loop():
    async def inner():
        return 1

    async def main():
        coro = inner()
        try:
            ferroloop.run(coro)
        except RuntimeError as e:
            return str(e)
        finally:
            coro.close()
        return None

    with warnings.catch_warnings():
        # 3.11: the failed run leaves an unawaited shutdown_asyncgens() behind.
        warnings.filterwarnings("ignore", "coroutine .*shutdown_asyncgens", RuntimeWarning)
        msg = ferroloop.run(main())
        gc.collect()
    assert msg is not None and "cannot be called from a running event loop" in msg, msg


def test_event_loop_policy_makes_ferroloop_loops():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # policies: 3.14+
        policy = ferroloop.EventLoopPolicy()
    loop = policy.new_event_loop()
    try:
        assert isinstance(loop, ferroloop.Loop)
    finally:
        loop.close()
    assert "EventLoopPolicy" in repr(policy)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="deprecated from 3.12")
def test_install_warns_and_sets_the_policy(restore_policy):
    with pytest.warns(DeprecationWarning, match="ferroloop.run"):
        ferroloop.install()
    _check_installed()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="deprecated from 3.12")
def test_install_sets_the_policy(restore_policy):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        ferroloop.install()
    _check_installed()


def _check_installed():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # policies: 3.14+
        assert isinstance(asyncio.get_event_loop_policy(), ferroloop.EventLoopPolicy)
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, ferroloop.Loop)
    finally:
        loop.close()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.run(loop_factory=) is 3.12+")
def test_asyncio_run_with_loop_factory():
    async def main():
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0.001)
        return loop

    loop = asyncio.run(main(), loop_factory=ferroloop.new_event_loop)
    assert isinstance(loop, ferroloop.Loop)
    assert loop.is_closed()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Runner is 3.11+")
def test_asyncio_runner_with_loop_factory():
    var = contextvars.ContextVar("var", default="unset")

    async def set_var():
        var.set("set")
        return asyncio.get_running_loop()

    async def get_var():
        return var.get(), asyncio.get_running_loop()

    with asyncio.Runner(loop_factory=ferroloop.new_event_loop) as runner:
        loop = runner.get_loop()
        assert isinstance(loop, ferroloop.Loop)
        assert runner.run(set_var()) is loop
        # The runner keeps one context across run() calls.
        assert runner.run(get_var()) == ("set", loop)
    assert loop.is_closed()
