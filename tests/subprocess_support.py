"""Helpers shared by the subprocess tests (test_subprocess*.py; imported as
a plain module, like support.py): the programs they run, /proc views of
this process's fds and zombie children, and a SubprocessProtocol that
records its callbacks."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

TRUE = "/bin/true"


SH = "/bin/sh"


CAT = "/bin/cat"


PY = sys.executable


PIPE = asyncio.subprocess.PIPE


DEVNULL = asyncio.subprocess.DEVNULL


STDOUT = asyncio.subprocess.STDOUT


needs_311 = pytest.mark.skipif(sys.version_info < (3, 11), reason="process_group= is 3.11+")


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="user=/group= need root")


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


class SubprocessRecorder(asyncio.SubprocessProtocol):
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
