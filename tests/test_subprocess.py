"""Subprocesses: asyncio.create_subprocess_exec / _shell on real child
processes, with stock asyncio as the reference (issue #6): a thousand of
them leave no zombie and no fd, communicate, exec and shell, wait,
returncodes and signals. The SubprocessProtocol and SubprocessTransport
are in test_subprocess_protocol.py, the Popen arguments asyncio passes
through in test_subprocess_popen_args.py, loops in other threads in
test_subprocess_threads.py; the helpers in subprocess_support.py.

https://docs.python.org/3/library/asyncio-subprocess.html
"""

from __future__ import annotations

import asyncio
import gc
import os
import pathlib
import signal
import sys
import time
import warnings

import pytest
from subprocess_support import (
    CAT,
    PIPE,
    PY,
    SH,
    TRUE,
    is_zombie_or_gone,
    open_fds,
    zombie_children,
)
from support import make_loop
from transport_support import MB, pattern, run

# --- many processes: no zombie, no fd left ------------------------------------


def test_thousand_subprocesses_in_batches_leave_no_zombie_and_no_fd(loop_kind):
    """1,000 children, 100 at a time; fds compared from before the loop was
    made to after it was closed."""
    zombies_before = zombie_children()
    fds_before = open_fds()
    loop = make_loop(loop_kind)
    pids = []

    async def one(i):
        # Half bare /bin/true, half cat with both pipes (fds to clean up).
        if i % 2:
            proc = await asyncio.create_subprocess_exec(TRUE)
            pids.append(proc.pid)
            return await proc.wait()
        proc = await asyncio.create_subprocess_exec(CAT, stdin=PIPE, stdout=PIPE)
        pids.append(proc.pid)
        out, _ = await proc.communicate(b"%d" % i)
        assert out == b"%d" % i
        return proc.returncode

    async def main():
        batch_fds = []
        for _ in range(10):
            codes = await asyncio.gather(*[one(i) for i in range(100)])
            assert codes == [0] * 100
            await asyncio.sleep(0)
            batch_fds.append(len(open_fds()))
        # Nothing piles up from one batch to the next.
        assert max(batch_fds) - min(batch_fds) <= 2, batch_fds

    try:
        run(loop, main(), timeout=60)
        assert len(set(pids)) == 1000
        states = {pid: is_zombie_or_gone(pid) for pid in pids}
        assert not [pid for pid, state in states.items() if state == "Z"]
        assert zombie_children() <= zombies_before
    finally:
        loop.close()
    gc.collect()
    assert open_fds() == fds_before


def test_failed_spawn_leaves_no_fd(any_loop, tmp_path):
    missing = str(tmp_path / "no-such-program")

    async def main():
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec(missing, stdin=PIPE, stdout=PIPE, stderr=PIPE)

    run(any_loop, main())  # first spawn: whatever the loop sets up once
    before = open_fds()
    for _ in range(20):
        run(any_loop, main())
    gc.collect()
    assert open_fds() == before


# --- communicate --------------------------------------------------------------


def test_communicate_10_mib_through_cat(any_loop):
    data = pattern(10 * MB, seed=6)

    async def main():
        proc = await asyncio.create_subprocess_exec(CAT, stdin=PIPE, stdout=PIPE)
        out, err = await proc.communicate(data)
        return out, err, proc.returncode

    out, err, code = run(any_loop, main(), timeout=30)
    assert err is None
    assert code == 0
    assert len(out) == len(data)
    assert out == data


TEE_INVERTED = """
import os
table = bytes(255 - i for i in range(256))
def write_all(fd, b):
    view = memoryview(b)
    while view:
        view = view[os.write(fd, view):]
while chunk := os.read(0, 65536):
    write_all(1, chunk)
    write_all(2, chunk.translate(table))
"""


def test_communicate_10_mib_each_way_with_stderr_at_the_same_time(any_loop):
    data = pattern(10 * MB, seed=7)
    inverted = data.translate(bytes(255 - i for i in range(256)))

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", TEE_INVERTED, stdin=PIPE, stdout=PIPE, stderr=PIPE
        )
        out, err = await proc.communicate(data)
        return out, err, proc.returncode

    out, err, code = run(any_loop, main(), timeout=30)
    assert code == 0, err[-2000:]
    assert len(out) == len(data) and len(err) == len(data)
    assert out == data
    assert err == inverted


def test_communicate_without_input_and_child_that_does_not_read(any_loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            SH, "-c", "echo out; echo err >&2; exit 3", stdin=PIPE, stdout=PIPE, stderr=PIPE
        )
        return await proc.communicate(), proc.returncode

    (out, err), code = run(any_loop, main())
    assert (out, err, code) == (b"out\n", b"err\n", 3)


def test_communicate_input_to_a_child_that_exits_without_reading(any_loop):
    # asyncio ignores BrokenPipeError/ConnectionResetError while feeding input.
    async def main():
        proc = await asyncio.create_subprocess_exec(SH, "-c", "exit 5", stdin=PIPE, stdout=PIPE)
        out, err = await proc.communicate(pattern(4 * MB))
        return out, err, proc.returncode

    assert run(any_loop, main(), timeout=10) == (b"", None, 5)


def test_stream_readline_and_stdin_write_drain(any_loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(CAT, stdin=PIPE, stdout=PIPE)
        lines = []
        for i in range(50):
            proc.stdin.write(f"line {i}\n".encode())
            await proc.stdin.drain()
            lines.append(await proc.stdout.readline())
        proc.stdin.close()
        await proc.stdin.wait_closed()
        rest = await proc.stdout.read()
        return lines, rest, await proc.wait()

    lines, rest, code = run(any_loop, main())
    assert lines == [f"line {i}\n".encode() for i in range(50)]
    assert rest == b""
    assert code == 0


# --- exec, shell, wait, returncode, signals -----------------------------------


@pytest.mark.parametrize("code", [0, 1, 7, 255])
def test_exit_codes_exec_and_shell(any_loop, code):
    async def main():
        exec_proc = await asyncio.create_subprocess_exec(SH, "-c", f"exit {code}")
        shell_proc = await asyncio.create_subprocess_shell(f"exit {code}")
        assert exec_proc.returncode is None or exec_proc.returncode == code
        return await exec_proc.wait(), await shell_proc.wait(), shell_proc.returncode

    assert run(any_loop, main()) == (code, code, code)


def test_shell_runs_through_sh(any_loop):
    async def main():
        proc = await asyncio.create_subprocess_shell(
            "echo $((6 * 7)) | cat; echo to-err 1>&2", stdout=PIPE, stderr=PIPE
        )
        return await proc.communicate()

    assert run(any_loop, main()) == (b"42\n", b"to-err\n")


def test_exec_passes_arguments_verbatim(any_loop):
    args = ["a b", "$HOME", "*", "", "quote'\"", "ünï"]

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import sys; print(repr(sys.argv[1:]))", *args, stdout=PIPE
        )
        out, _ = await proc.communicate()
        return out

    assert run(any_loop, main()).decode().strip() == repr(args)


def test_exec_accepts_bytes_and_pathlike_program(any_loop):
    async def main():
        a = await asyncio.create_subprocess_exec(os.fsencode(TRUE))
        b = await asyncio.create_subprocess_exec(pathlib.Path(TRUE))
        return await a.wait(), await b.wait()

    assert run(any_loop, main()) == (0, 0)


def test_exit_by_signal_is_a_negative_returncode(any_loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(SH, "-c", "kill -TERM $$; sleep 5")
        return await proc.wait()

    assert run(any_loop, main()) == -signal.SIGTERM


@pytest.mark.parametrize(
    "how, expected",
    [
        ("send_signal", -signal.SIGUSR1),
        ("terminate", -signal.SIGTERM),
        ("kill", -signal.SIGKILL),
    ],
)
def test_send_signal_terminate_kill(any_loop, how, expected):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            SH, "-c", "echo ready; exec sleep 30", stdout=PIPE
        )
        assert await proc.stdout.readline() == b"ready\n"
        assert proc.returncode is None
        if how == "send_signal":
            proc.send_signal(signal.SIGUSR1)
        else:
            getattr(proc, how)()
        return await proc.wait(), proc.returncode

    assert run(any_loop, main()) == (expected, expected)


def test_signal_the_child_ignores_keeps_it_running(any_loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            SH, "-c", "trap '' USR1; echo ready; read line; echo got $line", stdin=PIPE, stdout=PIPE
        )
        assert await proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGUSR1)
        await asyncio.sleep(0.05)
        assert proc.returncode is None
        out, _ = await proc.communicate(b"more\n")
        return out, proc.returncode

    assert run(any_loop, main()) == (b"got more\n", 0)


@pytest.mark.parametrize("how", ["send_signal", "terminate", "kill"])
def test_process_lookup_error_after_exit(any_loop, how):
    async def main():
        proc = await asyncio.create_subprocess_exec(TRUE)
        assert await proc.wait() == 0
        # From 3.14, wait() may return before the transport lets go of the
        # process (until then, signalling it does nothing).
        await asyncio.sleep(0.05)
        with pytest.raises(ProcessLookupError):
            if how == "send_signal":
                proc.send_signal(signal.SIGTERM)
            else:
                getattr(proc, how)()
        return proc.returncode

    assert run(any_loop, main()) == 0


def test_wait_from_several_tasks_and_after_exit(any_loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(SH, "-c", "sleep 0.05; exit 4")
        codes = await asyncio.gather(*[proc.wait() for _ in range(5)])
        return codes, await proc.wait(), proc.returncode

    assert run(any_loop, main()) == ([4] * 5, 4, 4)


def test_cancelled_wait_leaves_the_process_running_and_waitable(any_loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(SH, "-c", "read x; exit 9", stdin=PIPE)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), 0.05)
        assert proc.returncode is None
        proc.stdin.write(b"\n")
        return await proc.wait()

    assert run(any_loop, main()) == 9


def test_pid_is_the_child_and_its_parent_is_us(any_loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import os; print(os.getpid(), os.getppid())", stdout=PIPE
        )
        out, _ = await proc.communicate()
        return proc.pid, out

    pid, out = run(any_loop, main())
    assert out.split() == [str(pid).encode(), str(os.getpid()).encode()]


def test_child_exiting_while_the_loop_is_stopped_is_still_waited(loop_kind):
    loop = make_loop(loop_kind)
    try:
        proc = run(loop, asyncio.create_subprocess_exec(SH, "-c", "exit 6"))
        for _ in range(200):  # the child exits while no loop runs
            if is_zombie_or_gone(proc.pid) in ("Z", "gone"):
                break
            time.sleep(0.005)
        assert run(loop, proc.wait()) == 6
        assert is_zombie_or_gone(proc.pid) == "gone"
    finally:
        loop.close()


def test_child_outliving_its_loop_is_reaped(loop_kind):
    """A child still running when its loop is closed: asyncio up to 3.11
    (ThreadedChildWatcher) reaps it when it exits, even while its Process
    object is kept; from 3.12 (PidfdChildWatcher) it stays a zombie until
    the Process is collected. Either way none is left after that. ferroloop
    reaps it on every version (ferroloop/_subprocess.py: _close_child_pidfds)."""
    reaped_while_kept = sys.version_info < (3, 12) or loop_kind == "ferroloop"
    loop = make_loop(loop_kind)
    try:
        proc = run(loop, asyncio.create_subprocess_exec(SH, "-c", "sleep 0.1"))
    finally:
        loop.close()
    pid = proc.pid
    deadline = time.monotonic() + 1.5
    while is_zombie_or_gone(pid) not in ("Z", "gone") and time.monotonic() < deadline:
        time.sleep(0.01)
    if reaped_while_kept:
        while is_zombie_or_gone(pid) != "gone" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert is_zombie_or_gone(pid) == "gone"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # its transport was never closed
        del proc
        gc.collect()
    assert is_zombie_or_gone(pid) == "gone"


def test_stdin_drain_after_the_child_exited(any_loop):
    # The write pipe sees its reader go away: drain() reports the lost pipe.
    async def main():
        proc = await asyncio.create_subprocess_exec(TRUE, stdin=PIPE)
        assert await proc.wait() == 0
        await asyncio.sleep(0.05)
        proc.stdin.write(b"x" * 100_000)
        with pytest.raises(ConnectionResetError):
            await proc.stdin.drain()
        return proc.returncode

    assert run(any_loop, main()) == 0


def test_stdout_read_until_eof_when_the_child_is_killed(any_loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            SH, "-c", "echo started; exec sleep 30", stdout=PIPE
        )
        assert await proc.stdout.readline() == b"started\n"
        proc.kill()
        rest = await proc.stdout.read()
        return rest, await proc.wait()

    assert run(any_loop, main()) == (b"", -signal.SIGKILL)
