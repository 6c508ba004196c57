"""HTTP/1.1 keep-alive servers for the benchmark suite, one per (mode, loop).

    python benchmarks/http/server.py --mode httptools --loop ferroloop --addr 127.0.0.1:0
    python benchmarks/http/server.py --mode aiohttp --loop uvloop

Modes:
  httptools  an asyncio.Protocol feeding httptools.HttpRequestParser, answering every
             complete request with a fixed response (as uvloop's vmbench http server)
  aiohttp    an aiohttp.web application with one handler, run by AppRunner + SockSite

Both answer any request with 200 and the same small body (BODY, with Content-Length)
and keep the connection open unless the client asks otherwise. The listening socket is
bound as in echo/servers.py (TCP_NODELAY on each accepted connection). Prints
"READY <address>" once listening, then serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

try:
    import httptools
except ImportError:  # only the httptools mode needs it
    httptools = None

BENCHMARKS = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(BENCHMARKS), str(BENCHMARKS / "echo")]
from loops import LOOPS  # (benchmarks/loops.py)
from servers import listen, serve, set_nodelay  # (echo/servers.py)

BODY = b"Hello, World! " * 8  # 112 bytes
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n" + BODY
)


# ------------------------------------------------------------------------- httptools


class HttpToolsProtocol(asyncio.Protocol):
    """vmbench's approach: httptools does the parsing, the protocol answers each
    complete request (pipelined ones too) with one write."""

    def __init__(self):
        self.parser = httptools.HttpRequestParser(self)
        self.transport = None
        self.url = None

    def connection_made(self, transport):
        set_nodelay(transport.get_extra_info("socket"))
        self.transport = transport

    def connection_lost(self, exc):
        self.transport = None

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()
            print(f"bad request: {error!r}", file=sys.stderr)

    # httptools callbacks
    def on_url(self, url):
        self.url = url

    def on_message_complete(self):
        self.transport.write(RESPONSE)
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve_httptools(loop, listener) -> None:
    await loop.create_server(HttpToolsProtocol, sock=listener)


# --------------------------------------------------------------------------- aiohttp

_KEEP = []


async def serve_aiohttp(loop, listener) -> None:
    from aiohttp import web

    async def hello(request):
        return web.Response(body=BODY, content_type="text/plain")

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", hello)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, listener).start()
    _KEEP.append(runner)  # for the server's lifetime (aiohttp sets TCP_NODELAY itself)


MODES = {"httptools": serve_httptools, "aiohttp": serve_aiohttp}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=MODES, default="httptools")
    parser.add_argument("--loop", choices=LOOPS, default="asyncio")
    parser.add_argument("--addr", help="HOST:PORT to listen on (default 127.0.0.1:0)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    return serve(args.loop, listen(args.addr, None), MODES[args.mode])


if __name__ == "__main__":
    sys.exit(main())
