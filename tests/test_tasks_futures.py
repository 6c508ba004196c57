"""Futures, tasks, task factories, async generators, executors and
cross-thread submission on top of the core."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import gc
import sys
import threading
import time

import pytest
from support import make_loop, sleep_until_cancelled

VAR = contextvars.ContextVar("VAR", default="default")

needs_311 = pytest.mark.skipif(sys.version_info < (3, 11), reason="3.11+ API")
needs_312 = pytest.mark.skipif(sys.version_info < (3, 12), reason="3.12+ API")


def test_create_future(any_loop):
    fut = any_loop.create_future()
    assert isinstance(fut, asyncio.Future)
    assert fut.get_loop() is any_loop
    any_loop.call_later(0.001, fut.set_result, "value")
    assert any_loop.run_until_complete(fut) == "value"


def test_future_done_callbacks_run_through_the_loop(any_loop):
    fut = any_loop.create_future()
    seen = []
    fut.add_done_callback(lambda f: seen.append(("cb", f.result())))
    fut.set_result(1)
    assert seen == []  # scheduled with call_soon, not called synchronously
    any_loop.run_until_complete(asyncio.sleep(0))
    assert seen == [("cb", 1)]


def test_create_task_with_name(any_loop):
    async def work():
        await asyncio.sleep(0)
        return asyncio.current_task().get_name()

    task = any_loop.create_task(work(), name="worker-1")
    assert isinstance(task, asyncio.Task)
    assert task.get_name() == "worker-1"
    assert task.get_loop() is any_loop
    assert any_loop.run_until_complete(task) == "worker-1"


@needs_311
def test_create_task_with_context(any_loop):
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "in ctx")

    async def work():
        await asyncio.sleep(0)
        value = VAR.get()
        VAR.set("changed by task")
        return value

    task = any_loop.create_task(work(), context=ctx)
    assert any_loop.run_until_complete(task) == "in ctx"
    assert ctx[VAR] == "changed by task"
    assert VAR.get() == "default"


def test_tasks_run_in_a_copy_of_the_creating_context(any_loop):
    async def child():
        return VAR.get()

    async def main():
        VAR.set("parent")
        return await asyncio.gather(any_loop.create_task(child()), child())

    assert any_loop.run_until_complete(main()) == ["parent", "parent"]
    assert VAR.get() == "default"


def test_task_factory(any_loop):
    created = []

    def factory(loop, coro, **kwargs):
        task = asyncio.Task(coro, loop=loop, **kwargs)
        created.append(task)
        return task

    assert any_loop.get_task_factory() is None
    any_loop.set_task_factory(factory)
    assert any_loop.get_task_factory() is factory

    async def main():
        return await any_loop.create_task(asyncio.sleep(0, "x"))

    assert any_loop.run_until_complete(main()) == "x"
    assert len(created) == 2  # main() and the inner task
    any_loop.set_task_factory(None)
    assert any_loop.get_task_factory() is None
    with pytest.raises(TypeError):
        any_loop.set_task_factory(42)


@needs_312
def test_eager_task_factory(any_loop):
    any_loop.set_task_factory(asyncio.eager_task_factory)
    steps = []

    async def child():
        steps.append("child ran")
        return 7

    async def main():
        task = asyncio.get_running_loop().create_task(child())
        steps.append("after create_task")
        # The task finished inside create_task: it never yielded.
        assert task.done()
        return await task

    assert any_loop.run_until_complete(main()) == 7
    assert steps == ["child ran", "after create_task"]


def test_cancel_a_task(any_loop):
    async def sleeper():
        await asyncio.sleep(3600)

    async def main():
        task = any_loop.create_task(sleeper())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return task.cancelled()

    assert any_loop.run_until_complete(main()) is True


def test_gather_wait_for_and_wait(any_loop):
    async def value(x, delay):
        await asyncio.sleep(delay)
        return x

    async def main():
        results = await asyncio.gather(value(1, 0.02), value(2, 0.01), value(3, 0))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(value(4, 3600), 0.01)
        assert await asyncio.wait_for(value(5, 0), 5) == 5
        tasks = [any_loop.create_task(value(i, i * 0.01)) for i in range(3)]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        first = [t.result() for t in done]
        await asyncio.gather(*pending)
        return results, first

    results, first = any_loop.run_until_complete(main())
    assert results == [1, 2, 3]
    assert first == [0]


@needs_311
def test_timeout_and_taskgroup(any_loop):
    async def main():
        t0 = any_loop.time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02):
                await asyncio.sleep(3600)
        elapsed = any_loop.time() - t0
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(asyncio.sleep(0.001 * i, i)) for i in range(5)]
        return elapsed, [t.result() for t in tasks]

    elapsed, results = any_loop.run_until_complete(main())
    assert 0.02 - 1e-3 <= elapsed < 2.0
    assert results == [0, 1, 2, 3, 4]


@needs_311
def test_taskgroup_propagates_errors_and_cancels_siblings(any_loop):
    cancelled = []

    async def failing():
        await asyncio.sleep(0.001)
        raise KeyError("bad")

    async def main():
        async with asyncio.TaskGroup() as tg:
            tg.create_task(sleep_until_cancelled(cancelled))
            tg.create_task(failing())

    with pytest.raises(BaseExceptionGroup) as info:  # noqa: F821 - 3.11+ builtin
        any_loop.run_until_complete(main())
    assert [type(e) for e in info.value.exceptions] == [KeyError]
    assert cancelled == [True]


def test_shutdown_asyncgens_finalises_async_generators(any_loop):
    finalised = []
    keep = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            await asyncio.sleep(0)  # finalisation may itself await
            finalised.append(True)

    async def main():
        gen = agen()
        keep.append(gen)
        return await gen.__anext__()

    assert any_loop.run_until_complete(main()) == 1
    assert finalised == []
    any_loop.run_until_complete(any_loop.shutdown_asyncgens())
    assert finalised == [True]


def test_async_generator_garbage_is_finalised_by_the_loop(any_loop):
    """run_forever installs the asyncgen finalizer hook: a dropped,
    unfinished generator gets aclose()d as a task on the loop."""
    finalised = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            finalised.append(asyncio.get_running_loop())

    async def main():
        gen = agen()
        await gen.__anext__()
        del gen
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)

    any_loop.run_until_complete(main())
    assert finalised == [any_loop]


def test_asyncgen_hooks_are_restored_after_run(any_loop):
    before = sys.get_asyncgen_hooks()
    seen = []

    async def main():
        seen.append(sys.get_asyncgen_hooks())

    any_loop.run_until_complete(main())
    assert seen[0].finalizer is not None and seen[0] != before
    assert sys.get_asyncgen_hooks() == before


def test_run_in_executor(any_loop):
    main_thread = threading.get_ident()

    def blocking(x):
        time.sleep(0.01)
        return x + 1, threading.get_ident()

    result, thread = any_loop.run_until_complete(any_loop.run_in_executor(None, blocking, 1))
    assert result == 2
    assert thread != main_thread


def test_run_in_executor_error_propagates(any_loop):
    def blocking():
        raise OSError("from executor")

    with pytest.raises(OSError, match="from executor"):
        any_loop.run_until_complete(any_loop.run_in_executor(None, blocking))


def test_set_default_executor(any_loop):
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ferro-test") as executor:
        any_loop.set_default_executor(executor)
        name = any_loop.run_until_complete(
            any_loop.run_in_executor(None, lambda: threading.current_thread().name)
        )
        assert name.startswith("ferro-test")
        any_loop.run_until_complete(any_loop.shutdown_default_executor())


def test_run_in_explicit_executor(any_loop):
    with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="explicit") as executor:
        names = any_loop.run_until_complete(
            asyncio.gather(
                *(
                    any_loop.run_in_executor(executor, lambda: threading.current_thread().name)
                    for _ in range(4)
                )
            )
        )
    assert all(n.startswith("explicit") for n in names)


def test_shutdown_default_executor(any_loop):
    any_loop.run_until_complete(any_loop.run_in_executor(None, int))
    any_loop.run_until_complete(any_loop.shutdown_default_executor())
    with pytest.raises(RuntimeError, match="shutdown"):
        any_loop.run_until_complete(any_loop.run_in_executor(None, int))


@needs_312
def test_shutdown_default_executor_timeout(any_loop, recwarn):
    # (How a timeout that expires is handled differs between 3.12.x and
    # 3.13: only the keyword and a shutdown within it are pinned here.)
    assert any_loop.run_until_complete(any_loop.run_in_executor(None, sum, [1, 2])) == 3
    t0 = time.monotonic()
    any_loop.run_until_complete(any_loop.shutdown_default_executor(timeout=5))
    assert time.monotonic() - t0 < 5.0
    assert not [w for w in recwarn if "joining its threads" in str(w.message)]
    with pytest.raises(RuntimeError, match="shutdown"):
        any_loop.run_until_complete(any_loop.run_in_executor(None, int))


def test_to_thread(any_loop):
    async def main():
        return await asyncio.to_thread(lambda a, b: (a * b, threading.get_ident()), 6, 7)

    result, thread = any_loop.run_until_complete(main())
    assert result == 42
    assert thread != threading.get_ident()


def test_to_thread_carries_the_context(any_loop):
    async def main():
        VAR.set("from task")
        return await asyncio.to_thread(VAR.get)

    assert any_loop.run_until_complete(main()) == "from task"


def test_run_coroutine_threadsafe_into_a_loop_in_another_thread(loop_kind):
    loop = make_loop(loop_kind)
    started = threading.Event()

    def serve():
        asyncio.set_event_loop(loop)
        loop.call_soon(started.set)
        loop.run_forever()

    async def work(x):
        await asyncio.sleep(0.01)
        return x * 2, threading.get_ident()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        assert started.wait(10)
        futures = [asyncio.run_coroutine_threadsafe(work(i), loop) for i in range(20)]
        results = [f.result(timeout=10) for f in futures]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        assert not thread.is_alive()
        loop.close()
    assert [r for r, _ in results] == [i * 2 for i in range(20)]
    assert {t for _, t in results} == {thread.ident}


def test_run_coroutine_threadsafe_from_a_worker_thread(any_loop):
    async def work():
        await asyncio.sleep(0.001)
        return threading.get_ident()

    def worker():
        return asyncio.run_coroutine_threadsafe(work(), any_loop).result(timeout=10)

    async def main():
        return await any_loop.run_in_executor(None, worker)

    assert any_loop.run_until_complete(main()) == threading.get_ident()


def test_wrap_future_from_another_thread(any_loop):
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        cf = executor.submit(lambda: (time.sleep(0.02), "done")[1])
        assert any_loop.run_until_complete(asyncio.wrap_future(cf, loop=any_loop)) == "done"
