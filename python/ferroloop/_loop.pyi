"""Type stubs for ferroloop.Loop."""

from asyncio import unix_events

from ._ferroloop import CoreLoop

class Loop(CoreLoop, unix_events.SelectorEventLoop):  # type: ignore[misc]
    def __init__(self) -> None: ...
