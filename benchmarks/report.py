"""The suite's summary, tables and chart: medians over rounds, ratios, the headline
figures of issue #7's goals, the CPU tables, and the PNG of ratios.

A result is one measurement: {"line", "loop", "round", ...} with `ops_per_s`
(internals) or `rps` (echo, tls, http) and, for the echo/HTTP runs, the CPU
figures of echo/cpustat.py. A cell is the median, min and max over the rounds of
one (line, loop). Ratios are ratios of medians (> 1: ferroloop faster).
"""

from __future__ import annotations

import math
import statistics

from loops import BASE, CEILING

REFERENCE, COMPARED, STOCK = "ferroloop", "uvloop", "asyncio"
SECTIONS = ("internals", "echo", "tls", "http")
GOAL_GEOMEAN, GOAL_CEILING = 1.3, 0.85  # issue #7
GOAL_LINE = "echo/protocol 1KiB c16"  # the line whose share of the ceiling is a goal
TIE = 0.05  # within 5% of the best other loop counts as a tie (issue #20)
SATURATED = 0.9  # busy fraction of a core above which the client's side is saturated
DISTURBED = 0.15  # cores taken by other processes or the hypervisor: flag the run
CPU_FIGURES = {  # result key -> column title; see echo/cpustat.py
    "client_cpu": "client proc",
    "client_load": "client core",
    "server_cpu": "server proc",
    "server_load": "server core",
    "machine_busy": "both CPUs",
    "other_cpu": "other procs",
    "steal": "steal",
}


def size_label(size: int) -> str:
    return f"{size // 1024}KiB" if size % 1024 == 0 else f"{size}B"


def si(value: float) -> str:
    for factor, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def columns(rows: list[list[str]]) -> str:
    """Rows of cells as left-aligned columns, a rule under the first (the header)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def taken(run: dict) -> float:
    """Cores that other processes and the hypervisor took during one measurement."""
    return run.get("other_cpu", 0) + run.get("steal", 0)


def cell(runs: list[dict], rate_key: str = "rps") -> dict:
    """Median, min and max of `rate_key` over the runs of one cell, failures,
    disturbed runs, and the median and max of each CPU figure."""
    rates = [run[rate_key] for run in runs if rate_key in run]
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


# --------------------------------------------------------------------------- summary


def summarize(results: list[dict], loops: list[str], plan: list) -> dict:
    """Every line of the plan (suite.Line) summarized: its cells per loop, the
    ceiling's, the ratios, p99 and server CPU per request; and the headline."""

    def runs(label, loop_name):
        return [x for x in results if x["line"] == label and x["loop"] == loop_name]

    lines = []
    for line in plan:
        key = "ops_per_s" if line.section == "internals" else "rps"
        entry = {
            "line": line.label,
            "section": line.section,
            "unit": "ops/s" if line.section == "internals" else "req/s",
            "loops": {name: cell(runs(line.label, name), key) for name in loops},
        }
        if hasattr(line.spec, "concurrency"):
            entry["concurrency"] = line.spec.concurrency
        if line.shape:
            entry["ceiling"] = cell(runs(line.ceiling_label, CEILING))
        if line.section == "http":
            entry["p99_us"] = {
                name: statistics.median(values)
                for name in loops
                if (values := [x["p99_us"] for x in runs(line.label, name) if "p99_us" in x])
            }
        if line.section != "internals":
            # The server's CPU time per request: steadier than the rate when the
            # machine is shared (a server waiting for a CPU uses none).
            cells = [(name, line.label) for name in loops]
            if line.shape:
                cells.append((CEILING, line.ceiling_label))
            entry["server_us_per_request"] = {
                name: statistics.median(values)
                for name, label in cells
                if (
                    values := [
                        x["server_cpu"] / x["rps"] * 1e6
                        for x in runs(label, name)
                        if x.get("server_cpu") and x.get("rps")
                    ]
                )
            }
        for other in (COMPARED, STOCK, *[BASE] * (BASE in loops)):
            entry[f"{REFERENCE}/{other}"] = ratio(entry["loops"], REFERENCE, other)
        best = best_peer(entry["loops"])
        if best:
            entry["best_peer"] = best
            entry[f"{REFERENCE}/best"] = ratio(entry["loops"], REFERENCE, best)
        ceiling = entry.get("ceiling", {})
        reference = entry["loops"].get(REFERENCE, {})
        if ceiling.get("ok") and reference.get("ok"):
            entry[f"{REFERENCE}/ceiling"] = reference["median"] / ceiling["median"]
        lines.append(entry)
    return {"lines": lines, **headline(lines)}


def other_loops(names) -> list[str]:
    """The loops other than ferroloop and its --baseline build."""
    return [name for name in names if name not in (REFERENCE, BASE)]


def best_peer(cells: dict) -> str | None:
    """The fastest loop of a line other than ferroloop (and its --baseline build)."""
    peers = {n: cells[n]["median"] for n in other_loops(cells) if cells[n].get("ok")}
    return max(peers, key=peers.get) if peers else None


def ratio(cells: dict, reference: str, other: str) -> float | None:
    a, b = cells.get(reference, {}), cells.get(other, {})
    return a["median"] / b["median"] if a.get("ok") and b.get("ok") else None


def geomean(values) -> float:
    return math.exp(statistics.fmean(math.log(value) for value in values))


def headline(lines: list[dict]) -> dict:
    """The figures issue #7's goals are about."""
    key = f"{REFERENCE}/{COMPARED}"
    ratios = [(entry["line"], entry[key]) for entry in lines if entry[key] is not None]
    out = {
        "lines_compared": len(ratios),
        "by_section": {
            section: sum(label.startswith(section + "/") for label, _ in ratios)
            for section in SECTIONS
        },
        "below_1": [[label, value] for label, value in ratios if value < 1.0],
    }
    if ratios:
        out["geomean"] = geomean(value for _, value in ratios)
    # Against the fastest other loop of each line (a tie: within TIE).
    best = [
        (e["line"], e[f"{REFERENCE}/best"], e["best_peer"])
        for e in lines
        if e.get(f"{REFERENCE}/best") is not None
    ]
    if best:
        out["best_geomean"] = [geomean(value for _, value, _ in best), len(best)]
        out["behind_best"] = [list(x) for x in best if x[1] < 1 - TIE]
    # Before/after: the current ferroloop over the --baseline build.
    base_key = f"{REFERENCE}/{BASE}"
    base = [(e["line"], e[base_key]) for e in lines if e.get(base_key) is not None]
    if base:
        out["base_geomean"] = [geomean(value for _, value in base), len(base)]
        out["base_below_1"] = [[label, value] for label, value in base if value < 1.0]
    # Issue #4's figure: echo lines where uvloop is below 90% of the ceiling.
    open_lines = [
        entry[key]
        for entry in lines
        if entry["section"] == "echo"
        and entry[key] is not None
        and entry.get("ceiling", {}).get("ok")
        and entry["loops"][COMPARED]["median"] < 0.9 * entry["ceiling"]["median"]
    ]
    if open_lines:
        out["echo_geomean_below_ceiling"] = [geomean(open_lines), len(open_lines)]
    cpu = [
        entry["server_us_per_request"][COMPARED] / entry["server_us_per_request"][REFERENCE]
        for entry in lines
        if {COMPARED, REFERENCE} <= entry.get("server_us_per_request", {}).keys()
    ]
    if cpu:
        out["server_cpu_per_request"] = [geomean(cpu), len(cpu)]
    goal = next((entry for entry in lines if entry["line"] == GOAL_LINE), None)
    if goal and goal.get("ceiling", {}).get("ok"):
        out["goal_line"] = {
            "line": GOAL_LINE,
            "ceiling": goal["ceiling"],
            "share": {
                name: cell["median"] / goal["ceiling"]["median"]
                for name, cell in goal["loops"].items()
                if cell.get("ok")
            },
            "cpu": {
                name: {k: cell[k] for k in cell if k.endswith(("_median", "_max"))}
                for name, cell in [*goal["loops"].items(), (CEILING, goal["ceiling"])]
            },
            "server_us_per_request": goal.get("server_us_per_request", {}),
        }
    return out


# ----------------------------------------------------------------------------- report


def cell_text(cell: dict) -> str:
    """`median (min-max)` and the markers of the legend."""
    if not cell.get("ok"):
        return "FAILED" if cell.get("failed") else "-"
    text = f"{si(cell['median'])} ({si(cell['min'])}-{si(cell['max'])})"
    if cell.get("client_load_max", 0) > SATURATED:
        text += "*"
    if cell.get("disturbed"):
        text += "~"
    return text + ("!" if cell.get("failed") else "")


def format_table(summary: dict, loops: list[str]) -> str:
    """The table: a line per workload, a column per loop, the ceiling, the ratios."""
    others = (COMPARED, STOCK, BASE)
    ratios = [other for other in others if other in loops and REFERENCE in loops]
    with_ceiling = any("ceiling" in entry for entry in summary["lines"])
    header = ["workload", *loops, *["ceiling"] * with_ceiling]
    header += [f"{REFERENCE}/{o}" for o in ratios]
    with_best = any(entry.get(f"{REFERENCE}/best") is not None for entry in summary["lines"])
    with_best = with_best and len(other_loops(loops)) > 1
    header += [f"{REFERENCE}/best other"] * with_best
    header += [f"{REFERENCE}/ceiling"] * (with_ceiling and REFERENCE in loops)
    latency = [name for name in (COMPARED, REFERENCE) if name in loops]
    with_p99 = any("p99_us" in entry for entry in summary["lines"])
    if with_p99:
        header.append("p99 ms (" + " / ".join(latency) + ")")
    rows = [header]
    for entry in summary["lines"]:
        row = [entry["line"], *(cell_text(entry["loops"][name]) for name in loops)]
        if with_ceiling:
            row.append(cell_text(entry["ceiling"]) if "ceiling" in entry else "")
        for other in ratios:
            value = entry[f"{REFERENCE}/{other}"]
            row.append(f"{value:.2f}x" if value is not None else "n/a")
        if with_best:
            value = entry.get(f"{REFERENCE}/best")
            row.append(f"{value:.2f}x ({entry['best_peer']})" if value is not None else "n/a")
        if with_ceiling and REFERENCE in loops:
            share = entry.get(f"{REFERENCE}/ceiling")
            row.append(f"{share:.0%}" if share is not None else "")
        if with_p99:
            p99 = entry.get("p99_us", {})
            shown = [f"{p99[name] / 1000:.2f}" if name in p99 else "-" for name in latency]
            row.append(" / ".join(shown) if "p99_us" in entry else "")
        rows.append(row)
    return columns(rows)


def format_headline(summary: dict, loops: list[str]) -> str:
    """The summary lines under the table: the goals' figures, and before/after."""
    out = []
    if "base_geomean" in summary:
        value, count = summary["base_geomean"]
        below = summary["base_below_1"]
        out.append(
            f"{REFERENCE}/{BASE} (this build over the --baseline one) geometric mean over "
            f"{count} lines: {value:.3f}x; lines below 1.0x: {len(below)}"
            + (": " + ", ".join(f"{label} {v:.3f}x" for label, v in below) if below else "")
        )
    if "best_geomean" in summary and len(other_loops(loops)) > 1:
        value, count = summary["best_geomean"]
        behind = summary["behind_best"]
        out.append(
            f"{REFERENCE} over the best other loop of each line, geometric mean over {count} "
            f"lines: {value:.3f}x; behind it by more than {TIE:.0%}: {len(behind)}"
            + (
                ": " + ", ".join(f"{label} {v:.2f}x ({who})" for label, v, who in behind)
                if behind
                else ""
            )
        )
    if REFERENCE not in loops or COMPARED not in loops:
        out.append(f"(no {REFERENCE}/{COMPARED} summary: both loops are needed)")
        return "\n".join(out)
    n, sections = summary["lines_compared"], summary["by_section"]
    parts = ", ".join(f"{s} {k}" for s, k in sections.items() if k)
    if "geomean" in summary:
        met = "met" if summary["geomean"] >= GOAL_GEOMEAN else "not met"
        out.append(
            f"{REFERENCE}/{COMPARED} geometric mean over {n} lines ({parts}): "
            f"{summary['geomean']:.3f}x  (goal >= {GOAL_GEOMEAN}x: {met})"
        )
    if "echo_geomean_below_ceiling" in summary:
        value, count = summary["echo_geomean_below_ceiling"]
        out.append(
            f"{REFERENCE}/{COMPARED} geometric mean over the {count} echo lines where "
            f"{COMPARED} is below 90% of the ceiling: {value:.3f}x"
        )
    if "server_cpu_per_request" in summary:
        value, count = summary["server_cpu_per_request"]
        out.append(
            f"server CPU per request, {COMPARED}/{REFERENCE}, geometric mean over {count} "
            f"echo/tls/http lines: {value:.3f}x (> 1: {REFERENCE}'s server uses less)"
        )
    below = summary["below_1"]
    out.append(
        f"lines below 1.0x: {len(below)} of {n}"
        + (": " + ", ".join(f"{label} {value:.3f}x" for label, value in below) if below else "")
    )
    goal = summary.get("goal_line")
    if goal:
        share = goal["share"]
        others = ", ".join(
            f"{name} {value:.0%}" for name, value in share.items() if name != REFERENCE
        )
        text = f"{GOAL_LINE}: {REFERENCE} at "
        text += f"{share[REFERENCE]:.0%}" if REFERENCE in share else "n/a"
        ceiling_rate = si(goal["ceiling"]["median"])
        text += f" of the ceiling (the ceiling: {ceiling_rate} req/s; goal >= {GOAL_CEILING:.0%}"
        if REFERENCE in share:
            text += ": " + ("met" if share[REFERENCE] >= GOAL_CEILING else "not met")
        out.append(text + f"); {others}")
        out.append(bottleneck(goal))
        per_request = efficiency(goal)
        if per_request:  # (none without the ceiling's CPU figures)
            out.append(per_request)
    return "\n".join(out)


def bottleneck(goal: dict) -> str:
    """Who was busy on the goal line: the server's process, the client's side."""
    lines = []
    for name in (REFERENCE, COMPARED, CEILING):
        cpu = goal["cpu"].get(name)
        if not cpu or "server_cpu_median" not in cpu:
            continue
        server, client = cpu["server_cpu_median"], cpu.get("client_load_max", 0)
        other = cpu.get("other_cpu_median", 0) + cpu.get("steal_median", 0)
        saturated = SATURATED
        if other > DISTURBED:
            verdict = f"disturbed: other processes and steal took {other:.2f} cores, rerun"
        elif server >= saturated and client < saturated:
            verdict = "server-bound"
        elif client >= saturated and server < saturated:
            verdict = "client-bound: a lower bound for the server"
        elif client >= saturated:
            verdict = "both saturated (co-limited)"
        else:
            verdict = "neither saturated (waiting on each other, or disturbed)"
        lines.append(
            f"  {name}: server process {server:.2f} cores, client side max {client:.2f}: {verdict}"
        )
    return "  CPU on that line (median over rounds; 1.00 = a core):\n" + "\n".join(lines)


def efficiency(goal: dict) -> str:
    """The goal line by server CPU per request: the ceiling's over each loop's is
    the loop's share of the ceiling's capacity per core, a figure that does not
    depend on whether the client kept the ceiling busy."""
    per_request = goal.get("server_us_per_request", {})
    ceiling = per_request.get(CEILING)
    if not ceiling:
        return ""
    shares = ", ".join(
        f"{name} {us:.1f} us ({ceiling / us:.0%})"
        for name, us in per_request.items()
        if name != CEILING
    )
    return (
        f"  server CPU per request (share of the ceiling's requests per core-second): "
        f"ceiling {ceiling:.1f} us; {shares}"
    )


def failures(summary: dict) -> str:
    notes = []
    for entry in summary["lines"]:
        cells = [*entry["loops"].items()]
        if "ceiling" in entry:
            cells.append((CEILING, entry["ceiling"]))
        for name, cell in cells:
            notes += [f"  {name} on {entry['line']}: {error}" for error in cell.get("errors", [])]
    return "failures:\n" + "\n".join(dict.fromkeys(notes)) if notes else ""


LEGEND = (
    "Cells: median over rounds (min-max); internals in operations/s, echo, tls and http in\n"
    "requests/s. ceiling: the pure-Rust one-thread server (echo-server; http-server for\n"
    "http lines), same size and concurrency. * = the client's side was over 90% busy in\n"
    "some round (client-bound: a lower bound for the server); ~ = other processes or steal\n"
    "took over 0.15 cores in some round; ! = some rounds failed. Ratios: ratio of medians,\n"
    "> 1 means ferroloop is faster (ferroloop/ferroloop-base, with --baseline: this build\n"
    "over the older one; ferroloop/best other: over the fastest other loop of that line,\n"
    "named). p99: median over rounds of each run's 99th percentile latency\n"
    "(every loop's in the JSON)."
)


# -------------------------------------------------------------------------------- CPU


def format_cpu_per_request(summary: dict, loops: list[str]) -> str:
    """Per echo/tls/http line, each server's CPU time (user + system) per request,
    median over rounds: steadier than the rate on a shared machine, where a
    server waits for a CPU and uses none meanwhile."""
    entries = [e for e in summary["lines"] if "server_us_per_request" in e]
    if not entries:
        return ""
    names = [*loops, CEILING]
    ratios = [(COMPARED, REFERENCE), (BASE, REFERENCE)]
    ratios = [(a, b) for a, b in ratios if a in loops and b in loops]
    rows = [["workload (server us/request)", *names, *(f"{a}/{b}" for a, b in ratios)]]
    for entry in entries:
        us = entry["server_us_per_request"]
        row = [entry["line"], *(f"{us[name]:.1f}" if name in us else "-" for name in names)]
        row += [f"{us[a] / us[b]:.2f}x" if a in us and b in us else "n/a" for a, b in ratios]
        rows.append(row)
    return (
        "server CPU per request (us, user + system, median over rounds; "
        f"X/{REFERENCE} > 1: {REFERENCE} uses less)\n" + columns(rows)
    )


def format_cpu(summary: dict, pinned: bool) -> str:
    """Median CPU busy fractions by section and concurrency, the Python servers
    apart from the ceiling."""
    figures = [k for k in CPU_FIGURES if pinned or k not in ("client_load", "server_load")]
    groups: dict[tuple[str, int, str], dict[str, list[float]]] = {}
    for entry in summary["lines"]:
        if "concurrency" not in entry:
            continue
        cells = [("Python", c) for c in entry["loops"].values()]
        cells += [(CEILING, entry["ceiling"])] if "ceiling" in entry else []
        for group, found in cells:
            values = groups.setdefault((entry["section"], entry["concurrency"], group), {})
            for figure in figures:
                if f"{figure}_median" in found:
                    values.setdefault(figure, []).append(found[f"{figure}_median"])
    if not groups:
        return ""
    rows = [["section", "conc", "servers"] + [CPU_FIGURES[figure] for figure in figures]]
    for (section, concurrency, group), values in sorted(groups.items()):
        rows.append([section, str(concurrency), group] + [_spread(values.get(f)) for f in figures])
    return cpu_legend(pinned) + "\n" + columns(rows)


def _spread(values: list[float] | None) -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values):.2f} (max {max(values):.2f})"


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


def state_note(when: str, state: dict) -> str | None:
    """A note when the machine was busy while the suite idled (suite.machine_state)."""
    if state.get("busy_cores", 0) + state.get("steal_cores", 0) <= DISTURBED:
        return None
    return (
        f"note: {when}, other processes kept {state['busy_cores']:.2f} cores busy and the "
        f"hypervisor stole {state['steal_cores']:.2f}: expect noisy figures"
    )


# ------------------------------------------------------------------------------- plot


def plot(summary: dict, loops: list[str], path: str, title: str) -> str:
    """A PNG of every loop's median relative to uvloop's (or the first loop's), per line."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install matplotlib)"
    base = COMPARED if COMPARED in loops else loops[0]  # the bars' 1x
    shown = [name for name in loops if name != base] + ["ceiling"]
    entries = [e for e in summary["lines"] if e["loops"].get(base, {}).get("ok")]
    if not entries:
        return f"plot skipped: no line has a result for {base}"
    colors = {
        "asyncio": "#9e9e9e",
        "uvloop": "#1f77b4",
        "rloop": "#ff7f0e",
        "rsloop": "#9467bd",
        "zuvloop": "#8c564b",
    }
    colors.update({"ferroloop": "#d62728", BASE: "#f7a1a1", "ceiling": "#2ca02c"})
    height = 0.8 / len(shown)
    fig, ax = plt.subplots(figsize=(10, 1.5 + 0.16 * len(entries) * len(shown)))
    values = []
    for k, name in enumerate(shown):
        ys, xs = [], []
        for i, entry in enumerate(entries):
            cell = entry.get("ceiling", {}) if name == "ceiling" else entry["loops"].get(name, {})
            if cell.get("ok"):
                ys.append(i + (k - (len(shown) - 1) / 2) * height)
                xs.append(cell["median"] / entry["loops"][base]["median"])
        if not xs:
            continue
        # Bars grow from 1.0 (uvloop) to the ratio, right when faster.
        ax.barh(ys, [x - 1 for x in xs], left=1, height=height, label=name, color=colors.get(name))
        values += xs
        if name == REFERENCE:
            for y, x in zip(ys, xs):
                ax.annotate(
                    f"{x:.2f}x",
                    (x, y),
                    xytext=(3 if x >= 1 else -3, 0),
                    textcoords="offset points",
                    ha="left" if x >= 1 else "right",
                    va="center",
                    fontsize=7,
                )
    ax.axvline(1.0, color="black", linewidth=1, label=f"{base} (1x)")
    ax.set_xscale("log")
    ax.set_xlim(min(values + [1]) / 1.3, max(values + [1]) * 1.3)
    label = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x")
    ax.xaxis.set_major_formatter(label)
    ax.xaxis.set_minor_formatter(label)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_yticks(range(len(entries)), [e["line"] for e in entries], fontsize=8)
    ax.set_ylim(len(entries) - 0.5, -0.5)  # first line on top, no margins
    ax.set_xlabel(f"median throughput relative to {base} (log scale; > 1: faster than {base})")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"plot written to {path}"
