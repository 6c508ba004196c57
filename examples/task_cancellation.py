"""create_task, Task.cancel and handling CancelledError (clean-up, shield)."""

from __future__ import annotations

import asyncio

from _runner import print_loop, run


async def ticker() -> None:
    """Runs until cancelled; cleans up, then lets the cancellation through."""
    try:
        while True:
            await asyncio.sleep(0.005)
    except asyncio.CancelledError:
        print("ticker: got CancelledError, cleaning up")
        raise  # re-raise: swallowing it would make the task look finished
    finally:
        print("ticker: finally block ran")


async def save() -> str:
    await asyncio.sleep(0.02)
    return "save finished"


async def main() -> None:
    print_loop()

    # create_task schedules the coroutine at once; main keeps running.
    task = asyncio.create_task(ticker(), name="ticker")
    await asyncio.sleep(0.02)
    print("ticker running:", not task.done())
    task.cancel()  # asks: CancelledError is thrown into the coroutine
    try:
        await task
    except asyncio.CancelledError:
        print("main: awaiting the task raised CancelledError")
    print("task.cancelled():", task.cancelled())

    # A task cancelled before it ever ran never starts its coroutine.
    never = asyncio.create_task(ticker())
    never.cancel()
    await asyncio.gather(never, return_exceptions=True)
    print("cancelled before starting:", never.cancelled())

    # shield: cancelling the waiter does not cancel the shielded work.
    inner = asyncio.create_task(save())

    async def wait_for_save() -> str:
        return await asyncio.shield(inner)

    waiter = asyncio.create_task(wait_for_save())
    await asyncio.sleep(0)
    waiter.cancel()
    try:
        await waiter
    except asyncio.CancelledError:
        print("waiter cancelled")
    print("shielded task:", await inner)


if __name__ == "__main__":
    run(main)
