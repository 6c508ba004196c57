"""Find the handler that blocks a server's event loop.

A small line-based server answers requests; one of its pages is rendered by
a synchronous call (`time.sleep`, standing in for a blocking database
driver or a heavy computation), which stops the whole loop while it runs:
every other client waits.

On ferroloop, `loop.set_slow_callback_threshold()` reports every callback or
task step that runs too long, without debug mode, naming the task and the
line that blocked; `loop.stats()` shows what the loop did, including how
late callbacks ran. Stock asyncio reports slow callbacks only in debug mode
(and says where the task was suspended after the step, not the line that
blocked) and has no statistics.

The reports and the statistics go to stderr, as log output does; stdout,
what the server did and which task each loop found, is the same on both.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time

from _runner import print_loop, run

THRESHOLD = 0.1  # seconds: a callback running longer than this is reported
PAGES = ["/", "/about", "/report", "/", "/about"]


def render_report() -> str:
    """The culprit: a synchronous call inside a coroutine blocks the loop."""
    time.sleep(0.25)  # e.g. a blocking database driver
    return "the quarterly report"


async def handle_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One request per connection: 'GET <path>' -> one line of answer."""
    request = (await reader.readline()).decode().split()
    path = request[1] if len(request) == 2 else "?"
    if path == "/report":
        body = render_report()
    else:
        body = {"/": "home", "/about": "about us"}.get(path, "not found")
    writer.write(f"{path} -> {body}\n".encode())
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def get(port: int, path: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path}\n".encode())
    answer = (await reader.readline()).decode().rstrip("\n")
    writer.close()
    await writer.wait_closed()
    return answer


class Records(logging.Handler):
    """Keeps the slow-callback warnings (and shows them on stderr)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        print(f"[{record.name}] {record.getMessage()}\n", file=sys.stderr)


def watch_slow_callbacks(loop: asyncio.AbstractEventLoop) -> Records:
    records = Records()
    if hasattr(loop, "set_slow_callback_threshold"):  # ferroloop
        logging.getLogger("ferroloop").addHandler(records)
        loop.set_slow_callback_threshold(THRESHOLD)
    else:  # stock asyncio: only debug mode reports slow callbacks
        logging.getLogger("asyncio").addHandler(records)
        loop.set_debug(True)
        loop.slow_callback_duration = THRESHOLD
    return records


def culprit(record: logging.LogRecord) -> str:
    """The coroutine of the task a report names."""
    report = getattr(record, "slow_callback", None)  # ferroloop's report
    if report is not None and report.task is not None:
        return report.task.get_coro().__qualname__
    # asyncio: "Executing <Task ... coro=<handle_client() running at ...>> took ..."
    found = re.search(r"coro=<([\w.]+)\(\)", record.getMessage())
    return found.group(1) if found else "?"


async def main() -> None:
    print_loop()
    loop = asyncio.get_running_loop()
    records = watch_slow_callbacks(loop)

    server = await asyncio.start_server(handle_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        # All at once: while /report blocks the loop, the others wait too.
        answers = await asyncio.gather(*(get(port, path) for path in PAGES))
    for answer in answers:
        print(answer)

    print(f"slow callbacks reported: {len(records.records)}")
    for record in records.records:
        print(f"  the culprit is a step of the task running {culprit(record)}()")

    if hasattr(loop, "stats"):
        print(loop.stats(), file=sys.stderr)
    else:
        print("(stock asyncio keeps no loop statistics)", file=sys.stderr)


if __name__ == "__main__":
    run(main)
