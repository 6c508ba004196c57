"""Type stubs for ferroloop.Loop."""

from asyncio import unix_events

from ._factories import TransportFactories
from ._ferroloop import CoreLoop
from ._stats import LoopStats
from ._subprocess import SubprocessServices

class Loop(CoreLoop, TransportFactories, SubprocessServices, unix_events.SelectorEventLoop):  # type: ignore[misc]
    def __init__(self) -> None: ...

    # Telemetry (ferroloop only; docs/telemetry.md).
    def stats(self) -> LoopStats:
        """What the loop did since it was created or reset_stats() was called.
        Raises RuntimeError once the loop is closed."""

    def reset_stats(self) -> None:
        """Start counting stats() again from zero."""

    def set_slow_callback_threshold(self, seconds: float | None) -> None:
        """Log (logger "ferroloop") every callback or task step that runs
        longer than `seconds`; None turns the reports off (the default)."""

    def get_slow_callback_threshold(self) -> float | None: ...
