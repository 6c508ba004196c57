"""One loop per thread, all at once: the free-threaded stress test.

Eight threads each run their own ferroloop loop serving TCP echo on their
own port. Every loop also runs clients against the *other* loops' servers,
and four extra threads hammer all the loops with `call_soon_threadsafe` and
`run_coroutine_threadsafe`. Every echoed byte and every cross-thread result
is checked; counts must be exact at the end.

It runs 20 s on a free-threaded CPython with the GIL off (PYTHON_GIL=0),
where the loops really run in parallel, and 3 s elsewhere (the same code
paths, serialised by the GIL). FERROLOOP_STRESS_SECONDS overrides both.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import threading
import time

import ferroloop

N_LOOPS = 8
N_HAMMERS = 4


def _gil_disabled() -> bool:
    return not getattr(sys, "_is_gil_enabled", lambda: True)()


DURATION = float(os.environ.get("FERROLOOP_STRESS_SECONDS", "20" if _gil_disabled() else "3"))


class LoopThread(threading.Thread):
    """A thread running its own loop with an echo server."""

    def __init__(self, index: int) -> None:
        super().__init__(name=f"loop-{index}", daemon=True)
        self.index = index
        self.loop = ferroloop.new_event_loop()
        self.port: int | None = None
        self.ready = threading.Event()
        self.echoed = 0  # round trips this loop's clients completed
        self.bad_echoes = 0
        self.pokes = 0  # call_soon_threadsafe callbacks run on this loop
        self.errors: list[BaseException] = []

    async def _echo(self, reader, writer) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._echo, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self.server = server

    def poke(self) -> None:
        # Runs on this loop's thread only: no lock needed.
        assert threading.current_thread() is self
        self.pokes += 1

    async def client(self, ports: list[int], deadline: float) -> None:
        rng = random.Random(self.index)
        while time.monotonic() < deadline:
            port = rng.choice(ports)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                for _ in range(20):
                    payload = rng.randbytes(rng.choice((1, 100, 4096, 70000)))
                    writer.write(payload)
                    got = await reader.readexactly(len(payload))
                    if got == payload:
                        self.echoed += 1
                    else:
                        self.bad_echoes += 1
            finally:
                writer.close()
                await writer.wait_closed()

    def run(self) -> None:
        try:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self._serve())
            self.ready.set()
            self.loop.run_forever()
            self.server.close()
            self.loop.run_until_complete(self.server.wait_closed())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)
            self.ready.set()


async def _square(x: int) -> tuple[int, int]:
    await asyncio.sleep(0)
    return x * x, threading.get_ident()


def _hammer(loops: list[LoopThread], deadline: float, seed: int, tally: dict, lock) -> None:
    rng = random.Random(seed)
    pokes = [0] * len(loops)
    squares = wrong = 0
    while time.monotonic() < deadline:
        i = rng.randrange(len(loops))
        target = loops[i]
        target.loop.call_soon_threadsafe(target.poke)
        pokes[i] += 1
        x = rng.randrange(1000)
        value, ident = asyncio.run_coroutine_threadsafe(_square(x), target.loop).result(10)
        if value == x * x and ident == target.ident:
            squares += 1
        else:
            wrong += 1
    with lock:
        for i, n in enumerate(pokes):
            tally["pokes"][i] += n
        tally["squares"] += squares
        tally["wrong"] += wrong


def test_one_loop_per_thread_under_cross_thread_load():
    loops = [LoopThread(i) for i in range(N_LOOPS)]
    for t in loops:
        t.start()
    for t in loops:
        assert t.ready.wait(10), f"{t.name} did not start"
        assert not t.errors, t.errors
    ports = [t.port for t in loops]
    deadline = time.monotonic() + DURATION

    # Each loop's clients talk to every other loop's server.
    clients = [
        asyncio.run_coroutine_threadsafe(
            t.client([p for p in ports if p != t.port], deadline), t.loop
        )
        for t in loops
    ]
    tally = {"pokes": [0] * N_LOOPS, "squares": 0, "wrong": 0}
    lock = threading.Lock()
    hammers = [
        threading.Thread(target=_hammer, args=(loops, deadline, seed, tally, lock))
        for seed in range(N_HAMMERS)
    ]
    for h in hammers:
        h.start()
    for h in hammers:
        h.join(DURATION + 60)
        assert not h.is_alive(), "a hammer thread hung"
    for c in clients:
        c.result(DURATION + 60)

    # Every poke queued before stop() runs before the loop stops.
    for t in loops:
        t.loop.call_soon_threadsafe(t.loop.stop)
    for t in loops:
        t.join(60)
        assert not t.is_alive(), f"{t.name} did not stop"
        t.loop.close()

    print(
        f"\n{N_LOOPS} loops x {DURATION:.0f} s (GIL {'off' if _gil_disabled() else 'on'}): "
        f"{sum(t.echoed for t in loops)} echo round trips, {tally['squares']} "
        f"run_coroutine_threadsafe results, {sum(tally['pokes'])} call_soon_threadsafe calls"
    )
    assert [t.errors for t in loops] == [[]] * N_LOOPS
    assert sum(t.bad_echoes for t in loops) == 0
    assert all(t.echoed > 0 for t in loops), [t.echoed for t in loops]
    assert tally["wrong"] == 0
    assert tally["squares"] > 0
    assert [t.pokes for t in loops] == tally["pokes"]
