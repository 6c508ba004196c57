"""Producers and consumers connected by an asyncio.Queue; task_done/join
tells when every item has been processed."""

from __future__ import annotations

import asyncio

from _runner import print_loop, run


async def producer(queue: asyncio.Queue[int], start: int, count: int) -> None:
    for n in range(start, start + count):
        await queue.put(n)  # waits while the queue is full (maxsize)


async def consumer(queue: asyncio.Queue[int], results: list[tuple[int, int]]) -> None:
    while True:  # runs until cancelled
        n = await queue.get()
        try:
            await asyncio.sleep(0.001)  # the work
            results.append((n, n * n))
        finally:
            queue.task_done()  # one call per get(), or join() never returns


async def main() -> None:
    print_loop()
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=4)
    results: list[tuple[int, int]] = []

    consumers = [asyncio.create_task(consumer(queue, results)) for _ in range(3)]
    await asyncio.gather(producer(queue, 0, 10), producer(queue, 100, 10))

    await queue.join()  # every item put has been marked task_done
    print("queue empty after join():", queue.empty())

    # The consumers wait for items forever: cancel them.
    for task in consumers:
        task.cancel()
    outcomes = await asyncio.gather(*consumers, return_exceptions=True)
    print("consumers cancelled:", all(isinstance(o, asyncio.CancelledError) for o in outcomes))

    # Which consumer got which item depends on scheduling: print sorted.
    print(f"processed {len(results)} items")
    for n, square in sorted(results):
        print(f"{n} -> {square}")


if __name__ == "__main__":
    run(main)
