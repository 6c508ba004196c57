"""asyncio.TaskGroup (Python 3.11+): when one child fails, the others are
cancelled and the errors come out together as an ExceptionGroup."""

from __future__ import annotations

import asyncio
import sys

from _runner import print_loop, run


async def child(name: str, delay: float, log: list[str], fail: bool = False) -> str:
    try:
        await asyncio.sleep(delay)
    except asyncio.CancelledError:
        log.append(f"{name} cancelled")
        raise
    if fail:
        raise RuntimeError(f"{name} failed")
    log.append(f"{name} finished")
    return name


async def main() -> None:
    print_loop()
    if sys.version_info < (3, 11):
        print("asyncio.TaskGroup needs Python 3.11 or later: skipped")
        return

    # All children succeed: leaving the block waits for all of them.
    log: list[str] = []
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(child(f"ok-{i}", 0.01 * i, log)) for i in range(3)]
    print("all succeeded:", [t.result() for t in tasks])

    # One child fails: the group cancels the others, waits for them, then
    # raises an ExceptionGroup holding the failure(s). On 3.11+ you would
    # usually write `except* RuntimeError`; plain `except ExceptionGroup`
    # keeps this file parsable by Python 3.10.
    log = []
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(child("fast", 0.0, log))
            tg.create_task(child("failing", 0.02, log, fail=True))
            tg.create_task(child("slow-1", 10, log))
            tg.create_task(child("slow-2", 10, log))
        print("not reached")
    except ExceptionGroup as group:  # noqa: F821 (a builtin from 3.11 on)
        print("ExceptionGroup:", [repr(e) for e in group.exceptions])
    # The group cancels its children in no particular order: print sorted.
    for line in sorted(log):
        print(line)


if __name__ == "__main__":
    run(main)
