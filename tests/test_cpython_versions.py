"""What each CPython version's asyncio added to the loop, on ferroloop as on
stock asyncio of the same version (differential: `any_loop`):

- 3.14: task keyword arguments passed through `create_task` (`eager_start`),
  `call_soon_threadsafe`'s `_ThreadSafeHandle`, the per-thread task
  bookkeeping (`all_tasks`, `current_task`, `asyncio.graph`,
  `python -m asyncio ps/pstree`);
- 3.15: protocol callbacks in the `contextvars` context of the code that
  created the connection or server (`context=` to the transport factories).

On versions without a feature, both loops must fail the same way.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import subprocess
import sys
import textwrap
import threading
import time

import ferroloop
import pytest
from support import is_ferroloop

PY314 = sys.version_info >= (3, 14)
PY315 = sys.version_info >= (3, 15)


def _takes_kwargs(func) -> bool:
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(func).parameters.values())


# Task keywords through create_task: 3.14, and 3.13.x from a patch release on.
LOOP_TASK_KWARGS = _takes_kwargs(asyncio.BaseEventLoop.create_task)
MODULE_TASK_KWARGS = _takes_kwargs(asyncio.create_task)


# -- create_task keyword arguments (3.14) --------------------------------


def test_create_task_eager_start(any_loop):
    steps = []

    async def child():
        steps.append("child started")
        await asyncio.sleep(0)
        return 42

    async def main():
        task = asyncio.create_task(child(), eager_start=True)
        steps.append("create_task returned")
        return await task

    if not MODULE_TASK_KWARGS:
        with pytest.raises(TypeError, match="eager_start"):
            any_loop.run_until_complete(main())
        return
    assert any_loop.run_until_complete(main()) == 42
    assert steps == ["child started", "create_task returned"]


def test_create_task_eager_start_false_and_name(any_loop):
    steps = []

    async def child():
        steps.append("child started")
        return asyncio.current_task().get_name()

    async def main():
        task = any_loop.create_task(child(), eager_start=False, name="lazy")
        steps.append("create_task returned")
        return await task

    if not LOOP_TASK_KWARGS:
        with pytest.raises(TypeError, match="eager_start"):
            any_loop.run_until_complete(main())
        return
    assert any_loop.run_until_complete(main()) == "lazy"
    assert steps == ["create_task returned", "child started"]


def test_task_factory_gets_the_keywords_asyncio_gives_it():
    """What a task factory receives is the version's: nothing but the loop
    and the coroutine before 3.13 (3.11 sets the name afterwards), the task
    keywords from 3.13 on."""

    def run(loop):
        seen = []

        def factory(loop, coro, **kwargs):
            seen.append(sorted(kwargs))
            return asyncio.Task(coro, loop=loop, **kwargs)

        loop.set_task_factory(factory)

        async def main():
            task = loop.create_task(asyncio.sleep(0, "done"), name="n")
            return await task, task.get_name()

        try:
            return loop.run_until_complete(main()), seen
        finally:
            loop.close()

    ours = run(ferroloop.new_event_loop())
    assert ours == run(asyncio.SelectorEventLoop())
    assert ours[0] == ("done", "n")


# -- call_soon_threadsafe's handle (3.14) ---------------------------------


@pytest.mark.skipif(not PY314, reason="_ThreadSafeHandle is new in CPython 3.14")
def test_threadsafe_handle_is_asyncios(any_loop):
    handle = any_loop.call_soon_threadsafe(lambda: None)
    assert isinstance(handle, asyncio.events._ThreadSafeHandle)
    assert handle.get_context() is not None
    handle.cancel()
    assert handle.cancelled()
    any_loop.run_until_complete(asyncio.sleep(0))


def test_threadsafe_cancel_waits_for_a_running_callback(any_loop):
    """From 3.14, cancel() from another thread waits until a callback that
    has started returns; before, it returns at once."""
    started, finished = threading.Event(), threading.Event()
    seen = {}

    def callback():
        started.set()
        time.sleep(0.3)
        finished.set()

    def other_thread():
        handle = any_loop.call_soon_threadsafe(callback)
        started.wait(10)
        handle.cancel()
        seen["finished when cancel returned"] = finished.is_set()
        any_loop.call_soon_threadsafe(any_loop.stop)

    thread = threading.Thread(target=other_thread)
    thread.start()
    watchdog = any_loop.call_later(10, any_loop.stop)
    any_loop.run_forever()
    watchdog.cancel()
    thread.join(10)
    assert seen == {"finished when cancel returned": PY314}


def test_threadsafe_cancelled_before_running_never_runs(any_loop):
    ran = []
    release = threading.Event()
    any_loop.call_soon(release.wait, 10)  # keeps the loop busy meanwhile

    def other_thread():
        handle = any_loop.call_soon_threadsafe(ran.append, 1)
        handle.cancel()
        release.set()
        any_loop.call_soon_threadsafe(any_loop.stop)

    thread = threading.Thread(target=other_thread)
    thread.start()
    any_loop.run_forever()
    thread.join(10)
    assert ran == []


def test_threadsafe_callback_error_goes_to_the_handler(any_loop, handler_calls):
    def boom():
        raise ZeroDivisionError

    any_loop.call_soon_threadsafe(boom)
    any_loop.run_until_complete(asyncio.sleep(0.01))
    assert [type(c["exception"]) for c in handler_calls] == [ZeroDivisionError]
    assert handler_calls[0]["message"].startswith("Exception in callback")


def test_threadsafe_runs_in_the_given_context(any_loop):
    var = contextvars.ContextVar("var", default="default")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "in ctx")
    seen = []
    any_loop.call_soon_threadsafe(lambda: seen.append(var.get()), context=ctx)
    any_loop.call_soon_threadsafe(lambda: seen.append(var.get()))
    any_loop.run_until_complete(asyncio.sleep(0.01))
    assert seen == ["in ctx", "default"]


# -- the per-thread task bookkeeping (3.14) -------------------------------


def test_all_tasks_and_current_task_see_ferroloop_tasks(any_loop):
    async def sleeper():
        await asyncio.sleep(10)

    async def main():
        tasks = [asyncio.create_task(sleeper(), name=f"s{i}") for i in range(3)]
        await asyncio.sleep(0)
        names = sorted(t.get_name() for t in asyncio.all_tasks())
        current = asyncio.current_task()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return names, current.get_name()

    names, current = any_loop.run_until_complete(any_loop.create_task(main(), name="main"))
    assert names == ["main", "s0", "s1", "s2"]
    assert current == "main"


@pytest.mark.skipif(not PY314, reason="asyncio.graph is new in CPython 3.14")
def test_graph_sees_awaiting_task(any_loop):
    import asyncio.graph

    async def leaf():
        await asyncio.sleep(10)

    async def main():
        async with asyncio.TaskGroup() as tg:
            child = tg.create_task(leaf(), name="leaf")
            await asyncio.sleep(0)
            graph = asyncio.graph.capture_call_graph(child)
            child.cancel()
        return graph

    graph = any_loop.run_until_complete(any_loop.create_task(main(), name="parent"))
    assert graph.future.get_name() == "leaf"
    assert [a.future.get_name() for a in graph.awaited_by] == ["parent"]


PS_TARGET = textwrap.dedent(
    """
    import asyncio, sys
    import ferroloop

    async def worker():
        await asyncio.sleep(60)

    async def main():
        async with asyncio.TaskGroup() as tg:
            for i in range(2):
                tg.create_task(worker(), name=f"worker-{i}")
            print("ready", flush=True)
            await asyncio.sleep(60)

    if sys.argv[1] == "ferroloop":
        ferroloop.run(main())
    else:
        asyncio.run(main())
    """
)


@pytest.mark.skipif(not PY314, reason="python -m asyncio ps is new in CPython 3.14")
@pytest.mark.parametrize("kind", ["ferroloop", "asyncio"])
def test_asyncio_ps_and_pstree_see_the_tasks(kind):
    target = subprocess.Popen(
        [sys.executable, "-c", PS_TARGET, kind], stdout=subprocess.PIPE, text=True
    )
    try:
        assert target.stdout.readline().strip() == "ready"
        outputs = {}
        for command in ("ps", "pstree"):
            done = subprocess.run(
                [sys.executable, "-m", "asyncio", command, str(target.pid)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            outputs[command] = done.stdout
    finally:
        target.kill()
        target.wait()
    for command in ("ps", "pstree"):
        assert "worker-0" in outputs[command] and "worker-1" in outputs[command], outputs
    assert "Task-1" in outputs["ps"]


# -- protocol callbacks in the creator's context (3.15) -------------------


def _context_seen_by_a_server(loop, server_kind: str):
    """What a handler sees of a variable set after the server was created,
    and whether its own change leaks out."""
    var = contextvars.ContextVar("var", default="default")

    async def main():
        seen = []

        class Proto(asyncio.Protocol):
            def connection_made(self, transport):
                seen.append(("made", var.get()))
                var.set("in protocol")
                self.transport = transport

            def data_received(self, data):
                seen.append(("data", var.get()))
                self.transport.write(data)

            def connection_lost(self, exc):
                seen.append(("lost", var.get()))

        async def handle(reader, writer):
            seen.append(("handler", var.get()))
            var.set("in handler")
            writer.write(await reader.read(10))
            await writer.drain()
            writer.close()

        var.set("before server")
        if server_kind == "streams":
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
        else:
            server = await loop.create_server(Proto, "127.0.0.1", 0)
        var.set("after server")
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        writer.write(b"ping")
        assert await reader.read(10) == b"ping"
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)
        return seen, var.get()

    return loop.run_until_complete(main())


# What a server's callbacks see (3.15's semantics, ferroloop's on every
# version): the server creator's context, one copy per connection, shared
# by that connection's callbacks.
SERVER_SEES = {
    "streams": [("handler", "before server")],
    "protocol": [("made", "before server"), ("data", "in protocol"), ("lost", "in protocol")],
}


@pytest.mark.parametrize("server_kind", ["streams", "protocol"])
def test_server_callbacks_run_in_the_creators_context(server_kind):
    """ferroloop runs a server's protocol callbacks in a per-connection copy
    of the context the server was created in, on every version, as asyncio
    does from 3.15 on (before 3.15 asyncio copies the context current when
    each callback is scheduled)."""
    results = {}
    for kind in ("ferroloop", "asyncio"):
        loop = ferroloop.new_event_loop() if kind == "ferroloop" else asyncio.SelectorEventLoop()
        try:
            results[kind] = _context_seen_by_a_server(loop, server_kind)
        finally:
            loop.close()
    assert results["ferroloop"] == (SERVER_SEES[server_kind], "after server")
    if PY315:
        assert results["asyncio"] == results["ferroloop"]


def test_connection_callbacks_run_in_the_creators_context():
    """A client protocol's callbacks run in the context of create_connection's
    caller, shared by them all (so a variable connection_made sets is seen
    by the later callbacks): on every version on ferroloop, from 3.15 on on
    stock asyncio."""
    var = contextvars.ContextVar("var", default="default")

    def run(loop):
        async def main():
            seen = []

            class Client(asyncio.Protocol):
                def connection_made(self, transport):
                    seen.append(var.get())
                    var.set("in protocol")
                    transport.write(b"x")

                def data_received(self, data):
                    seen.append(var.get())

                def connection_lost(self, exc):
                    seen.append(var.get())

            async def echo(reader, writer):
                writer.write(await reader.read(1))
                await writer.drain()
                writer.close()

            server = await asyncio.start_server(echo, "127.0.0.1", 0)
            var.set("caller")
            transport, _ = await loop.create_connection(Client, *server.sockets[0].getsockname())
            await asyncio.sleep(0.1)
            transport.close()
            await asyncio.sleep(0.05)
            server.close()
            await server.wait_closed()
            return seen

        return loop.run_until_complete(main())

    results = {}
    for kind in ("ferroloop", "asyncio"):
        loop = ferroloop.new_event_loop() if kind == "ferroloop" else asyncio.SelectorEventLoop()
        try:
            results[kind] = run(loop)
        finally:
            loop.close()
    assert results["ferroloop"] == ["caller", "in protocol", "in protocol"]
    if PY315:
        assert results["asyncio"] == results["ferroloop"]


def test_factories_accept_context_keyword(any_loop):
    """3.15 passes context= to _make_socket_transport; ferroloop takes it on
    every version (None: asyncio's per-callback copies)."""
    import socket

    a, b = socket.socketpair()
    a.setblocking(False)
    seen = []
    var = contextvars.ContextVar("var", default="default")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "given")

    class Proto(asyncio.Protocol):
        def connection_made(self, transport):
            seen.append(var.get())

    async def main():
        waiter = any_loop.create_future()
        transport = any_loop._make_socket_transport(a, Proto(), waiter, context=ctx)
        await waiter
        transport.close()
        await asyncio.sleep(0)

    if not PY315 and not is_ferroloop(any_loop):
        with pytest.raises(TypeError):
            any_loop._make_socket_transport(a, Proto(), None, context=ctx)
        a.close()
        b.close()
        return
    try:
        any_loop.run_until_complete(main())
    finally:
        b.close()
    assert seen == ["given"]
