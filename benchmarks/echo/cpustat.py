"""CPU accounting from /proc: which side of an echo measurement was busy.

Figures over a measured window (all in cores: 1.0 = one core busy):
  server_cpu    the server process's CPU time per wall second (it is one thread)
  cpu_busy      each CPU's busy fraction, kernel softirq time included: loopback
                TCP does part of its work there, which no process is charged for
  machine_busy  the mean of cpu_busy
  client_load   the client's side: with --taskset CPU 1 in full, else client_cpu
  server_load   with --taskset only: CPU 0 in full
  other_cpu     CPU time of processes other than client and server (disturbance)
  steal         CPU time the hypervisor gave to other guests (disturbance)
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass

TICK = 1 / os.sysconf("SC_CLK_TCK")


def process_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` (all threads); None off Linux."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) * TICK


def _cpu_ticks() -> list[tuple[int, int, int, int]]:
    """(busy, total, in-process, steal) clock ticks of each CPU; [] off Linux."""
    try:
        with open("/proc/stat") as stat:
            lines = [line.split() for line in stat if line[:3] == "cpu" and line[3].isdigit()]
    except OSError:
        return []
    ticks = []
    for fields in lines:
        # guest time is inside user
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
        in_process = user + nice + system
        total = in_process + idle + iowait + irq + softirq + steal
        ticks.append((in_process + irq + softirq, total, in_process, steal))
    return ticks


@dataclass(frozen=True)
class Snapshot:
    server_seconds: float | None
    cpus: list[tuple[int, int, int, int]]


def snapshot(server_pid: int) -> Snapshot:
    return Snapshot(process_seconds(server_pid), _cpu_ticks())


def figures(before: Snapshot, after: Snapshot, wall: float, client_cpu: float, pinned: bool):
    """The figures above, as a dict, for the window between two snapshots."""
    out = {}
    server_cpu = None
    if before.server_seconds is not None and after.server_seconds is not None:
        server_cpu = (after.server_seconds - before.server_seconds) / wall
        out["server_cpu"] = round(server_cpu, 3)
    deltas = [
        tuple(x1 - x0 for x0, x1 in zip(cpu0, cpu1))
        for cpu0, cpu1 in zip(before.cpus, after.cpus)
        if cpu1[1] > cpu0[1]
    ]
    busy = [round(d[0] / d[1], 3) for d in deltas]
    out["cpu_busy"] = busy
    pinned = pinned and len(busy) > 1
    out["client_load"] = busy[1] if pinned else client_cpu
    if pinned:
        out["server_load"] = busy[0]
    if deltas:
        out["machine_busy"] = round(statistics.mean(busy), 3)
        tick_per_core = statistics.mean(d[1] for d in deltas)
        in_processes = sum(d[2] for d in deltas) / tick_per_core
        other = in_processes - client_cpu - (server_cpu or 0.0)
        out["other_cpu"] = round(max(other, 0.0), 3)
        out["steal"] = round(sum(d[3] for d in deltas) / tick_per_core, 3)
    return out
