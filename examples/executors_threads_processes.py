"""Blocking code off the event loop: run_in_executor with a process pool
and a thread pool, and asyncio.to_thread (3.9+)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time

from _runner import print_loop, run


def cpu_bound(n: int) -> tuple[int, int]:
    """CPU work: runs in a worker process (module-level, so it pickles)."""
    return sum(i * i for i in range(n)), os.getpid()


def blocking_io(name: str) -> tuple[str, str]:
    """Blocking work (time.sleep stands for a blocking call): runs in a thread."""
    time.sleep(0.02)
    return f"{name} done", threading.current_thread().name


async def main() -> None:
    print_loop()
    loop = asyncio.get_running_loop()

    # A process pool for CPU-bound work: sidesteps the GIL. Kept small, as
    # starting worker processes is the slow part.
    with concurrent.futures.ProcessPoolExecutor(max_workers=2) as pool:
        results = await asyncio.gather(
            *(loop.run_in_executor(pool, cpu_bound, n) for n in (10, 1_000, 100_000))
        )
    print("process pool:", [total for total, _ in results])
    print("ran in other processes:", all(pid != os.getpid() for _, pid in results))

    # A thread pool for blocking I/O: four 20 ms sleeps take ~20 ms in all.
    with concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="io") as pool:
        results = await asyncio.gather(
            *(loop.run_in_executor(pool, blocking_io, f"job-{i}") for i in range(4))
        )
    print("thread pool:", [text for text, _ in results])
    print("ran in pool threads:", all(name.startswith("io") for _, name in results))

    # None means the loop's default executor (a thread pool).
    text, name = await loop.run_in_executor(None, blocking_io, "default")
    print("default executor:", text, "/ in another thread:", name != "MainThread")

    # asyncio.to_thread: the default executor, with keyword arguments and the
    # caller's contextvars passed along.
    text, name = await asyncio.to_thread(blocking_io, name="to_thread")
    print("to_thread:", text, "/ in another thread:", name != "MainThread")


if __name__ == "__main__":
    run(main)
