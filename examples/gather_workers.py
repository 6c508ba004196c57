"""Run workers concurrently with asyncio.gather, with and without
return_exceptions=True."""

from __future__ import annotations

import asyncio

from _runner import print_loop, run


async def worker(name: str, delay: float, fail: bool = False) -> str:
    await asyncio.sleep(delay)  # stands for real I/O: a request, a query...
    if fail:
        raise ValueError(f"{name} failed")
    return f"{name} done"


async def main() -> None:
    print_loop()

    # The workers run at the same time: five 10-50 ms sleeps take ~50 ms,
    # not 150 ms. gather returns the results in the order of its arguments,
    # whatever the order the workers finished in.
    results = await asyncio.gather(*(worker(f"worker-{i}", 0.01 * (5 - i)) for i in range(5)))
    print("all succeeded:", results)

    # return_exceptions=True: a failure is returned in its slot instead of
    # being raised, and the other results are kept.
    results = await asyncio.gather(
        worker("a", 0.01),
        worker("b", 0.02, fail=True),
        worker("c", 0.0),
        return_exceptions=True,
    )
    for result in results:
        print("with return_exceptions:", repr(result))

    # Without it, gather raises the first exception. (The other awaitables
    # are not cancelled; here the failing one is the last to finish anyway.)
    try:
        await asyncio.gather(worker("d", 0.0), worker("e", 0.01, fail=True))
    except ValueError as exc:
        print("gather raised:", repr(exc))


if __name__ == "__main__":
    run(main)
