"""Micro-benchmarks of event-loop internals: the workloads of suite.py's internals section.

    python benchmarks/loop_internals.py --quick        # = suite.py --workloads internals --quick
    python benchmarks/loop_internals.py --loops asyncio,ferroloop --rounds 5

Run by itself, it runs the suite's internals section (suite.py's options apply;
no plot unless --plot is given). The suite runs this file as `--child LOOP --jobs
NAME=N,...` in a fresh subprocess per (round, loop): the child imports only that
loop and, per workload, warms up on a throw-away loop with a tenth of the work,
collects garbage, then times the workload on a new loop with time.perf_counter,
and prints one JSON line per workload. A loop that crashes, fails a check or hangs
fails only that cell: a new subprocess carries on with the remaining workloads.

Every workload checks its result (counts, sums, echoed bytes), so a loop cannot win
by dropping work. Timing starts when the loop starts running the workload and stops
when the last operation completed; loop creation and closing are not timed.
call_later's figure includes waiting for the last timer (delays go up to 10 ms),
which bounds it from above for fast loops.
The subprocess workloads include what the kernel and the child do (fork/exec,
running /bin/true or cat), the same for every loop: their ratios understate the
difference between the loops' own parts. to_thread includes the default executor's
thread handoffs.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import gc
import importlib
import json
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import loops  # (benchmarks/loops.py)

SEED = 20240601
MSG_SIZE = 1024


class CheckFailed(Exception):
    """A workload's result was wrong: the loop lost, duplicated or reordered work."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise CheckFailed(message)


# --------------------------------------------------------------------------- workloads
# Each takes a fresh, not yet running loop and a size n, checks its result and returns
# the elapsed seconds of the timed part.


def bench_call_soon(loop, n: int) -> float:
    """One callback schedules n callbacks with call_soon; time until all ran."""
    count = 0

    def callback():
        nonlocal count
        count += 1
        if count == n:
            loop.stop()

    def seed():
        call_soon = loop.call_soon
        for _ in range(n):
            call_soon(callback)

    loop.call_soon(seed)
    start = time.perf_counter()
    loop.run_forever()
    elapsed = time.perf_counter() - start
    _check(count == n, f"{count} callbacks ran, expected {n}")
    return elapsed


def bench_call_later(loop, n: int) -> float:
    """n timers with seeded delays in [0, 10 ms), half cancelled; time until the rest fired."""
    rng = random.Random(SEED)
    delays = [rng.random() * 0.010 for _ in range(n)]
    to_cancel = rng.sample(range(n), n // 2)
    expected = n - len(to_cancel)
    cancelled = bytearray(n)
    fired = wrong = 0

    def callback(i):
        nonlocal fired, wrong
        if cancelled[i]:
            wrong += 1
            return
        fired += 1
        if fired == expected:
            loop.stop()

    def seed():
        call_later = loop.call_later
        handles = [call_later(delay, callback, i) for i, delay in enumerate(delays)]
        for i in to_cancel:
            cancelled[i] = 1
            handles[i].cancel()

    loop.call_soon(seed)
    start = time.perf_counter()
    loop.run_forever()
    elapsed = time.perf_counter() - start
    loop.call_later(0.020, loop.stop)  # untimed: give a wrongly surviving timer its chance
    loop.run_forever()
    _check(wrong == 0, f"{wrong} cancelled timers fired")
    _check(fired == expected, f"{fired} timers fired, expected {expected}")
    return elapsed


def bench_tasks_gather(loop, n: int) -> float:
    """create_task n trivial coroutines and asyncio.gather them."""

    async def one():
        return 1

    async def main():
        return sum(await asyncio.gather(*[loop.create_task(one()) for _ in range(n)]))

    start = time.perf_counter()
    total = loop.run_until_complete(main())
    elapsed = time.perf_counter() - start
    _check(total == n, f"gather summed to {total}, expected {n}")
    return elapsed


def bench_sleep0_pingpong(loop, n: int) -> float:
    """Two tasks take turns through asyncio.sleep(0), n turns in all (n even)."""
    count = out_of_turn = 0
    last = None

    async def player(me):
        nonlocal count, out_of_turn, last
        for _ in range(n // 2):
            out_of_turn += last == me
            last = me
            count += 1
            await asyncio.sleep(0)

    async def main():
        await asyncio.gather(loop.create_task(player(0)), loop.create_task(player(1)))

    start = time.perf_counter()
    loop.run_until_complete(main())
    elapsed = time.perf_counter() - start
    _check(count == n, f"{count} turns taken, expected {n}")
    _check(out_of_turn == 0, f"tasks did not alternate ({out_of_turn} turns out of order)")
    return elapsed


def bench_future_pingpong(loop, n: int) -> float:
    """Two tasks wake each other through Futures; n round trips (2 n handoffs)."""
    ping = [loop.create_future()]
    pong = [loop.create_future()]
    served = 0

    async def server():
        nonlocal served
        for _ in range(n):
            await ping[0]
            ping[0] = loop.create_future()
            served += 1
            pong[0].set_result(served)

    async def client():
        answers = 0
        for i in range(n):
            ping[0].set_result(None)
            answers += await pong[0] == i + 1
            pong[0] = loop.create_future()
        return answers

    async def main():
        server_task = loop.create_task(server())
        answers = await loop.create_task(client())
        await server_task
        return answers

    start = time.perf_counter()
    answers = loop.run_until_complete(main())
    elapsed = time.perf_counter() - start
    _check(served == n and answers == n, f"{served} served, {answers} answered, expected {n}")
    return elapsed


def _messages() -> list[bytes]:
    return [bytes((i + j) % 256 for j in range(MSG_SIZE)) for i in range(4)]


def bench_sock_echo(loop, n: int) -> float:
    """n round trips of 1 KiB over a non-blocking socketpair with sock_sendall/sock_recv."""
    client_sock, server_sock = socket.socketpair()
    client_sock.setblocking(False)
    server_sock.setblocking(False)
    messages = _messages()

    async def server():
        echoed = 0
        while data := await loop.sock_recv(server_sock, 65536):
            await loop.sock_sendall(server_sock, data)
            echoed += len(data)
        return echoed

    async def receive_exactly(size):
        chunks, got = [], 0
        while got < size:
            chunk = await loop.sock_recv(client_sock, size - got)
            _check(bool(chunk), "unexpected EOF from the echo server")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    async def client():
        wrong = 0
        for i in range(n):
            message = messages[i % len(messages)]
            await loop.sock_sendall(client_sock, message)
            wrong += await receive_exactly(MSG_SIZE) != message
        client_sock.shutdown(socket.SHUT_WR)
        return wrong

    async def main():
        server_task = loop.create_task(server())
        wrong = await loop.create_task(client())
        return wrong, await server_task

    try:
        start = time.perf_counter()
        wrong, echoed = loop.run_until_complete(main())
        elapsed = time.perf_counter() - start
    finally:
        client_sock.close()
        server_sock.close()
    _check(wrong == 0, f"{wrong} echoed messages differ from what was sent")
    _check(echoed == n * MSG_SIZE, f"server echoed {echoed} bytes, expected {n * MSG_SIZE}")
    return elapsed


def bench_subprocess_true(loop, n: int) -> float:
    """n times: spawn /bin/true with create_subprocess_exec and wait() for it, one after the other."""

    async def main():
        codes = 0
        for _ in range(n):
            proc = await asyncio.create_subprocess_exec("/bin/true")
            codes += await proc.wait() == 0
        return codes

    start = time.perf_counter()
    ok = loop.run_until_complete(main())
    elapsed = time.perf_counter() - start
    _check(ok == n, f"{n - ok} of {n} /bin/true runs did not exit with 0")
    return elapsed


ECHO_SIZE = 1024 * 1024


def bench_subprocess_echo_1mib(loop, n: int) -> float:
    """n times: spawn cat and communicate() 1 MiB through it, one after the other."""
    payload = bytes(random.Random(SEED).getrandbits(8) for _ in range(4096)) * (ECHO_SIZE // 4096)

    async def main():
        wrong = 0
        for _ in range(n):
            proc = await asyncio.create_subprocess_exec(
                "cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
            )
            out, _ = await proc.communicate(payload)
            wrong += out != payload or proc.returncode != 0
        return wrong

    start = time.perf_counter()
    wrong = loop.run_until_complete(main())
    elapsed = time.perf_counter() - start
    _check(wrong == 0, f"{wrong} of {n} cat runs echoed wrong bytes or failed")
    return elapsed


def bench_queue(loop, n: int) -> float:
    """A producer puts n items into an asyncio.Queue(maxsize=64); a consumer gets them."""

    async def producer(queue):
        for i in range(n):
            await queue.put(i)

    async def consumer(queue):
        total = out_of_order = 0
        for i in range(n):
            item = await queue.get()
            out_of_order += item != i
            total += item
            queue.task_done()
        return total, out_of_order

    async def main():
        queue = asyncio.Queue(maxsize=64)
        producing = loop.create_task(producer(queue))
        total, out_of_order = await loop.create_task(consumer(queue))
        await producing
        await queue.join()
        return total, out_of_order

    start = time.perf_counter()
    total, out_of_order = loop.run_until_complete(main())
    elapsed = time.perf_counter() - start
    _check(out_of_order == 0, f"{out_of_order} items came out of order")
    _check(total == n * (n - 1) // 2, f"items summed to {total}, expected {n * (n - 1) // 2}")
    return elapsed


def _square(i: int) -> int:
    return i * i


def bench_to_thread(loop, n: int) -> float:
    """n calls of asyncio.to_thread(trivial function), 16 in flight at a time."""

    async def main():
        total = 0
        for first in range(0, n, 16):
            batch = range(first, min(first + 16, n))
            total += sum(await asyncio.gather(*[asyncio.to_thread(_square, i) for i in batch]))
        return total

    start = time.perf_counter()
    total = loop.run_until_complete(main())
    elapsed = time.perf_counter() - start
    loop.run_until_complete(loop.shutdown_default_executor())  # untimed
    expected = sum(i * i for i in range(n))
    _check(total == expected, f"results summed to {total}, expected {expected}")
    return elapsed


@dataclass(frozen=True)
class Workload:
    run: Callable[[object, int], float]
    size: int  # operations in a full run; --quick uses a tenth
    unit: str


WORKLOADS = {
    "call_soon": Workload(bench_call_soon, 200_000, "callbacks"),
    "call_later": Workload(bench_call_later, 100_000, "timers"),
    "tasks_gather": Workload(bench_tasks_gather, 100_000, "tasks"),
    "sleep0_pingpong": Workload(bench_sleep0_pingpong, 100_000, "turns"),
    "future_pingpong": Workload(bench_future_pingpong, 50_000, "round trips"),
    "sock_echo": Workload(bench_sock_echo, 50_000, "round trips"),
    "queue": Workload(bench_queue, 100_000, "items"),
    "to_thread": Workload(bench_to_thread, 20_000, "calls"),
    "subprocess_true": Workload(bench_subprocess_true, 1_000, "processes"),
    "subprocess_echo_1mib": Workload(bench_subprocess_echo_1mib, 200, "processes"),
}


# ------------------------------------------------------------------------------ child


def _run_once(factory, workload: Workload, n: int) -> float:
    loop = factory()
    asyncio.set_event_loop(loop)
    try:
        return workload.run(loop, n)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def child_main(module_name: str, jobs: list[tuple[str, int]], timeout: float) -> int:
    """Measure the loop of `module_name` on the given workloads in this process.

    Prints where the loop's module was imported from, then one JSON line per
    finished workload; a workload that hangs past `timeout` makes faulthandler
    dump the stack and exit the process.
    """
    module = importlib.import_module(module_name)
    print(json.dumps({"loop_file": module.__file__}), flush=True)
    for workload_name, n in jobs:
        workload = WORKLOADS[workload_name]
        faulthandler.dump_traceback_later(timeout, exit=True)
        _run_once(module.new_event_loop, workload, max(2, n // 20 * 2))  # warm-up, even size
        gc.collect()
        elapsed = _run_once(module.new_event_loop, workload, n)
        faulthandler.cancel_dump_traceback_later()
        print(json.dumps({"workload": workload_name, "elapsed": elapsed}), flush=True)
    return 0


# ----------------------------------------------------------------------------- parent


def _failure(returncode: int, stderr: str, timeout: float) -> str:
    if stderr.startswith("Timeout ("):  # faulthandler's watchdog, or our backstop
        return f"timed out after {timeout:g}s"
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    lines = stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {returncode}"


def _run_child(loop_name: str, jobs: list[tuple[str, int]], timeout: float):
    """One subprocess for `jobs`; return ({workload: elapsed}, loop file, failure
    or None, stderr)."""
    spec = ",".join(f"{name}={n}" for name, n in jobs)
    command = [sys.executable, __file__, "--child", loops.module(loop_name), "--jobs", spec]
    command += ["--timeout", str(timeout)]
    try:
        proc = subprocess.run(
            command,
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout * (len(jobs) + 1),  # backstop; the child times itself out
            env=loops.child_env(loop_name),
        )
        stdout, stderr, returncode = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as expired:
        stdout, stderr, returncode = _text(expired.stdout), "Timeout (backstop)", 1
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    elapsed = {line["workload"]: line["elapsed"] for line in lines if "workload" in line}
    loop_file = next((line["loop_file"] for line in lines if "loop_file" in line), None)
    failure = _failure(returncode, stderr, timeout) if returncode else None
    return elapsed, loop_file, failure, stderr


def _text(output) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def measure(loop_name: str, jobs: list[tuple[str, int]], timeout: float) -> dict:
    """Run `jobs` on one loop in a fresh subprocess: {workload: outcome}, an
    outcome being {elapsed, ops_per_s, loop_file} or {error, stderr}.

    If the child dies (crash, failed check, timeout), the workload it was on is
    marked failed and a new child goes on with the rest.
    """
    outcomes = {}
    pending = list(jobs)
    while pending:
        elapsed, loop_file, failure, stderr = _run_child(loop_name, pending, timeout)
        for name, n in pending:
            if name in elapsed:
                rate = n / elapsed[name]
                outcomes[name] = {
                    "elapsed": elapsed[name],
                    "ops_per_s": rate,
                    "loop_file": loop_file,
                }
        pending = [job for job in pending if job[0] not in outcomes]
        if pending:
            failed = pending.pop(0)[0]
            outcomes[failed] = {"error": failure or "no result", "stderr": stderr[-4000:]}
    return outcomes


# ------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--child" not in argv:
        import suite  # (benchmarks/suite.py)

        return suite.main(["--workloads", "internals", "--plot", "", *argv])
    parser = argparse.ArgumentParser(description="the child mode (see the module's docstring)")
    parser.add_argument("--child", required=True, choices=set(loops.LOOPS.values()))
    parser.add_argument("--jobs", required=True, help="NAME=N,... (WORKLOADS' names)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds per workload")
    args = parser.parse_args(argv)
    jobs = [(name, int(n)) for name, n in (job.split("=") for job in args.jobs.split(","))]
    return child_main(args.child, jobs, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
