"""ferroloop: a drop-in asyncio event loop with its core in Rust.

import asyncio, ferroloop
asyncio.run(main(), loop_factory=ferroloop.new_event_loop)   # 3.12+
ferroloop.run(main())                                        # any version
ferroloop.install()   # sets the policy, like uvloop.install()
"""

from __future__ import annotations

import asyncio as _asyncio
import sys as _sys
import warnings as _warnings
from asyncio import unix_events as _unix_events

from ._ferroloop import Handle, TimerHandle
from ._loop import Loop

__all__ = [
    "EventLoopPolicy",
    "Handle",
    "LagStats",
    "Loop",
    "LoopStats",
    "SlowCallback",
    "TimerHandle",
    "install",
    "new_event_loop",
    "run",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The telemetry snapshot classes are dataclasses, imported on first use
    # (making them costs more than the rest of `import ferroloop`).
    if name in ("LagStats", "LoopStats", "SlowCallback"):
        from . import _stats

        return getattr(_stats, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def new_event_loop() -> Loop:
    """Return a new ferroloop event loop (with slow-callback reports on if
    FERROLOOP_SLOW_CALLBACK_MS is set: see docs/telemetry.md)."""
    return Loop()


def run(main, *, loop_factory=new_event_loop, debug=None, **run_kwargs):
    """Run a coroutine on a new ferroloop loop, with asyncio.run's semantics:
    leftover tasks are cancelled, async generators and the default executor
    shut down, and the loop closed."""
    if not _asyncio.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    if _sys.version_info >= (3, 12):
        return _asyncio.run(main, loop_factory=loop_factory, debug=debug, **run_kwargs)
    if _asyncio.events._get_running_loop() is not None:
        # asyncio.run's own check (asyncio.Runner alone would fail later,
        # with a less helpful message).
        main.close()
        raise RuntimeError("asyncio.run() cannot be called from a running event loop")
    if hasattr(_asyncio, "Runner"):  # 3.11
        with _asyncio.Runner(debug=debug, loop_factory=loop_factory, **run_kwargs) as runner:
            return runner.run(main)
    return _run_without_runner(main, loop_factory, debug)


def _run_without_runner(main, loop_factory, debug):
    """asyncio.run for Python 3.10, which has no Runner or loop_factory."""
    loop = loop_factory()
    try:
        _asyncio.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:
        try:
            # asyncio.run's own helper (private, and only needed on 3.10).
            _asyncio.runners._cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            _asyncio.set_event_loop(None)
            loop.close()


if _sys.version_info >= (3, 14):
    # Policies are deprecated (removal planned for 3.16) and child watchers
    # are gone: the plain default policy is the base.
    _PolicyBase = _asyncio.events._BaseDefaultEventLoopPolicy
else:
    _PolicyBase = _unix_events._UnixDefaultEventLoopPolicy


class EventLoopPolicy(_PolicyBase):
    """An event loop policy whose loops are ferroloop loops.

    Python 3.14 deprecates event loop policies (creating one warns there):
    prefer ``ferroloop.run()`` or
    ``asyncio.run(..., loop_factory=ferroloop.new_event_loop)``.
    """

    def __init__(self) -> None:
        if _sys.version_info >= (3, 14):
            _warnings.warn(
                "ferroloop.EventLoopPolicy is deprecated, as are asyncio's event loop "
                "policies, and slated for removal in Python 3.16; use ferroloop.run() "
                "or asyncio.run(..., loop_factory=ferroloop.new_event_loop)",
                DeprecationWarning,
                stacklevel=2,
            )
        super().__init__()

    def _loop_factory(self) -> Loop:
        return new_event_loop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


def install() -> None:
    """Make ferroloop the loop every new asyncio loop comes from."""
    if _sys.version_info >= (3, 12):
        _warnings.warn(
            "ferroloop.install() is deprecated in favor of ferroloop.run() "
            "starting with Python 3.12.",
            DeprecationWarning,
            stacklevel=1,
        )
    with _warnings.catch_warnings():
        # One deprecation warning (above) is enough on 3.14+.
        _warnings.simplefilter("ignore", DeprecationWarning)
        policy = EventLoopPolicy()
        _asyncio.set_event_loop_policy(policy)
