"""Type stubs for ferroloop's public API."""

import asyncio
from asyncio import unix_events
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ._ferroloop import Handle as Handle
from ._ferroloop import TimerHandle as TimerHandle
from ._loop import Loop as Loop
from ._stats import LagStats as LagStats
from ._stats import LoopStats as LoopStats
from ._stats import SlowCallback as SlowCallback

_T = TypeVar("_T")

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
__version__: str

def new_event_loop() -> Loop: ...
def run(
    main: Coroutine[Any, Any, _T],
    *,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = ...,
    debug: bool | None = None,
    **run_kwargs: Any,
) -> _T: ...

class EventLoopPolicy(unix_events._UnixDefaultEventLoopPolicy):
    def _loop_factory(self) -> Loop: ...  # type: ignore[override]

def install() -> None: ...
