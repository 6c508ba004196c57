"""Subprocesses spawned from loops in non-main threads (preexec_fn while
other threads run Python, two loops spawning at once), with stock asyncio
as the reference.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import threading

from subprocess_support import (
    CAT,
    PIPE,
    SH,
)
from support import ResultThread, run_in_new_loop

# --- from a loop in a non-main thread -----------------------------------------


def test_preexec_fn_from_a_non_main_thread_while_other_threads_run_python(loop_kind):
    # preexec_fn runs Python in the forked child: it must not deadlock on a
    # lock another thread held at fork time (uvloop's reported hang).
    stop = threading.Event()

    def busy():
        while not stop.is_set():
            _ = [str(i) for i in range(1000)]

    async def main():
        outs = []
        for _ in range(10):
            proc = await asyncio.create_subprocess_exec(
                SH, "-c", "umask", stdout=PIPE, preexec_fn=lambda: os.umask(0o077)
            )
            out, _ = await proc.communicate()
            outs.append(out)
        return outs

    busy_threads = [threading.Thread(target=busy)]
    for thread in busy_threads:
        thread.start()
    try:
        spawner = ResultThread(run_in_new_loop, loop_kind, main, 15)
        spawner.start()
        outs = spawner.result(30, hung="spawning with preexec_fn hung")
    finally:
        stop.set()
        for thread in busy_threads:
            thread.join()
    assert outs == [b"0077\n"] * 10


def test_loops_in_two_threads_spawn_at_the_same_time(loop_kind):
    barrier = threading.Barrier(2)

    async def main(tag):
        barrier.wait()

        async def one(i):
            proc = await asyncio.create_subprocess_exec(
                SH, "-c", f"echo {tag}{i}; exit {i % 5}", stdout=PIPE
            )
            out, _ = await proc.communicate()
            return out, proc.returncode

        return await asyncio.gather(*[one(i) for i in range(50)])

    threads = {
        tag: ResultThread(run_in_new_loop, loop_kind, functools.partial(main, tag), 20)
        for tag in "ab"
    }
    for thread in threads.values():
        thread.start()
    for tag, thread in threads.items():
        assert thread.result(30) == [(f"{tag}{i}\n".encode(), i % 5) for i in range(50)]


def test_spawn_from_a_loop_in_a_non_main_thread(loop_kind):
    async def main():
        procs = [
            await asyncio.create_subprocess_exec(CAT, stdin=PIPE, stdout=PIPE) for _ in range(10)
        ]
        outs = await asyncio.gather(*[p.communicate(b"t%d" % i) for i, p in enumerate(procs)])
        sleeper = await asyncio.create_subprocess_exec("sleep", "30")
        sleeper.kill()
        return [o for o, _ in outs], [p.returncode for p in procs], await sleeper.wait()

    thread = ResultThread(run_in_new_loop, loop_kind, main, 10)
    thread.start()
    outs, codes, killed = thread.result(20)
    assert outs == [b"t%d" % i for i in range(10)]
    assert codes == [0] * 10
    assert killed == -signal.SIGKILL
