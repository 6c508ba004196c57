"""uvicorn serving an ASGI app with ferroloop as its loop."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import aiohttp
import ferroloop
import httpx
import uvicorn
from integ_support import assert_on_ferroloop, run


def make_app(seen: list):
    """A tiny ASGI app; records the loop type of each lifespan/request call."""

    async def app(scope, receive, send):
        seen.append((scope["type"], type(asyncio.get_running_loop())))
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[1]  # startup / shutdown
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        payload = {
            "method": scope["method"],
            "path": scope["path"],
            "length": len(body),
            "loop": type(asyncio.get_running_loop()).__name__,
        }
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(payload).encode()})

    return app


def make_config(app, **kwargs) -> uvicorn.Config:
    # log_config=None: leave the process's logging configuration alone.
    return uvicorn.Config(
        app, host="127.0.0.1", port=0, log_config=None, log_level="warning", **kwargs
    )


def bound_port(server: uvicorn.Server) -> int:
    return server.servers[0].sockets[0].getsockname()[1]


async def exercise(port: int) -> None:
    """Requests to the server, with httpx and aiohttp."""
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url) as client:
        r = await client.get("/hello")
        assert r.json() == {"method": "GET", "path": "/hello", "length": 0, "loop": "Loop"}
        rs = await asyncio.gather(*(client.post(f"/p{i}", content=b"x" * i) for i in range(20)))
        assert [r.json()["length"] for r in rs] == list(range(20))
        assert {r.json()["path"] for r in rs} == {f"/p{i}" for i in range(20)}
    async with (
        aiohttp.ClientSession() as session,
        session.put(f"{url}/up", data=b"y" * 100_000) as resp,
    ):
        assert resp.status == 200
        assert (await resp.json())["length"] == 100_000


def test_server_serve_inside_ferroloop_run():
    seen = []

    async def main():
        assert_on_ferroloop()
        server = uvicorn.Server(make_config(make_app(seen)))
        serving = asyncio.ensure_future(server.serve())
        try:
            while not server.started:
                assert not serving.done(), serving
                await asyncio.sleep(0.01)
            await exercise(bound_port(server))
        finally:
            server.should_exit = True
            await serving

    run(main())
    kinds = [kind for kind, _ in seen]
    assert kinds[0] == "lifespan" and kinds.count("http") == 22
    assert {loop for _, loop in seen} == {ferroloop.Loop}


def test_config_loop_names_ferroloop():
    # Config(loop="module:callable") names a loop factory; Server.run() runs
    # the server on a loop from it (here in a thread: uvicorn installs
    # signal handlers only in the main thread).
    seen = []
    config = make_config(make_app(seen), loop="ferroloop:new_event_loop")
    assert config.get_loop_factory() is ferroloop.new_event_loop
    server = uvicorn.Server(config)
    # An exception in the thread is reported by pytest (and fails the
    # started / is_alive checks below).
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started
        run(exercise(bound_port(server)))
    finally:
        server.should_exit = True
        thread.join(10)
    assert not thread.is_alive()
    assert [kind for kind, _ in seen].count("http") == 22
    assert {loop for _, loop in seen} == {ferroloop.Loop}


CLI_APP = """
import asyncio

import ferroloop


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    loop = asyncio.get_running_loop()
    body = f"{type(loop).__name__} {isinstance(loop, ferroloop.Loop)}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"""


def test_command_line_loop_option(tmp_path):
    # `uvicorn --loop ferroloop:new_event_loop`, stopped with SIGINT. The
    # listening socket is made here and handed over with --fd: no port race.
    (tmp_path / "cli_app.py").write_text(CLI_APP)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    command = [sys.executable, "-m", "uvicorn", "cli_app:app", "--app-dir", str(tmp_path)]
    command += ["--loop", "ferroloop:new_event_loop", "--fd", str(sock.fileno())]
    proc = subprocess.Popen(
        [*command, "--log-level", "warning"], pass_fds=[sock.fileno()], stderr=subprocess.PIPE
    )
    try:

        async def get() -> str:
            assert_on_ferroloop()
            async with httpx.AsyncClient() as client:
                return (await client.get(f"http://127.0.0.1:{port}/")).text

        assert run(get()) == "Loop True"  # the connection waits in the backlog
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=10)
        assert proc.returncode == 0, stderr.decode()
    finally:
        sock.close()
        if proc.poll() is None:  # pragma: no cover
            proc.kill()
            proc.wait()
