"""Subprocesses spawned from loops in non-main threads (preexec_fn while
other threads run Python, two loops spawning at once), with stock asyncio
as the reference.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading

from subprocess_support import (
    CAT,
    PIPE,
    SH,
)
from support import make_loop

# --- from a loop in a non-main thread -----------------------------------------


def test_preexec_fn_from_a_non_main_thread_while_other_threads_run_python(loop_kind):
    # preexec_fn runs Python in the forked child: it must not deadlock on a
    # lock another thread held at fork time (uvloop's reported hang).
    results = {}
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

    def thread_main():
        loop = make_loop(loop_kind)
        try:
            results["value"] = loop.run_until_complete(asyncio.wait_for(main(), 15))
        except BaseException as exc:  # noqa: BLE001 (re-raised in the main thread)
            results["error"] = exc
        finally:
            loop.close()

    busy_threads = [threading.Thread(target=busy)]
    for thread in busy_threads:
        thread.start()
    try:
        spawner = threading.Thread(target=thread_main)
        spawner.start()
        spawner.join(30)
        assert not spawner.is_alive(), "spawning with preexec_fn hung"
    finally:
        stop.set()
        for thread in busy_threads:
            thread.join()
    if "error" in results:
        raise results["error"]
    assert results["value"] == [b"0077\n"] * 10


def test_loops_in_two_threads_spawn_at_the_same_time(loop_kind):
    results = {}
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

    def thread_main(tag):
        loop = make_loop(loop_kind)
        try:
            results[tag] = loop.run_until_complete(asyncio.wait_for(main(tag), 20))
        except BaseException as exc:  # noqa: BLE001 (re-raised in the main thread)
            results[tag] = exc
        finally:
            loop.close()

    threads = [threading.Thread(target=thread_main, args=(tag,)) for tag in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for tag in "ab":
        if isinstance(results[tag], BaseException):
            raise results[tag]
        assert results[tag] == [(f"{tag}{i}\n".encode(), i % 5) for i in range(50)]


def test_spawn_from_a_loop_in_a_non_main_thread(loop_kind):
    results = {}

    async def main():
        procs = [
            await asyncio.create_subprocess_exec(CAT, stdin=PIPE, stdout=PIPE) for _ in range(10)
        ]
        outs = await asyncio.gather(*[p.communicate(b"t%d" % i) for i, p in enumerate(procs)])
        sleeper = await asyncio.create_subprocess_exec("sleep", "30")
        sleeper.kill()
        return [o for o, _ in outs], [p.returncode for p in procs], await sleeper.wait()

    def thread_main():
        loop = make_loop(loop_kind)
        try:
            results["value"] = loop.run_until_complete(asyncio.wait_for(main(), 10))
        except BaseException as exc:  # noqa: BLE001 (re-raised in the main thread)
            results["error"] = exc
        finally:
            loop.close()

    thread = threading.Thread(target=thread_main)
    thread.start()
    thread.join(20)
    assert not thread.is_alive()
    if "error" in results:
        raise results["error"]
    outs, codes, killed = results["value"]
    assert outs == [b"t%d" % i for i in range(10)]
    assert codes == [0] * 10
    assert killed == -signal.SIGKILL
