"""Server objects from create_server (and the accepted transports they
track): hosts, ports, socket options, start/serve/close life cycle, with
stock asyncio as the reference.

https://docs.python.org/3/library/asyncio-eventloop.html#server-objects
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import shutil
import socket
import subprocess
import sys
import warnings

import pytest
from support import open_fd_count
from transport_support import HOST, Recorder, run, wait_until

needs_313 = pytest.mark.skipif(
    sys.version_info < (3, 13), reason="Server.close_clients/abort_clients are 3.13+"
)


# --- helpers ------------------------------------------------------------------


def port_of(server, index=0):
    return server.sockets[index].getsockname()[1]


async def talk(loop, host, port, message=b"hello"):
    """Connect, send message, close; return the client protocol."""
    tr, proto = await loop.create_connection(lambda: Recorder(loop), host, port)
    tr.write(message)
    tr.close()
    await proto.lost
    return proto


def bindable(host, family=socket.AF_INET):
    try:
        with socket.socket(family) as s:
            s.bind((host, 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(
    not (socket.has_ipv6 and bindable("::1", socket.AF_INET6)), reason="no IPv6 loopback"
)


@contextlib.asynccontextmanager
async def closing(server):
    try:
        yield server
    finally:
        server.close()
        await server.wait_closed()


# --- basics -------------------------------------------------------------------


def test_server_basics(any_loop):
    async def main():
        protos = []
        server = await any_loop.create_server(lambda: Recorder(any_loop, registry=protos), HOST, 0)
        assert isinstance(server, asyncio.AbstractServer)
        assert server.get_loop() is any_loop
        assert server.is_serving()
        (sock,) = server.sockets
        assert sock.family == socket.AF_INET
        assert sock.type == socket.SOCK_STREAM
        host, port = sock.getsockname()
        assert host == HOST and port != 0
        assert isinstance(repr(server), str)

        await talk(any_loop, HOST, port, b"first")
        await wait_until(lambda: protos and protos[0].lost.done())
        assert protos[0].data == b"first"
        assert protos[0].events == ["made", "data", "eof", "lost"]

        server.close()
        assert not server.is_serving()
        assert server.sockets == ()
        await server.wait_closed()
        server.close()  # again: a no-op
        await server.wait_closed()
        assert isinstance(repr(server), str)
        with pytest.raises(ConnectionRefusedError):
            await any_loop.create_connection(asyncio.Protocol, HOST, port)

    run(any_loop, main())


def test_each_connection_gets_its_own_protocol(any_loop):
    async def main():
        protos = []
        async with closing(
            await any_loop.create_server(lambda: Recorder(any_loop, registry=protos), HOST, 0)
        ) as server:
            port = port_of(server)
            await asyncio.gather(*(talk(any_loop, HOST, port, b"%d" % i) for i in range(30)))
            await wait_until(lambda: len(protos) == 30 and all(p.lost.done() for p in protos))
            assert sorted(bytes(p.data) for p in protos) == sorted(b"%d" % i for i in range(30))
            assert len({id(p.transport) for p in protos}) == 30

    run(any_loop, main())


def test_a_burst_of_concurrent_connections_is_all_accepted(any_loop):
    async def main():
        protos = []
        async with closing(
            await any_loop.create_server(
                lambda: Recorder(any_loop, registry=protos), HOST, 0, backlog=500
            )
        ) as server:
            port = port_of(server)
            socks = []
            try:
                for _ in range(300):  # all connected before the loop runs again
                    s = socket.socket()
                    s.setblocking(False)
                    with contextlib.suppress(BlockingIOError):
                        s.connect((HOST, port))
                    socks.append(s)
                await wait_until(lambda: len(protos) == 300, timeout=4)
            finally:
                for s in socks:
                    s.close()
            await wait_until(lambda: all(p.lost.done() for p in protos))

    run(any_loop, main())


def test_server_close_leaves_accepted_connections_open(any_loop):
    async def main():
        protos = []
        server = await any_loop.create_server(lambda: Recorder(any_loop, registry=protos), HOST, 0)
        tr, client = await any_loop.create_connection(
            lambda: Recorder(any_loop), HOST, port_of(server)
        )
        try:
            await wait_until(lambda: protos)
            server.close()
            assert not server.is_serving()
            tr.write(b"still here")
            await wait_until(lambda: protos[0].data == b"still here")
            protos[0].transport.write(b"me too")
            await wait_until(lambda: client.data == b"me too")
            assert not protos[0].lost.done()
        finally:
            tr.close()
        await protos[0].lost
        await server.wait_closed()

    run(any_loop, main())


# --- hosts and ports ----------------------------------------------------------


@pytest.mark.skipif(not bindable("127.0.0.2"), reason="127.0.0.2 is not bindable here")
def test_several_hosts(any_loop):
    async def main():
        protos = []
        async with closing(
            await any_loop.create_server(
                lambda: Recorder(any_loop, registry=protos), ["127.0.0.1", "127.0.0.2"], 0
            )
        ) as server:
            names = sorted(s.getsockname() for s in server.sockets)
            assert [h for h, _ in names] == ["127.0.0.1", "127.0.0.2"]
            assert all(p != 0 for _, p in names)
            for host, port in names:
                await talk(any_loop, host, port, host.encode())
            await wait_until(lambda: len(protos) == 2 and all(p.lost.done() for p in protos))
            assert sorted(bytes(p.data) for p in protos) == [b"127.0.0.1", b"127.0.0.2"]
            assert sorted(p.transport.get_extra_info("sockname") for p in protos) == names

    run(any_loop, main())


@pytest.mark.parametrize("host", [None, ""])
def test_no_host_binds_every_interface(any_loop, host):
    async def main():
        async with closing(await any_loop.create_server(asyncio.Protocol, host, 0)) as server:
            addresses = {s.getsockname()[0] for s in server.sockets}
            assert addresses <= {"0.0.0.0", "::"}
            v4 = [s for s in server.sockets if s.family == socket.AF_INET]
            assert v4, "no IPv4 socket"
            await talk(any_loop, HOST, v4[0].getsockname()[1])

    run(any_loop, main())


def test_fixed_port(any_loop):
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]

    async def main():
        async with closing(await any_loop.create_server(asyncio.Protocol, HOST, port)) as server:
            assert port_of(server) == port
            await talk(any_loop, HOST, port)

    run(any_loop, main())


@needs_ipv6
def test_ipv6_server(any_loop):
    async def main():
        protos = []
        async with closing(
            await any_loop.create_server(lambda: Recorder(any_loop, registry=protos), "::1", 0)
        ) as server:
            (sock,) = server.sockets
            assert sock.family == socket.AF_INET6
            assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
            host, port = sock.getsockname()[:2]
            assert host == "::1"
            tr, client = await any_loop.create_connection(lambda: Recorder(any_loop), "::1", port)
            try:
                peer = tr.get_extra_info("peername")
                assert len(peer) == 4 and peer[:2] == ("::1", port)
                await wait_until(lambda: protos)
                assert len(protos[0].transport.get_extra_info("peername")) == 4
                tr.write(b"v6")
                await wait_until(lambda: protos[0].data == b"v6")
            finally:
                tr.close()
            await client.lost

    run(any_loop, main())


# --- socket options -----------------------------------------------------------


def test_reuse_address(any_loop):
    async def main():
        async with closing(await any_loop.create_server(asyncio.Protocol, HOST, 0)) as default:
            # on by default on POSIX
            assert default.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        async with closing(
            await any_loop.create_server(asyncio.Protocol, HOST, 0, reuse_address=False)
        ) as off:
            assert not off.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)

    run(any_loop, main())


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="needs SO_REUSEPORT")
def test_reuse_port(any_loop):
    async def main():
        async with closing(
            await any_loop.create_server(asyncio.Protocol, HOST, 0, reuse_port=True)
        ) as first:
            port = port_of(first)
            assert first.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
            async with closing(
                await any_loop.create_server(asyncio.Protocol, HOST, port, reuse_port=True)
            ) as second:
                assert port_of(second) == port
            with pytest.raises(OSError) as info:
                await any_loop.create_server(asyncio.Protocol, HOST, port)
            assert info.value.errno == errno.EADDRINUSE
            assert "error while attempting to bind on address" in str(info.value)

    run(any_loop, main())


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss to read a listen backlog")
@pytest.mark.parametrize("backlog", [None, 7])
def test_backlog_reaches_listen(any_loop, backlog):
    async def main():
        kwargs = {} if backlog is None else {"backlog": backlog}
        async with closing(await any_loop.create_server(asyncio.Protocol, HOST, 0, **kwargs)) as s:
            command = ["ss", "-Hltn", f"sport = :{port_of(s)}"]
            done = await any_loop.run_in_executor(
                None,
                lambda: subprocess.run(
                    command, capture_output=True, text=True, timeout=10, check=True
                ),
            )
            return int(done.stdout.split()[2])  # a listening socket's Send-Q: its backlog

    assert run(any_loop, main(), timeout=15) == (100 if backlog is None else backlog)


# --- life cycle ---------------------------------------------------------------


def test_start_serving_false(any_loop):
    async def main():
        protos = []
        server = await any_loop.create_server(
            lambda: Recorder(any_loop, registry=protos), HOST, 0, start_serving=False
        )
        async with closing(server):
            assert not server.is_serving()
            port = port_of(server)  # bound, not listening yet
            with pytest.raises(ConnectionRefusedError):
                await any_loop.create_connection(asyncio.Protocol, HOST, port)
            await server.start_serving()
            assert server.is_serving()
            await server.start_serving()  # again: fine
            assert server.is_serving()
            await talk(any_loop, HOST, port, b"now")
            await wait_until(lambda: protos and protos[0].data == b"now")

    run(any_loop, main())


def test_serve_forever_and_cancel(any_loop):
    async def main():
        server = await any_loop.create_server(asyncio.Protocol, HOST, 0, start_serving=False)
        port = port_of(server)
        task = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0.01)
        assert server.is_serving()  # serve_forever starts serving
        await talk(any_loop, HOST, port)
        with pytest.raises(RuntimeError, match="is already being awaited on serve_forever"):
            await server.serve_forever()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # cancelling serve_forever closes the server
        assert not server.is_serving()
        assert server.sockets == ()
        with pytest.raises(RuntimeError, match="is closed"):
            await server.serve_forever()
        with pytest.raises(ConnectionRefusedError):
            await any_loop.create_connection(asyncio.Protocol, HOST, port)

    run(any_loop, main())


def test_close_ends_serve_forever(any_loop):
    async def main():
        server = await any_loop.create_server(asyncio.Protocol, HOST, 0)
        task = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0.01)
        server.close()
        with pytest.raises(asyncio.CancelledError):
            await task
        await server.wait_closed()
        assert not server.is_serving()

    run(any_loop, main())


def test_async_with_server(any_loop):
    async def main():
        server = await any_loop.create_server(asyncio.Protocol, HOST, 0)
        async with server as entered:
            assert entered is server
            assert server.is_serving()
            port = port_of(server)
        assert not server.is_serving()
        assert server.sockets == ()
        with pytest.raises(ConnectionRefusedError):
            await any_loop.create_connection(asyncio.Protocol, HOST, port)

    run(any_loop, main())


def test_wait_closed_with_no_connections(any_loop):
    async def main():
        server = await any_loop.create_server(asyncio.Protocol, HOST, 0)
        waiter = asyncio.ensure_future(server.wait_closed())
        await asyncio.sleep(0.02)
        assert not waiter.done()  # open servers are waited for
        server.close()
        await asyncio.wait_for(waiter, 2)

    run(any_loop, main())


@pytest.mark.skipif(
    sys.version_info < (3, 12, 1), reason="wait_closed waits for connections from 3.12.1 on"
)
def test_wait_closed_waits_for_the_connections(any_loop):
    async def main():
        protos = []
        server = await any_loop.create_server(lambda: Recorder(any_loop, registry=protos), HOST, 0)
        tr, client = await any_loop.create_connection(
            lambda: Recorder(any_loop), HOST, port_of(server)
        )
        await wait_until(lambda: protos)
        server.close()
        waiter = asyncio.ensure_future(server.wait_closed())
        await asyncio.sleep(0.05)
        assert not waiter.done()  # a connection is still open
        tr.close()
        await protos[0].lost
        await asyncio.wait_for(waiter, 2)
        await client.lost

    run(any_loop, main())


@needs_313
@pytest.mark.parametrize("how", ["close_clients", "abort_clients"])
def test_close_and_abort_clients(any_loop, how):
    async def main():
        protos = []
        server = await any_loop.create_server(lambda: Recorder(any_loop, registry=protos), HOST, 0)
        clients = [
            await any_loop.create_connection(lambda: Recorder(any_loop), HOST, port_of(server))
            for _ in range(3)
        ]
        await wait_until(lambda: len(protos) == 3)
        server.close()
        getattr(server, how)()
        assert await asyncio.gather(*(p.lost for p in protos)) == [None] * 3
        for _, client in clients:
            exc = await client.lost
            assert exc is None or isinstance(exc, ConnectionResetError)
        await asyncio.wait_for(server.wait_closed(), 2)

    run(any_loop, main())


# --- sock= and argument errors ------------------------------------------------


@pytest.mark.parametrize("listening", [False, True])
def test_server_with_sock(any_loop, listening):
    async def main():
        sock = socket.socket()
        sock.bind((HOST, 0))
        if listening:
            sock.listen()
        protos = []
        async with closing(
            await any_loop.create_server(lambda: Recorder(any_loop, registry=protos), sock=sock)
        ) as server:
            assert server.sockets[0].getsockname() == sock.getsockname()
            await talk(any_loop, HOST, sock.getsockname()[1], b"sock=")
            await wait_until(lambda: protos and protos[0].data == b"sock=")
        assert sock.fileno() == -1  # closing the server closed it

    run(any_loop, main())


def test_server_argument_errors(any_loop):
    async def main():
        with (
            socket.socket() as s,
            pytest.raises(ValueError, match="host/port and sock can not be specified"),
        ):
            await any_loop.create_server(asyncio.Protocol, HOST, 0, sock=s)
        with pytest.raises(ValueError, match="Neither host/port nor sock were specified"):
            await any_loop.create_server(asyncio.Protocol)
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s,
            pytest.raises(ValueError, match="A Stream Socket was expected"),
        ):
            await any_loop.create_server(asyncio.Protocol, sock=s)
        with pytest.raises(TypeError, match="ssl argument must be an SSLContext or None"):
            await any_loop.create_server(asyncio.Protocol, HOST, 0, ssl=True)
        with pytest.raises(ValueError, match="ssl_handshake_timeout is only meaningful with ssl"):
            await any_loop.create_server(asyncio.Protocol, HOST, 0, ssl_handshake_timeout=1)

    run(any_loop, main())


# --- errors while accepting ---------------------------------------------------


class FirstFactoryCallFails:
    def __init__(self, loop):
        self.loop = loop
        self.calls = 0
        self.protos = []

    def __call__(self):
        self.calls += 1
        if self.calls == 1:
            raise ZeroDivisionError("no protocol for the first connection")
        return Recorder(self.loop, registry=self.protos)


@pytest.mark.parametrize("debug", [False, True])
def test_protocol_factory_failure(any_loop, handler_calls, debug):
    any_loop.set_debug(debug)

    async def main():
        factory = FirstFactoryCallFails(any_loop)
        async with closing(await any_loop.create_server(factory, HOST, 0)) as server:
            port = port_of(server)
            tr, client = await any_loop.create_connection(lambda: Recorder(any_loop), HOST, port)
            if debug:
                # The reported exception's traceback keeps the accepted
                # socket alive as long as the context is held.
                await wait_until(lambda: handler_calls)
            else:
                # the failed connection is dropped
                exc = await client.lost
                assert exc is None or isinstance(exc, ConnectionResetError)
            tr.close()
            # and the server keeps serving
            await talk(any_loop, HOST, port, b"second")
            await wait_until(lambda: factory.protos and factory.protos[0].data == b"second")
            return factory

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # the dropped socket
        factory = run(any_loop, main())
        gc.collect()
    assert factory.calls == 2
    failures = [c for c in handler_calls if isinstance(c.get("exception"), ZeroDivisionError)]
    if debug:
        # asyncio reports it in debug mode only
        assert len(failures) == 1
        assert failures[0]["message"] == "Error on transport creation for incoming connection"
    else:
        assert failures == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del failures
        handler_calls.clear()  # let the dropped socket go
        gc.collect()


# --- resources ----------------------------------------------------------------


def test_server_life_cycle_leaks_no_fd(any_loop, handler_calls):
    async def main():
        gc.collect()
        before = open_fd_count()
        for _ in range(5):
            protos = []
            server = await any_loop.create_server(
                lambda reg=protos: Recorder(any_loop, registry=reg), HOST, 0
            )
            port = port_of(server)
            pairs = await asyncio.gather(
                *(
                    any_loop.create_connection(lambda: Recorder(any_loop), HOST, port)
                    for _ in range(100)
                )
            )
            await wait_until(lambda reg=protos: len(reg) == 100)
            server.close()
            # half the connections closed by the client, half by the server
            for tr, _ in pairs[::2]:
                tr.close()
            for p in protos[1::2]:
                p.transport.close()
            await asyncio.gather(*(c.lost for _, c in pairs), *(p.lost for p in protos))
            await server.wait_closed()
        del pairs, protos
        await asyncio.sleep(0.01)
        gc.collect()
        return before, open_fd_count()

    before, after = run(any_loop, main(), timeout=30)
    assert after == before
    assert handler_calls == []
