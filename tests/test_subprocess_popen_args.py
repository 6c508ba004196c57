"""The Popen arguments asyncio passes through to a subprocess (stdio as
DEVNULL, fds or files, cwd, env, pass_fds, close_fds, sessions and process
groups, preexec_fn, umask, pipesize, user and groups) and the arguments it
rejects, on real child processes, with stock asyncio as the reference.

https://docs.python.org/3/library/asyncio-subprocess.html
https://docs.python.org/3/library/subprocess.html#popen-constructor
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import os
import subprocess

import pytest
from subprocess_support import (
    CAT,
    DEVNULL,
    PIPE,
    PY,
    SH,
    STDOUT,
    TRUE,
    SubprocessRecorder,
    needs_311,
    needs_root,
    open_fds,
    sh_output,
)
from transport_support import pattern, run

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
            lambda: SubprocessRecorder(any_loop),
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
