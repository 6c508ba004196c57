"""The loops the benchmarks compare, and how a child process gets one.

Every measurement runs its loop in a child process: an internals subprocess
(loop_internals.py --child), an echo server (echo/servers.py) or an HTTP server
(http/server.py). The parent starts it with `--loop module(name)` and the
environment `child_env(name)`. Each loop is its module's `new_event_loop`.

The baseline, `ferroloop-base` (suite.py --baseline DIR), is an older ferroloop
installed into DIR with `pip install --target DIR ferroloop-*.whl`: its children
are told `--loop ferroloop` and get DIR first on PYTHONPATH, so `import ferroloop`
finds that build before the installed one. `locate` asks a child where each loop
really comes from; the suite refuses a baseline that does not import from DIR.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

LOOPS = {  # name -> module with new_event_loop()
    "asyncio": "asyncio",
    "uvloop": "uvloop",
    "rloop": "rloop",
    "rsloop": "rsloop",  # optional: wheels only (its source build needs nightly Rust)
    "zuvloop": "zuvloop",  # optional: wheels for CPython 3.14+ only
    "ferroloop": "ferroloop",
}
OPTIONAL = ("rsloop", "zuvloop")  # the suite installs these from wheels when it can
BASE = "ferroloop-base"  # the older ferroloop of --baseline DIR
CEILING = "ceiling"  # the pure-Rust servers (echo/rust), measured like a loop
_base_dir: str | None = None


LOOP_FILE = "loop module: "  # how a server's stderr says where its loop came from


def import_loop(module_name: str):
    """In a server: import a loop's module and say where from on stderr (the
    first line; echo/measure.py records it with each result as `loop_file`)."""
    loop_module = importlib.import_module(module_name)
    print(f"{LOOP_FILE}{loop_module.__file__}", file=sys.stderr, flush=True)
    return loop_module


def set_baseline(directory: str) -> None:
    """Make BASE a loop: ferroloop imported from `directory`."""
    global _base_dir
    _base_dir = str(Path(directory).resolve())


def names() -> list[str]:
    """Every loop that can be asked for: LOOPS, and BASE once set_baseline ran."""
    return [*LOOPS, *([BASE] if _base_dir else [])]


def module(name: str) -> str:
    """The module a child imports for the loop `name` (its `--loop`)."""
    return LOOPS["ferroloop" if name == BASE else name]


def child_env(name: str) -> dict[str, str] | None:
    """The environment of a child running `name`; None: this process's."""
    if name != BASE:
        return None
    if _base_dir is None:
        raise ValueError(f"{BASE} needs set_baseline (suite.py --baseline DIR)")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_base_dir, env.get("PYTHONPATH")]))
    return env


_LOCATE = """\
import importlib, importlib.metadata, json, platform, sys
name = sys.argv[1]
try:
    mod = importlib.import_module(name)
except ImportError as error:
    print(json.dumps({"error": str(error)}))
else:
    version = platform.python_version() if name == "asyncio" else importlib.metadata.version(name)
    print(json.dumps({"file": mod.__file__, "version": version}))
"""


def locate(name: str) -> dict:
    """Where a child running `name` imports its module from, and its version:
    {"file", "version"} or {"error"}."""
    command = [sys.executable, "-c", _LOCATE, module(name)]
    env = child_env(name)
    proc = subprocess.run(command, check=False, capture_output=True, text=True, env=env)
    if proc.returncode:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout)


def base_problem(found: dict) -> str | None:
    """Why BASE's `locate` result is not ferroloop from the baseline directory."""
    if "error" in found:
        return f"{BASE}: ferroloop does not import from {_base_dir}: {found['error']}"
    if not Path(found["file"]).resolve().is_relative_to(_base_dir):
        return f"{BASE}: ferroloop imports from {found['file']}, not from {_base_dir}"
    return None
