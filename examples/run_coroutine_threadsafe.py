"""Submitting work to a running event loop from another thread:
asyncio.run_coroutine_threadsafe and loop.call_soon_threadsafe."""

from __future__ import annotations

import asyncio
import threading

from _runner import print_loop, run


async def double(n: int) -> int:
    await asyncio.sleep(0.001)
    return 2 * n


async def fail() -> None:
    await asyncio.sleep(0)
    raise ValueError("failed on the loop")


async def main() -> None:
    print_loop()
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    cancel_seen = asyncio.Event()
    report: list[str] = []
    started = threading.Event()

    async def wait_forever() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancel_seen.set()
            raise

    def in_thread() -> None:
        # run_coroutine_threadsafe returns a concurrent.futures.Future: the
        # thread may block on it, the loop stays free.
        futures = [asyncio.run_coroutine_threadsafe(double(n), loop) for n in range(5)]
        report.append(f"results: {[f.result(timeout=10) for f in futures]}")

        # An exception raised on the loop comes out of result().
        try:
            asyncio.run_coroutine_threadsafe(fail(), loop).result(timeout=10)
        except ValueError as exc:
            report.append(f"exception: {exc!r}")

        # Cancelling the concurrent future cancels the task on the loop.
        future = asyncio.run_coroutine_threadsafe(wait_forever(), loop)
        started.wait(timeout=10)  # let it start, so it sees the cancellation
        report.append(f"cancel() from the thread: {future.cancel()}")

        # Plain callbacks: call_soon_threadsafe (asyncio objects are not
        # thread-safe, so the thread must not call done.set() itself).
        loop.call_soon_threadsafe(done.set)

    thread = threading.Thread(target=in_thread)
    thread.start()
    await asyncio.wait_for(done.wait(), timeout=10)
    await asyncio.wait_for(cancel_seen.wait(), timeout=10)
    thread.join()  # returns at once: setting `done` was the thread's last act
    for line in report:
        print(line)
    print("the task on the loop saw CancelledError:", cancel_seen.is_set())


if __name__ == "__main__":
    run(main)
