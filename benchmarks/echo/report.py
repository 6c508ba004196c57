"""Medians over rounds, and the text tables of the echo benchmark."""

from __future__ import annotations

import statistics

from measure import CEILING, Workload

REFERENCE, BASELINE = "ferroloop", "uvloop"
SATURATED = 0.9  # busy fraction of a core above which the client's side is saturated
CPU_FIGURES = {  # result key -> column title; see cpustat
    "client_cpu": "client proc",
    "client_load": "client core",
    "server_cpu": "server proc",
    "server_load": "server core",
    "machine_busy": "both CPUs",
    "other_cpu": "other procs",
    "steal": "steal",
}
DISTURBED = 0.15  # cores taken by other processes or the hypervisor: flag the run


def size_label(size: int) -> str:
    return f"{size // 1024}KiB" if size % 1024 == 0 else f"{size}B"


def si(value: float) -> str:
    for factor, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def taken(run: dict) -> float:
    """Cores that other processes and the hypervisor took during one measurement."""
    return run.get("other_cpu", 0) + run.get("steal", 0)


def cell(runs: list[dict]) -> dict:
    """Median, min and max of `rps` over the runs of one cell, failures, disturbed
    runs, and the median and max of each CPU figure."""
    rates = [run["rps"] for run in runs if "rps" in run]
    out = {
        "ok": len(rates),
        "failed": len(runs) - len(rates),
        "errors": sorted({run["error"] for run in runs if "error" in run}),
    }
    if rates:
        out.update(median=statistics.median(rates), min=min(rates), max=max(rates))
    out["disturbed"] = sum(taken(run) > DISTURBED for run in runs)
    for side in CPU_FIGURES:
        values = [run[side] for run in runs if side in run]
        if values:
            out[f"{side}_median"] = statistics.median(values)
            out[f"{side}_max"] = max(values)
    return out


def summarize(results: list[dict], loops: list[str], workloads: list[Workload]) -> dict:
    """{"rows": [{mode, size, concurrency, loops: {loop: cell}}], "ceiling": [...]}."""

    def runs(loop_name, size, concurrency, mode=None):
        return [
            x
            for x in results
            if x["loop"] == loop_name
            and x["size"] == size
            and x["concurrency"] == concurrency
            and (mode is None or x["mode"] == mode)
        ]

    rows = [
        {
            "mode": w.mode,
            "size": w.size,
            "concurrency": w.concurrency,
            "loops": {name: cell(runs(name, w.size, w.concurrency, w.mode)) for name in loops},
        }
        for w in workloads
    ]
    shapes = dict.fromkeys((w.size, w.concurrency) for w in workloads)
    ceiling = [
        {"size": size, "concurrency": c, **cell(runs(CEILING, size, c))} for size, c in shapes
    ]
    return {"rows": rows, "ceiling": ceiling}


def _ceiling_of(summary: dict, size: int, concurrency: int) -> dict:
    for cell in summary["ceiling"]:
        if cell["size"] == size and cell["concurrency"] == concurrency:
            return cell
    return {"ok": 0}


def _loop_cell(cell: dict, ceiling: dict) -> str:
    if not cell["ok"]:
        return "FAILED"
    text = si(cell["median"])
    if ceiling["ok"]:
        text += f" {100 * cell['median'] / ceiling['median']:3.0f}%"
    if cell.get("client_load_max", 0) > SATURATED:
        text += "*"
    if cell.get("disturbed"):
        text += "~"
    return text + ("!" if cell["failed"] else "")


def _ratio(cells: dict) -> str:
    if REFERENCE not in cells or BASELINE not in cells:
        return "n/a"
    ref, base = cells[REFERENCE], cells[BASELINE]
    return f"{ref['median'] / base['median']:.2f}x" if ref["ok"] and base["ok"] else "n/a"


def _columns(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def format_table(summary: dict, loops: list[str]) -> str:
    ratio = REFERENCE in loops and BASELINE in loops
    header = ["mode", "size", "conc", *loops, "ceiling"]
    header += [f"{REFERENCE}/{BASELINE}"] if ratio else []
    rows = [header]
    for row in summary["rows"]:
        ceiling = _ceiling_of(summary, row["size"], row["concurrency"])
        line = [row["mode"], size_label(row["size"]), str(row["concurrency"])]
        line += [_loop_cell(row["loops"][name], ceiling) for name in loops]
        line += [_loop_cell(ceiling, {"ok": 0})]
        rows.append(line + ([_ratio(row["loops"])] if ratio else []))
    return _columns(rows)


def format_cpu(summary: dict, pinned: bool) -> str:
    """Median CPU busy fractions, by concurrency, for the Python servers and the ceiling."""
    figures = [k for k in CPU_FIGURES if pinned or k not in ("client_load", "server_load")]
    groups: dict[tuple[int, str], dict[str, list[float]]] = {}
    cells = [
        (row["concurrency"], "Python", c) for row in summary["rows"] for c in row["loops"].values()
    ]
    cells += [(cell["concurrency"], CEILING, cell) for cell in summary["ceiling"]]
    for concurrency, group, cell in cells:
        values = groups.setdefault((concurrency, group), {})
        for figure in figures:
            if f"{figure}_median" in cell:
                values.setdefault(figure, []).append(cell[f"{figure}_median"])
    rows = [["conc", "servers"] + [CPU_FIGURES[figure] for figure in figures]]
    for (concurrency, group), values in sorted(groups.items()):
        rows.append([str(concurrency), group] + [_spread(values.get(f, [])) for f in figures])
    return _columns(rows)


def _spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values):.2f} (max {max(values):.2f})"


def legend(pinned: bool) -> str:
    client = "its core (CPU 1) was" if pinned else "its process was"
    return (
        "Cells: median requests/s over rounds, and its share of the ceiling (pure-Rust\n"
        "one-thread echo-server, same size and concurrency). * = the client's side was\n"
        f"saturated in some round ({client} over {SATURATED:.0%} busy): that figure is\n"
        "client-bound, a lower bound for the server. ~ = in some round other processes\n"
        f"or the hypervisor (steal) took over {DISTURBED} cores. ! = some rounds failed."
    )


def cpu_legend(pinned: bool) -> str:
    text = (
        "CPU over the measured windows in cores (1.00 = one core busy), median over\n"
        "cells (max over cells). 'proc' is a process's own CPU time; 'both CPUs' also\n"
        "counts softirq time, where loopback TCP does part of its work"
    )
    if pinned:
        return text + ";\n'client core' / 'server core' are CPU 1 / CPU 0 in full:"
    return text + ":"


def disturbance(results: list[dict]) -> str:
    """A warning when other processes or the hypervisor took CPU during the runs."""
    cores = [taken(run) for run in results if "cpu_busy" in run]
    if not cores or statistics.median(cores) <= DISTURBED:
        return ""
    disturbed = sum(x > DISTURBED for x in cores)
    return (
        f"WARNING: other processes or the hypervisor took {statistics.median(cores):.2f} "
        f"cores (median; max {max(cores):.2f}) from the measurements, over {DISTURBED} in "
        f"{disturbed} of {len(cores)}: the figures are disturbed, rerun on a quiet machine."
    )
