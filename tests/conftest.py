"""Shared fixtures for the ferroloop test suite.

`loop` is always a ferroloop loop. `any_loop` runs a behaviour test on a
ferroloop loop and, as the reference, on stock asyncio's selector loop: the
test must pass on both, so a ferroloop failure there is a divergence from
asyncio, not a mistaken expectation. `stream_family` runs a stream test
over TCP and over a Unix socket (transport_support.StreamFamily);
`sock_path` and `sockpair` are the sockets several files need.
"""

from __future__ import annotations

import asyncio
import os
import socket

import ferroloop
import pytest
from support import LOOP_KINDS, make_loop
from tls_support import CertificateToolMissing, make_certificates
from transport_support import StreamFamily, nonblocking


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


@pytest.fixture
def sock_path(tmp_path):
    """A path for an AF_UNIX socket (skips if tmp_path is too long for one)."""
    # AF_UNIX paths are limited to ~108 bytes: keep it short.
    path = tmp_path / "s.sock"
    if len(os.fsencode(path)) > 100:
        pytest.skip("tmp_path is too long for an AF_UNIX path")
    return path


@pytest.fixture(params=["tcp", "unix"])
def stream_family(request):
    """Each stream address family: TCP on 127.0.0.1, and AF_UNIX on sock_path."""
    if request.param == "tcp":
        return StreamFamily("tcp")
    if not hasattr(socket, "AF_UNIX"):
        pytest.skip("needs AF_UNIX")
    return StreamFamily("unix", request.getfixturevalue("sock_path"))


@pytest.fixture
def sockpair():
    """A connected pair of non-blocking AF_UNIX stream sockets, closed after."""
    with nonblocking(*socket.socketpair()) as pair:
        yield pair
