"""Shared by every example: choose the event loop from the command line.

    python examples/<name>.py                  # ferroloop (the default)
    python examples/<name>.py --loop asyncio   # stock asyncio, to compare

Each example calls `run(main)`; its `main()` calls `print_loop()` first, so
the output says which loop actually ran it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any


def print_loop() -> None:
    """Print the running loop's class, e.g. `loop: ferroloop._loop.Loop`."""
    cls = type(asyncio.get_running_loop())
    print(f"loop: {cls.__module__}.{cls.__qualname__}")


def run(main: Callable[[], Coroutine[Any, Any, Any]], argv: list[str] | None = None) -> Any:
    """Parse `--loop` and run `main()` on that loop, with asyncio.run's
    semantics (leftover tasks cancelled, async generators and the default
    executor shut down, loop closed)."""
    parser = argparse.ArgumentParser(description=sys.modules["__main__"].__doc__)
    parser.add_argument(
        "--loop",
        choices=("ferroloop", "asyncio"),
        default="ferroloop",
        help="event loop to run on (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.loop == "asyncio":
        return asyncio.run(main())
    import ferroloop

    # On Python 3.12+ this is the same as
    # asyncio.run(main(), loop_factory=ferroloop.new_event_loop).
    return ferroloop.run(main())
