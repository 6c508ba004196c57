"""A child process for test_signals.py: an asyncio program stopped by a signal.

    python signal_child.py LOOP MODE

LOOP is "ferroloop" (run with ferroloop.run) or "asyncio" (asyncio.run, the
reference). MODE:

* sigint: a start_server server, and a background task, idle in the poller
  (no timers) until SIGINT. Prints markers from its cancellation and
  `finally` paths; KeyboardInterrupt is left to propagate, as in a program
  stopped with Ctrl-C.
* sigint-twice: as sigint, but main's cleanup then waits (on nothing that
  comes): the second SIGINT must interrupt it.
* sigint-busy: as sigint, but main never lets the loop block: it spins on
  asyncio.sleep(0) (the signal arrives while callbacks run).
* sigterm: a SIGTERM handler installed with loop.add_signal_handler sets an
  event; main then closes its server and returns normally.

Every marker is one line on stdout, flushed at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading


def say(*words) -> None:
    print(*words, flush=True)


async def handle(reader, writer):
    line = await reader.readline()
    writer.write(b"pong " + line)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def background():
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        say("background cancelled")
        raise
    finally:
        say("background finally")


async def sigint_main(twice=False, busy=False):
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    task = asyncio.ensure_future(background())
    say("ready", server.sockets[0].getsockname()[1])
    try:
        if busy:
            await server.start_serving()
            while True:
                await asyncio.sleep(0)
        await server.serve_forever()
    except asyncio.CancelledError:
        say("main cancelled")
        raise
    finally:
        server.close()
        await server.wait_closed()
        say("main finally")
        if sys.version_info >= (3, 11):
            # asyncio.Runner cancels the other tasks only after main is done;
            # 3.10's asyncio.run cancels all of them at once, in set order.
            assert not task.done()
        if twice:
            await asyncio.sleep(0.1)  # (3.10 cancels the other tasks meanwhile)
            say("cleanup waiting")
            await asyncio.sleep(3600)
            say("cleanup done")


async def sigterm_main():
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    main_thread = threading.get_ident()

    def on_sigterm(tag):
        say("handler", tag, "main thread" if threading.get_ident() == main_thread else "OTHER")
        stop.set()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm, "sigterm")
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    say("ready", server.sockets[0].getsockname()[1])
    try:
        await stop.wait()
        say("stopping")
    finally:
        server.close()
        await server.wait_closed()
        say("removed", loop.remove_signal_handler(signal.SIGTERM))
        say("main finally")
    return 0


def main() -> int:
    kind, mode = sys.argv[1], sys.argv[2]
    # As in an interactive Python: a test run started in the background
    # (`nohup`, `cmd &`) passes SIGINT down ignored, and Python then leaves
    # it ignored instead of raising KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if mode == "sigterm":
        coro = sigterm_main()
    else:
        coro = sigint_main(twice=mode == "sigint-twice", busy=mode == "sigint-busy")
    say("pid", os.getpid())
    if kind == "ferroloop":
        import ferroloop

        code = ferroloop.run(coro)
    else:
        code = asyncio.run(coro)
    say("returned", code)
    return code


if __name__ == "__main__":
    sys.exit(main())
