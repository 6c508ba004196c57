"""Echo servers for the echo benchmark, one per (mode, loop), as uvloop's vmbench.

    python benchmarks/echo/servers.py --mode protocol --loop ferroloop --addr 127.0.0.1:0
    python benchmarks/echo/servers.py --mode streams --loop uvloop --unix /tmp/echo.sock
    python benchmarks/echo/servers.py --mode protocol --loop ferroloop \
        --tls-cert server.pem --tls-key server.key      # TLS 1.3 (ssl.SSLContext)

Modes:
  sock              loop.sock_accept / sock_recv / sock_sendall, one task per connection
  streams           asyncio.start_server; reader.read, writer.write, await writer.drain()
  protocol          asyncio.Protocol; transport.write(data) in data_received
  bufferedprotocol  asyncio.BufferedProtocol; get_buffer hands out a preallocated
                    memoryview, buffer_updated writes the received bytes back

Every mode listens on a socket bound here (port 0 picks a free port), so all modes
and loops bind the same way, and sets TCP_NODELAY on each accepted TCP connection
(asyncio's own transports do so too). Prints "READY <address>" once listening, then
serves until killed.

With --tls-cert/--tls-key the streams, protocol and bufferedprotocol modes serve
TLS through the loop's own `ssl=` support (asyncio's and ferroloop's sslproto,
uvloop's own), with an `ssl.SSLContext` that allows TLS 1.3 only; `sock` has no
TLS (sock_recv/sock_sendall work on plain sockets).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import ssl
import stat
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/
from loops import LOOPS, import_loop  # (benchmarks/loops.py)

READ_SIZE = 256 * 1024  # more than the largest message, as every mode's read size


def set_nodelay(sock) -> None:
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# ------------------------------------------------------------------------------ sock


async def sock_echo(loop, client: socket.socket) -> None:
    with client:
        try:
            while data := await loop.sock_recv(client, READ_SIZE):
                await loop.sock_sendall(client, data)
        except ConnectionError:
            pass


async def serve_sock(loop, listener: socket.socket, ssl_context=None) -> None:
    if ssl_context is not None:
        raise ValueError("the sock mode has no TLS")
    tasks = set()  # keep references until each connection ends

    async def accept_forever():
        while True:
            client, _ = await loop.sock_accept(listener)
            set_nodelay(client)
            task = loop.create_task(sock_echo(loop, client))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    task = loop.create_task(accept_forever())
    tasks.add(task)


# --------------------------------------------------------------------------- streams


async def streams_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    set_nodelay(writer.get_extra_info("socket"))
    try:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def serve_streams(loop, listener: socket.socket, ssl_context=None) -> None:
    if listener.family == socket.AF_UNIX:
        await asyncio.start_unix_server(streams_echo, sock=listener, ssl=ssl_context)
    else:
        await asyncio.start_server(streams_echo, sock=listener, ssl=ssl_context)


# ------------------------------------------------------------------ (buffered) protocol


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        set_nodelay(transport.get_extra_info("socket"))
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class EchoBufferedProtocol(asyncio.BufferedProtocol):
    def connection_made(self, transport):
        set_nodelay(transport.get_extra_info("socket"))
        self.transport = transport
        self.view = memoryview(bytearray(READ_SIZE))

    def get_buffer(self, sizehint):
        return self.view

    def buffer_updated(self, nbytes):
        # A copy: the buffer is reused for the next read.
        self.transport.write(bytes(self.view[:nbytes]))


def _serve_protocol(protocol_class):
    async def serve(loop, listener: socket.socket, ssl_context=None) -> None:
        if listener.family == socket.AF_UNIX:
            await loop.create_unix_server(protocol_class, sock=listener, ssl=ssl_context)
        else:
            await loop.create_server(protocol_class, sock=listener, ssl=ssl_context)

    return serve


MODES = {
    "sock": serve_sock,
    "streams": serve_streams,
    "protocol": _serve_protocol(EchoProtocol),
    "bufferedprotocol": _serve_protocol(EchoBufferedProtocol),
}


# ------------------------------------------------------------------------------ main


def listen(addr: str | None, unix: str | None) -> socket.socket:
    if unix:
        if os.path.exists(unix) and stat.S_ISSOCK(os.lstat(unix).st_mode):
            os.unlink(unix)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(unix)
    else:
        host, _, port = (addr or "127.0.0.1:0").rpartition(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def address(sock: socket.socket) -> str:
    name = sock.getsockname()
    return name if isinstance(name, str) else f"{name[0]}:{name[1]}"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=MODES, default="protocol")
    parser.add_argument("--loop", choices=LOOPS, default="asyncio")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--addr", help="HOST:PORT to listen on (default 127.0.0.1:0)")
    where.add_argument("--unix", metavar="PATH", help="listen on a Unix socket instead")
    parser.add_argument("--tls-cert", metavar="PEM", help="serve TLS 1.3 with this certificate")
    parser.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    return args


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """TLS 1.3 only; the suite is the client's choice (it offers one)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert, key)
    return context


def serve(loop_name: str, listener: socket.socket, start) -> int:
    """On a new loop of `loop_name`, run `start(loop, listener)`, print `READY
    <address>`, then serve until killed (http/server.py's main too)."""
    loop = import_loop(LOOPS[loop_name]).new_event_loop()
    asyncio.set_event_loop(loop)
    where = address(listener)  # before a loop may take the socket over
    loop.run_until_complete(start(loop, listener))
    print(f"READY {where}", flush=True)
    try:
        loop.run_forever()
    finally:
        loop.close()
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    context = server_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    listener = listen(args.addr, args.unix)
    return serve(args.loop, listener, lambda loop, sock: MODES[args.mode](loop, sock, context))


if __name__ == "__main__":
    sys.exit(main())
