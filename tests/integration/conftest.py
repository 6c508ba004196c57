"""Integration tests: third-party asyncio libraries running on ferroloop.

Every test runs its library on a ferroloop loop and asserts so. The autouse
fixture below checks that a test leaves asyncio's process-wide state (the
event loop policy, the thread's current loop, the SIGINT/SIGTERM handlers,
the signal wakeup fd) as it found it, and puts it back if not.

The tests import their helpers from integ_support.py; pytest_asyncio/ holds
the pytest-asyncio tests, with their own conftest.py.
"""

from __future__ import annotations

import signal

import pytest
from integ_support import get_policy as _policy
from integ_support import set_policy as _set_policy


def _current_loop(policy):
    # The thread's current loop, read without get_event_loop()'s side
    # effects (creating a loop, or a DeprecationWarning).
    return getattr(getattr(policy, "_local", None), "_loop", None)


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@pytest.fixture(autouse=True)
def asyncio_globals_restored(request):
    # pytest-asyncio sets the thread's current loop (and, before 1.4, the
    # policy) for a loop scope that may outlast one test (loop_scope="class",
    # ...) and resets them itself; the module-scoped check below still runs.
    not_pytest_asyncio = request.node.get_closest_marker("asyncio") is None
    policy = _policy()
    loop = _current_loop(policy)
    handlers = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    wakeup_fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup_fd)
    yield
    leaked = []
    if not_pytest_asyncio and _policy() is not policy:
        leaked.append(f"event loop policy {_policy()!r}")
        _set_policy(policy)
    if not_pytest_asyncio and _current_loop(policy) is not loop:
        leaked.append(f"current event loop {_current_loop(policy)!r}")
        policy.set_event_loop(loop)
    for sig, handler in handlers.items():
        if signal.getsignal(sig) != handler:
            leaked.append(f"handler of {sig!r}: {signal.getsignal(sig)!r}")
            signal.signal(sig, handler)
    if signal.set_wakeup_fd(wakeup_fd) != wakeup_fd:
        leaked.append("the signal wakeup fd")
    assert not leaked, "the test left global state changed: " + "; ".join(leaked)


@pytest.fixture(autouse=True, scope="module")
def asyncio_policy_restored_by_module():
    # Catches what runs around the tests rather than in them (setUpClass /
    # tearDownClass, class- or module-scoped fixtures).
    policy = _policy()
    yield
    now = _policy()
    _set_policy(policy)
    assert now is policy, f"a test module left the event loop policy set to {now!r}"
