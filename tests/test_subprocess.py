"""Subprocesses: asyncio.create_subprocess_exec / _shell, loop.subprocess_exec
/ subprocess_shell with a SubprocessProtocol, the SubprocessTransport API and
the Popen arguments asyncio passes through, on real child processes, with
stock asyncio as the reference (issue #6).

https://docs.python.org/3/library/asyncio-subprocess.html
https://docs.python.org/3/library/asyncio-protocol.html#subprocess-transports
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
import warnings

import pytest
from support import make_loop
from transport_support import MB, pattern, run, wait_until

TRUE = "/bin/true"
SH = "/bin/sh"
CAT = "/bin/cat"
PY = sys.executable
PIPE = asyncio.subprocess.PIPE
DEVNULL = asyncio.subprocess.DEVNULL
STDOUT = asyncio.subprocess.STDOUT

needs_311 = pytest.mark.skipif(sys.version_info < (3, 11), reason="process_group= is 3.11+")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="user=/group= need root")


# --- helpers ------------------------------------------------------------------


def open_fds() -> set[int]:
    """This process's open fds (the listing's own fd excluded)."""
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:  # the fd os.listdir itself used
            continue
        fds.add(int(name))
    return fds


def zombie_children() -> set[int]:
    """Children of this process in state Z (exited, not reaped)."""
    me = os.getpid()
    zombies = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if state == "Z" and int(ppid) == me:
            zombies.add(int(name))
    return zombies


def is_zombie_or_gone(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        return "gone"
    return stat[stat.rindex(")") + 2]


class Recorder(asyncio.SubprocessProtocol):
    """Records every SubprocessProtocol callback in order; pipe data
    coalesced per fd."""

    def __init__(self, loop):
        self.loop = loop
        self.events = []
        self.data = {1: bytearray(), 2: bytearray()}
        self.transport = None
        self.returncode_at_exit = "not called"
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport

    def pipe_data_received(self, fd, data):
        assert data, "pipe_data_received with empty data"
        assert isinstance(data, bytes)
        if self.events[-1] != ("data", fd):
            self.events.append(("data", fd))
        self.data[fd] += data

    def pipe_connection_lost(self, fd, exc):
        self.events.append(("pipe_lost", fd, exc))

    def process_exited(self):
        self.events.append("exited")
        self.returncode_at_exit = self.transport.get_returncode()

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        self.lost.set_result(exc)


async def sh_output(script: str, **kwargs) -> tuple[bytes, int]:
    proc = await asyncio.create_subprocess_exec(SH, "-c", script, stdout=PIPE, **kwargs)
    out, _ = await proc.communicate()
    return out, proc.returncode


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


# Echoes stdin to stdout and, at the same time, its bytes inverted to stderr:
# a parent that does not drain both pipes at once deadlocks it.
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
    reaps it on every version (ferroloop/_unix.py: _close_child_pidfds)."""
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


# --- SubprocessProtocol and SubprocessTransport -------------------------------


def _check_common_order(events, pipes):
    """connection_made first, connection_lost(None) last and once, each
    pipe's data before its pipe_connection_lost(fd, None), each once,
    process_exited once before connection_lost."""
    assert events[0] == "made"
    assert events[-1] == ("lost", None)
    assert events.count("made") == 1
    assert [e for e in events if e[0] == "lost"] == [("lost", None)]
    assert events.count("exited") == 1
    for fd in pipes:
        lost = [i for i, e in enumerate(events) if e == ("pipe_lost", fd, None)]
        assert len(lost) == 1, events
        data = [i for i, e in enumerate(events) if e == ("data", fd)]
        assert all(i < lost[0] for i in data), events


def test_protocol_order_pipes_closed_before_exit(any_loop):
    # The child closes stdout/stderr, then exits only once we closed its
    # stdin, after we saw both pipes lost: process_exited comes after them.
    script = "echo out; echo err >&2; exec 1>&- 2>&-; read line; exit 3"

    async def main():
        transport, proto = await any_loop.subprocess_exec(
            lambda: Recorder(any_loop), SH, "-c", script, stdin=PIPE, stdout=PIPE, stderr=PIPE
        )
        assert proto.events[0] == "made"  # connection_made ran before we got it
        assert proto.transport is transport
        await wait_until(
            lambda: {("pipe_lost", 1, None), ("pipe_lost", 2, None)} <= set(proto.events)
        )
        assert "exited" not in proto.events
        assert transport.get_returncode() is None
        transport.get_pipe_transport(0).close()
        await proto.lost
        return transport, proto

    transport, proto = run(any_loop, main())
    events = proto.events
    _check_common_order(events, pipes=(0, 1, 2))
    assert events.index("exited") > max(
        events.index(("pipe_lost", 1, None)), events.index(("pipe_lost", 2, None))
    )
    assert proto.returncode_at_exit == 3
    assert transport.get_returncode() == 3
    assert bytes(proto.data[1]) == b"out\n" and bytes(proto.data[2]) == b"err\n"
    transport.close()


def test_protocol_order_exit_before_pipes_closed(any_loop):
    # A grandchild keeps stdout open after the child exited, until we close
    # stdin: process_exited comes first, connection_lost waits for the pipe.
    # (fd 3: an asynchronous list's stdin is /dev/null in a non-interactive sh.)
    script = "exec 3<&0; (read line <&3; echo late) & exec 3<&-; echo early; exit 0"

    async def main():
        transport, proto = await any_loop.subprocess_exec(
            lambda: Recorder(any_loop), SH, "-c", script, stdin=PIPE, stdout=PIPE, stderr=DEVNULL
        )
        await wait_until(lambda: "exited" in proto.events)
        assert proto.returncode_at_exit == 0
        assert ("pipe_lost", 1, None) not in proto.events
        assert not proto.lost.done()
        transport.get_pipe_transport(0).write(b"go\n")
        transport.get_pipe_transport(0).close()
        await proto.lost
        return transport, proto

    transport, proto = run(any_loop, main())
    events = proto.events
    _check_common_order(events, pipes=(0, 1))
    assert events.index("exited") < events.index(("pipe_lost", 1, None))
    assert bytes(proto.data[1]) == b"early\nlate\n"
    transport.close()


def test_subprocess_shell_with_protocol(any_loop):
    async def main():
        transport, proto = await any_loop.subprocess_shell(
            lambda: Recorder(any_loop), "echo hi; exit 2", stdin=None, stdout=PIPE, stderr=None
        )
        await proto.lost
        return transport, proto

    transport, proto = run(any_loop, main())
    _check_common_order(proto.events, pipes=(1,))
    assert bytes(proto.data[1]) == b"hi\n"
    assert transport.get_returncode() == 2
    transport.close()


def test_transport_api(any_loop):
    async def main():
        transport, proto = await any_loop.subprocess_exec(
            lambda: Recorder(any_loop), CAT, stdin=PIPE, stdout=PIPE, stderr=DEVNULL
        )
        popen = transport.get_extra_info("subprocess")
        assert isinstance(popen, subprocess.Popen)
        assert transport.get_pid() == popen.pid > 0
        assert transport.get_returncode() is None
        assert not transport.is_closing()
        assert transport.get_protocol() is proto
        stdin = transport.get_pipe_transport(0)
        stdout = transport.get_pipe_transport(1)
        assert isinstance(stdin, asyncio.WriteTransport)
        assert isinstance(stdout, asyncio.ReadTransport)
        assert transport.get_pipe_transport(2) is None  # DEVNULL: no pipe
        assert transport.get_pipe_transport(3) is None
        assert stdin.can_write_eof()
        stdin.write(b"hello ")
        stdin.writelines([b"pipe", b"\n"])
        stdin.write_eof()
        await proto.lost
        assert transport.get_returncode() == 0
        assert transport.get_pid() == popen.pid  # still known after exit
        return proto

    proto = run(any_loop, main())
    assert bytes(proto.data[1]) == b"hello pipe\n"
    _check_common_order(proto.events, pipes=(0, 1))


def test_transport_close_kills_a_running_child(any_loop):
    async def main():
        transport, proto = await any_loop.subprocess_exec(
            lambda: Recorder(any_loop), "sleep", "30", stdin=PIPE, stdout=PIPE, stderr=PIPE
        )
        pid = transport.get_pid()
        transport.close()
        assert transport.is_closing()
        transport.close()  # a second close is a no-op
        await proto.lost
        return transport, proto, pid

    transport, proto, pid = run(any_loop, main())
    assert proto.returncode_at_exit == -signal.SIGKILL
    assert transport.get_returncode() == -signal.SIGKILL
    _check_common_order(proto.events, pipes=(0, 1, 2))
    assert is_zombie_or_gone(pid) == "gone"


def test_transport_signals_and_lookup_error_after_connection_lost(any_loop):
    async def main():
        transport, proto = await any_loop.subprocess_exec(
            lambda: Recorder(any_loop), "sleep", "30", stdin=None, stdout=None, stderr=None
        )
        # Not SIGINT: a test run started in the background passes it ignored.
        transport.send_signal(signal.SIGUSR1)
        await proto.lost
        code = transport.get_returncode()
        for call in (lambda: transport.send_signal(signal.SIGTERM), transport.terminate):
            with pytest.raises(ProcessLookupError):
                call()
        with pytest.raises(ProcessLookupError):
            transport.kill()
        transport.close()
        return code

    assert run(any_loop, main()) == -signal.SIGUSR1


def test_high_level_process_closes_its_transport(any_loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(CAT, stdin=PIPE, stdout=PIPE)
        await proc.communicate(b"x")
        await asyncio.sleep(0.01)
        return proc._transport.is_closing()

    assert run(any_loop, main()) is True


def test_unclosed_transport_resource_warning(any_loop):
    async def main():
        transport, proto = await any_loop.subprocess_exec(
            lambda: Recorder(any_loop), TRUE, stdin=None, stdout=PIPE, stderr=None
        )
        await proto.lost
        return transport.get_pid()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pid = run(any_loop, main())
        gc.collect()
        gc.collect()
    messages = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert [m for m in messages if m.startswith("unclosed transport") and f"pid={pid}" in m], (
        messages
    )


def test_closed_transport_gives_no_resource_warning(any_loop):
    async def main():
        transport, proto = await any_loop.subprocess_exec(
            lambda: Recorder(any_loop), TRUE, stdin=None, stdout=PIPE, stderr=None
        )
        await proto.lost
        transport.close()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(any_loop, main())
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_protocol_connection_made_failure_kills_the_child(any_loop):
    # asyncio's waiter gets the exception from _connect_pipes: a protocol
    # factory that fails makes subprocess_exec fail, with no child left.
    class Boom(Exception):
        pass

    def factory():
        raise Boom

    async def main():
        with pytest.raises(Boom):
            await any_loop.subprocess_exec(factory, TRUE)

    run(any_loop, main())


# --- Popen arguments asyncio passes through -----------------------------------


def test_stdin_devnull_and_stdout_devnull(any_loop):
    async def main():
        a = await asyncio.create_subprocess_exec(CAT, stdin=DEVNULL, stdout=PIPE)
        out_a, _ = await a.communicate()
        b = await asyncio.create_subprocess_exec(SH, "-c", "echo lost", stdout=DEVNULL)
        assert b.stdout is None and b.stdin is None and b.stderr is None
        return out_a, await b.wait()

    assert run(any_loop, main()) == (b"", 0)


def test_stderr_to_stdout(any_loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            SH, "-c", "echo one; echo two >&2; echo three", stdout=PIPE, stderr=STDOUT
        )
        assert proc.stderr is None
        return await proc.communicate()

    assert run(any_loop, main()) == (b"one\ntwo\nthree\n", None)


def test_stdio_as_fds(any_loop):
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    os.write(in_w, b"via fds\n")
    os.close(in_w)

    async def main():
        proc = await asyncio.create_subprocess_exec(CAT, stdin=in_r, stdout=out_w, stderr=out_w)
        assert proc.stdin is None and proc.stdout is None
        return await proc.wait()

    try:
        assert run(any_loop, main()) == 0
        os.close(out_w)
        out_w = -1
        assert os.read(out_r, 100) == b"via fds\n"
    finally:
        for fd in (in_r, out_r, out_w):
            if fd >= 0:
                os.close(fd)


def test_stdio_as_files(any_loop, tmp_path):
    source = tmp_path / "in"
    source.write_bytes(pattern(300_000))

    async def main(fin, fout, ferr):
        proc = await asyncio.create_subprocess_exec(
            SH, "-c", "cat; echo done >&2", stdin=fin, stdout=fout, stderr=ferr
        )
        return await proc.wait()

    with (
        open(source, "rb") as fin,
        open(tmp_path / "out", "wb") as fout,
        open(tmp_path / "err", "wb") as ferr,
    ):
        assert run(any_loop, main(fin, fout, ferr)) == 0
    assert (tmp_path / "out").read_bytes() == pattern(300_000)
    assert (tmp_path / "err").read_bytes() == b"done\n"


def test_cwd(any_loop, tmp_path):
    assert run(any_loop, sh_output("pwd", cwd=tmp_path)) == (f"{tmp_path}\n".encode(), 0)


def test_env_replaces_the_environment(any_loop):
    out, code = run(any_loop, sh_output('echo "$FERRO_X|${HOME-unset}"', env={"FERRO_X": "y z"}))
    assert (out, code) == (b"y z|unset\n", 0)


# Writes to the fd given as argument; says whether it could.
WRITE_FD = """
import os, sys
try:
    os.write(int(sys.argv[1]), b"through\\n")
    print("wrote")
except OSError:
    print("closed")
"""


async def write_fd_child(fd: int, **kwargs) -> bytes:
    proc = await asyncio.create_subprocess_exec(PY, "-c", WRITE_FD, str(fd), stdout=PIPE, **kwargs)
    out, _ = await proc.communicate()
    return out


def test_pass_fds(any_loop):
    r, w = os.pipe()
    try:
        assert run(any_loop, write_fd_child(w, pass_fds=(w,))) == b"wrote\n"
        os.close(w)
        w = -1
        assert os.read(r, 100) == b"through\n"
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


@pytest.mark.parametrize("close_fds", [True, False])
def test_close_fds(any_loop, close_fds):
    r, w = os.pipe()
    os.set_inheritable(w, True)
    try:
        out = run(any_loop, write_fd_child(w, close_fds=close_fds))
        assert out == (b"closed\n" if close_fds else b"wrote\n")
        if not close_fds:
            assert os.read(r, 100) == b"through\n"
    finally:
        os.close(r)
        os.close(w)


# pid, process group and session of the shell itself.
IDS = "read -r pid comm state ppid pgid sid rest < /proc/self/stat; echo $pid $pgid $sid"


def test_start_new_session(any_loop):
    async def main():
        default = await sh_output(IDS)
        new = await sh_output(IDS, start_new_session=True)
        return default, new

    (default, _), (new, _) = run(any_loop, main())
    pid, pgid, sid = map(int, new.split())
    assert pid == pgid == sid
    pid, pgid, sid = map(int, default.split())
    assert pgid == os.getpgid(0) and sid == os.getsid(0)


@needs_311
def test_process_group(any_loop):
    out, _ = run(any_loop, sh_output(IDS, process_group=0))
    pid, pgid, sid = map(int, out.split())
    assert pid == pgid != sid
    assert sid == os.getsid(0)


def test_preexec_fn(any_loop):
    out, code = run(any_loop, sh_output("umask", preexec_fn=lambda: os.umask(0o027)))
    assert (out, code) == (b"0027\n", 0)


def test_preexec_fn_failure_is_raised_in_the_parent(any_loop):
    def fail():
        raise ValueError("from preexec")

    async def main():
        with pytest.raises(subprocess.SubprocessError):
            await asyncio.create_subprocess_exec(TRUE, stdout=PIPE, preexec_fn=fail)

    before = open_fds()
    run(any_loop, main())
    gc.collect()
    assert open_fds() == before


def test_umask(any_loop):
    assert run(any_loop, sh_output("umask", umask=0o037)) == (b"0037\n", 0)


def test_pipesize(any_loop):
    async def main():
        transport, proto = await any_loop.subprocess_exec(
            lambda: Recorder(any_loop),
            CAT,
            stdin=PIPE,
            stdout=PIPE,
            stderr=None,
            pipesize=256 * 1024,
        )
        pipes = [transport.get_pipe_transport(fd).get_extra_info("pipe") for fd in (0, 1)]
        sizes = [fcntl.fcntl(pipe.fileno(), fcntl.F_GETPIPE_SZ) for pipe in pipes]
        transport.get_pipe_transport(0).write(b"sized")
        transport.get_pipe_transport(0).close()
        await proto.lost
        transport.close()
        return sizes, bytes(proto.data[1])

    assert run(any_loop, main()) == ([256 * 1024] * 2, b"sized")


@needs_root
def test_user_and_group(any_loop):
    out, code = run(any_loop, sh_output("id -u; id -g", user=65534, group=65534, cwd="/"))
    assert (out, code) == (b"65534\n65534\n", 0)


@needs_root
def test_extra_groups(any_loop):
    out, code = run(any_loop, sh_output("id -G", group=65534, extra_groups=[4242, 4343], cwd="/"))
    assert code == 0
    assert sorted(map(int, out.split())) == [4242, 4343, 65534]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"universal_newlines": True}, "universal_newlines must be False"),
        ({"text": True}, "text must be False"),
        ({"bufsize": 1}, "bufsize must be 0"),
        ({"encoding": "utf-8"}, "encoding must be None"),
        ({"errors": "strict"}, "errors must be None"),
    ],
)
@pytest.mark.parametrize("api", ["create_subprocess_exec", "create_subprocess_shell"])
def test_rejected_arguments(any_loop, api, kwargs, message):
    async def main():
        args = (TRUE,) if api == "create_subprocess_exec" else ("true",)
        with pytest.raises(ValueError, match=message):
            await getattr(asyncio, api)(*args, **kwargs)

    run(any_loop, main())


def test_loop_level_argument_errors(any_loop):
    async def main():
        with pytest.raises(ValueError, match="cmd must be a string"):
            await any_loop.subprocess_shell(asyncio.SubprocessProtocol, ["true"])
        with pytest.raises(ValueError, match="cmd must be a string"):
            await any_loop.subprocess_shell(asyncio.SubprocessProtocol, b"true"[0])
        with pytest.raises(ValueError, match="shell must be False"):
            await any_loop.subprocess_exec(asyncio.SubprocessProtocol, TRUE, shell=True)
        with pytest.raises(ValueError, match="shell must be True"):
            await any_loop.subprocess_shell(asyncio.SubprocessProtocol, "true", shell=False)
        with pytest.raises(ValueError, match="universal_newlines must be False"):
            await any_loop.subprocess_exec(
                asyncio.SubprocessProtocol, TRUE, universal_newlines=True
            )
        with pytest.raises(ValueError, match="bufsize must be 0"):
            await any_loop.subprocess_shell(asyncio.SubprocessProtocol, "true", bufsize=4096)

    run(any_loop, main())


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
