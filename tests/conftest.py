"""Shared fixtures for the ferroloop test suite.

`loop` is always a ferroloop loop. `any_loop` runs a behaviour test on a
ferroloop loop and, as the reference, on stock asyncio's selector loop: the
test must pass on both, so a ferroloop failure there is a divergence from
asyncio, not a mistaken expectation.
"""

from __future__ import annotations

import asyncio

import ferroloop
import pytest
from support import LOOP_KINDS, make_loop
from tls_support import CertificateToolMissing, make_certificates


def _close(loop: asyncio.AbstractEventLoop) -> None:
    if loop.is_closed():
        return
    assert not loop.is_running()
    loop.close()


@pytest.fixture
def loop():
    """A fresh ferroloop loop, closed after the test."""
    lp = ferroloop.new_event_loop()
    try:
        yield lp
    finally:
        _close(lp)


@pytest.fixture(params=LOOP_KINDS)
def any_loop(request):
    """A fresh loop of each kind: ferroloop, and stock asyncio as reference."""
    lp = make_loop(request.param)
    try:
        yield lp
    finally:
        _close(lp)


@pytest.fixture(params=LOOP_KINDS)
def loop_kind(request) -> str:
    """The kind of loop, for tests that build their loops themselves."""
    return request.param


@pytest.fixture
def handler_calls(any_loop):
    """Every context the loop's exception handler receives."""
    calls = []
    any_loop.set_exception_handler(lambda loop, context: calls.append(context))
    return calls


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """Certificates made for this test session (tls_support)."""
    try:
        return make_certificates(tmp_path_factory.mktemp("tls"))
    except CertificateToolMissing as exc:
        pytest.skip(str(exc))
