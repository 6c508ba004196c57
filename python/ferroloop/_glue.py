"""Python helpers the Rust core calls on rare paths (errors, repr, debug).

They exist so that messages and formats are those of the running CPython's
asyncio, to the letter, whatever its version.
"""

from __future__ import annotations

import inspect
import logging
import sys
from asyncio import base_events, format_helpers, selector_events

from ._ferroloop import TimerHandle

logger = logging.getLogger("asyncio")

if "debug" in inspect.signature(format_helpers._format_callback_source).parameters:

    def _callback_source(callback, args, loop) -> str:
        return format_helpers._format_callback_source(callback, args, debug=loop.get_debug())

else:  # Python < 3.13

    def _callback_source(callback, args, loop) -> str:
        return format_helpers._format_callback_source(callback, args)


def extract_source_traceback():
    """Debug mode: the stack of whoever called the (native) scheduling method."""
    return format_helpers.extract_stack(sys._getframe(1))


def report_callback_error(loop, handle, exc: BaseException) -> None:
    """What asyncio's Handle._run does when its callback raises."""
    source = _callback_source(handle._callback, handle._args, loop)
    context = {"message": f"Exception in callback {source}", "exception": exc, "handle": handle}
    if handle._source_traceback:
        context["source_traceback"] = handle._source_traceback
    loop.call_exception_handler(context)


def handle_repr(handle) -> str:
    """asyncio's Handle/TimerHandle repr: <Handle [cancelled] cb(args) at file:line>."""
    info = [type(handle).__name__]
    if handle.cancelled():
        info.append("cancelled")
    if isinstance(handle, TimerHandle):
        info.insert(2 if handle.cancelled() else 1, f"when={handle.when()}")
    if handle._callback is not None:
        info.append(_callback_source(handle._callback, handle._args, handle._loop))
    if handle._source_traceback:
        frame = handle._source_traceback[-1]
        info.append(f"created at {frame[0]}:{frame[1]}")
    return "<{}>".format(" ".join(info))


def log_slow_callback(handle, seconds: float) -> None:
    """Debug mode: a callback ran longer than loop.slow_callback_duration."""
    logger.warning("Executing %s took %.3f seconds", base_events._format_handle(handle), seconds)


def report_slow_callback(loop, handle, callback, seconds, threshold, stack) -> None:
    """A callback ran longer than loop.set_slow_callback_threshold()."""
    from ._telemetry import report_slow_callback as report

    report(loop, handle, callback, seconds, threshold, stack)


def write_type_error(data) -> TypeError:
    """The TypeError asyncio's stream transport raises from write(data) for
    a `data` that is not bytes-like, in the running version's words: its
    own write() checks the type before touching the transport."""
    try:
        selector_events._SelectorSocketTransport.write(None, data)
    except TypeError as exc:
        return exc
    except Exception:  # noqa: BLE001, S110 (a future asyncio that checks otherwise)
        pass
    return TypeError(f"data argument must be a bytes-like object, not {type(data).__name__!r}")
