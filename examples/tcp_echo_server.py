"""A TCP echo server (asyncio.start_server) and clients
(asyncio.open_connection), with the streams API."""

from __future__ import annotations

import asyncio

from _runner import print_loop, run


async def handle_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Called for each connection: echo each line back, upper-cased."""
    try:
        while line := await reader.readline():  # b"" at end of stream
            writer.write(line.upper())
            await writer.drain()  # respect flow control
    finally:
        writer.close()
        await writer.wait_closed()


async def client(port: int, name: str, lines: list[str]) -> tuple[list[str], bool]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = []
    for line in lines:
        writer.write(f"{name}: {line}\n".encode())
        await writer.drain()
        replies.append((await reader.readline()).decode().rstrip("\n"))
    writer.write_eof()  # the server's readline() returns b""
    closed_by_server = await reader.read() == b""  # then the server closes
    writer.close()
    await writer.wait_closed()
    return replies, closed_by_server


async def main() -> None:
    print_loop()
    # Port 0: the OS picks a free port; read it back from the socket.
    server = await asyncio.start_server(handle_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:  # closes the server on exit
        # A long line arrives in many reads; readline() joins them (up to the
        # stream's limit, 64 KiB by default: start_server(..., limit=...)).
        words = ["hello", "asyncio", "x" * 50_000]
        results = await asyncio.gather(*(client(port, f"client-{i}", words) for i in range(3)))
    print("server serving after the block:", server.is_serving())
    print("every connection closed by the server:", all(closed for _, closed in results))
    # The clients ran concurrently: print their replies sorted.
    for reply in sorted(r for replies, _ in results for r in replies):
        print(reply if len(reply) < 40 else f"{reply[:20]}... ({len(reply)} chars)")


if __name__ == "__main__":
    run(main)
