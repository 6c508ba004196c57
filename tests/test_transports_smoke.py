"""asyncio's own services (streams, transports, pipes, subprocesses,
signals) running on top of the core: smoke tests with real sockets,
processes and signals (the stream echo on TCP and on a Unix socket)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
import time

import pytest
from support import run_forever_with_thread, run_forever_with_watchdog


def _run(loop, coro, timeout=20):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def test_stream_echo_server(any_loop, stream_family):
    async def handle(reader, writer):
        while line := await reader.readline():
            writer.write(line.upper())
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await stream_family.start_stream_server(handle)
        if stream_family.name == "tcp":
            host, _port = server.sockets[0].getsockname()[:2]
            assert host == "127.0.0.1"
        async with server:
            reader, writer = await stream_family.open_stream(stream_family.address(server))
            replies = []
            for word in (b"alpha\n", b"beta\n", b"x" * 50_000 + b"\n"):
                writer.write(word)
                await writer.drain()
                replies.append(await reader.readline())
            writer.write_eof()
            assert await reader.read() == b""  # the server closed its side
            writer.close()
            await writer.wait_closed()
        return replies

    replies = _run(any_loop, main())
    assert replies == [b"ALPHA\n", b"BETA\n", b"X" * 50_000 + b"\n"]


def test_many_concurrent_stream_clients(any_loop):
    async def handle(reader, writer):
        data = await reader.read(100)
        writer.write(data[::-1])
        await writer.drain()
        writer.close()

    async def client(port, i):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"msg-{i}".encode())
        reply = await reader.read()
        writer.close()
        await writer.wait_closed()
        return reply

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await asyncio.gather(*(client(port, i) for i in range(50)))

    assert _run(any_loop, main()) == [f"msg-{i}".encode()[::-1] for i in range(50)]


def test_protocol_server_and_connection(any_loop):
    received = []

    class Server(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            received.append(data)
            self.transport.write(b"ack:" + data)

    class Client(asyncio.Protocol):
        def __init__(self, done):
            self.done = done
            self.data = b""

        def data_received(self, data):
            self.data += data
            if self.data.endswith(b"hello"):
                self.done.set_result(self.data)

    async def main():
        server = await any_loop.create_server(Server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        done = any_loop.create_future()
        transport, _ = await any_loop.create_connection(lambda: Client(done), "127.0.0.1", port)
        assert transport.get_extra_info("peername")[1] == port
        assert "fd=" in repr(transport)  # asks the loop's selector about its fd
        transport.write(b"hello")
        reply = await done
        transport.close()
        server.close()
        await server.wait_closed()
        return reply

    assert _run(any_loop, main()) == b"ack:hello"
    assert received == [b"hello"]


def test_datagram_endpoint(any_loop):
    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.transport.sendto(data * 2, addr)

    class Client(asyncio.DatagramProtocol):
        def __init__(self, done):
            self.done = done

        def datagram_received(self, data, addr):
            self.done.set_result(data)

    async def main():
        server, _ = await any_loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        addr = server.get_extra_info("sockname")
        done = any_loop.create_future()
        client, _ = await any_loop.create_datagram_endpoint(lambda: Client(done), remote_addr=addr)
        client.sendto(b"ping")
        try:
            return await done
        finally:
            client.close()
            server.close()

    assert _run(any_loop, main()) == b"pingping"


def test_read_and_write_pipes(any_loop):
    async def main():
        r, w = os.pipe()
        reader = asyncio.StreamReader()
        read_transport, _ = await any_loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(r, "rb", 0)
        )
        write_transport, _ = await any_loop.connect_write_pipe(
            asyncio.Protocol, os.fdopen(w, "wb", 0)
        )
        write_transport.write(b"through a pipe\n")
        line = await reader.readline()
        write_transport.close()
        assert await reader.read() == b""
        read_transport.close()
        return line

    assert _run(any_loop, main()) == b"through a pipe\n"


def test_subprocess_exec_reads_stdout(any_loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; print('hello from', sys.argv[1]); sys.exit(3)",
            "child",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        return out, proc.returncode

    out, code = _run(any_loop, main())
    assert out.decode().strip() == "hello from child"
    assert code == 3


def test_subprocess_stdin_to_stdout(any_loop):
    payload = b"line\n" * 20_000

    async def main():
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read().upper())",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate(payload)
        return out, proc.returncode

    out, code = _run(any_loop, main())
    assert code == 0
    assert out == payload.upper()


def test_subprocess_shell_and_wait(any_loop):
    async def main():
        proc = await asyncio.create_subprocess_shell(
            "echo $((6 * 7)); exit 5", stdout=asyncio.subprocess.PIPE
        )
        line = await proc.stdout.readline()
        return line, await proc.wait()

    assert _run(any_loop, main()) == (b"42\n", 5)


def test_subprocess_kill(any_loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import time; time.sleep(60)"
        )
        proc.kill()
        return await proc.wait()

    assert _run(any_loop, main()) == -signal.SIGKILL


@pytest.fixture
def sigusr1():
    old = signal.getsignal(signal.SIGUSR1)
    try:
        yield signal.SIGUSR1
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_add_signal_handler_with_a_real_signal(any_loop, sigusr1):
    got = []

    def on_signal(tag):
        got.append((tag, threading.get_ident()))
        any_loop.stop()

    any_loop.add_signal_handler(sigusr1, on_signal, "usr1")
    try:
        any_loop.call_soon(os.kill, os.getpid(), sigusr1)
        run_forever_with_watchdog(any_loop)
    finally:
        assert any_loop.remove_signal_handler(sigusr1) is True
    assert got == [("usr1", threading.get_ident())]
    assert any_loop.remove_signal_handler(sigusr1) is False


def test_signal_wakes_a_loop_blocked_in_the_poller(any_loop, sigusr1):
    """The loop has nothing to do; a signal sent from another thread must
    wake it and run the handler at once."""
    got = []
    any_loop.add_signal_handler(sigusr1, lambda: (got.append(True), any_loop.stop()))

    def send():
        time.sleep(0.2)  # let the loop block
        os.kill(os.getpid(), sigusr1)

    try:
        elapsed = run_forever_with_thread(any_loop, send, timeout=10)
    finally:
        any_loop.remove_signal_handler(sigusr1)
    assert got == [True]
    assert elapsed < 3.0, f"the signal took {elapsed:.2f}s to wake the loop"


def test_add_signal_handler_errors(any_loop):
    with pytest.raises(RuntimeError):
        any_loop.add_signal_handler(signal.SIGKILL, int)
    with pytest.raises(ValueError):
        any_loop.add_signal_handler(10_000, int)
    coro = asyncio.sleep(0)
    try:
        with pytest.raises(TypeError):
            any_loop.add_signal_handler(signal.SIGUSR2, coro)
    finally:
        coro.close()


def test_sock_level_and_stream_level_on_the_same_loop(any_loop):
    """A raw socket accepted by sock_accept can be handed to streams."""

    async def main():
        listener = socket.socket()
        listener.setblocking(False)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        connect = any_loop.create_task(asyncio.open_connection("127.0.0.1", port))
        conn, _ = await any_loop.sock_accept(listener)
        listener.close()
        _, writer = await connect
        sreader, swriter = await asyncio.open_connection(sock=conn)
        writer.write(b"to server\n")
        got = await sreader.readline()
        for w in (writer, swriter):
            w.close()
            await w.wait_closed()
        return got

    assert _run(any_loop, main()) == b"to server\n"
