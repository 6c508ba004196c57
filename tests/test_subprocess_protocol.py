"""loop.subprocess_exec / subprocess_shell with a SubprocessProtocol: the
order of its callbacks, the SubprocessTransport API, closing and
ResourceWarning, on real child processes, with stock asyncio as the
reference.

https://docs.python.org/3/library/asyncio-protocol.html#subprocess-transports
"""

from __future__ import annotations

import asyncio
import gc
import signal
import subprocess
import warnings

import pytest
from subprocess_support import (
    CAT,
    DEVNULL,
    PIPE,
    SH,
    TRUE,
    SubprocessRecorder,
    is_zombie_or_gone,
)
from transport_support import run, wait_until

# --- SubprocessProtocol and SubprocessTransport -------------------------------


def recorded_exec(loop, *args, **kwargs):
    """loop.subprocess_exec with a SubprocessRecorder."""
    return loop.subprocess_exec(lambda: SubprocessRecorder(loop), *args, **kwargs)


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
        transport, proto = await recorded_exec(
            any_loop, SH, "-c", script, stdin=PIPE, stdout=PIPE, stderr=PIPE
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
        transport, proto = await recorded_exec(
            any_loop, SH, "-c", script, stdin=PIPE, stdout=PIPE, stderr=DEVNULL
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
            lambda: SubprocessRecorder(any_loop),
            "echo hi; exit 2",
            stdin=None,
            stdout=PIPE,
            stderr=None,
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
        transport, proto = await recorded_exec(
            any_loop, CAT, stdin=PIPE, stdout=PIPE, stderr=DEVNULL
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
        transport, proto = await recorded_exec(
            any_loop, "sleep", "30", stdin=PIPE, stdout=PIPE, stderr=PIPE
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
        transport, proto = await recorded_exec(
            any_loop, "sleep", "30", stdin=None, stdout=None, stderr=None
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
        transport, proto = await recorded_exec(any_loop, TRUE, stdin=None, stdout=PIPE, stderr=None)
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
        transport, proto = await recorded_exec(any_loop, TRUE, stdin=None, stdout=PIPE, stderr=None)
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
