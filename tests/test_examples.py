"""Every program in examples/ runs on ferroloop and on stock asyncio, and
prints the same thing on both (apart from the `loop:` line naming the loop).

The examples are found with a glob, so a new one is covered without editing
this file. An example that needs a third-party module says so with a line
`# requires: module.name`; it is skipped where that module is missing.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import ferroloop
import pytest

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
EXAMPLES = sorted(p for p in EXAMPLES_DIR.glob("*.py") if not p.name.startswith("_"))
TIMEOUT = 60

# Examples whose output on ferroloop differs from asyncio's because of a
# ferroloop bug: {file name: reason}. They stay tested, as strict xfails.
KNOWN_DIVERGENCES: dict[str, str] = {}

# Signs of an error the example did not handle (asyncio logs these to stderr
# without changing the exit code).
STDERR_ERRORS = ("Traceback", "Unhandled exception", "Exception ignored", "Task was destroyed")


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


EXPECTED_LOOP = {
    "ferroloop": _class_name(ferroloop.Loop),
    # asyncio.run's loop on Unix: asyncio.SelectorEventLoop is the Unix one.
    "asyncio": _class_name(asyncio.SelectorEventLoop),
}


def _params() -> list:
    params = []
    for path in EXAMPLES:
        marks = []
        if path.name in KNOWN_DIVERGENCES:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_DIVERGENCES[path.name]))
        params.append(pytest.param(path, id=path.stem, marks=marks))
    return params


def _missing_requirements(path: Path) -> list[str]:
    required = re.findall(r"^# requires: (\S+)\s*$", path.read_text(), re.MULTILINE)
    missing = []
    for name in required:
        try:
            if importlib.util.find_spec(name) is None:
                missing.append(name)
        except ImportError:  # a parent package is missing
            missing.append(name)
    return missing


def _start(path: Path, loop: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(path), "--loop", loop],
        cwd=EXAMPLES_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"timed out after {TIMEOUT}s: {proc.args}\nstdout:\n{out}\nstderr:\n{err}")
    return proc.returncode, out, err


def test_examples_found():
    assert len(EXAMPLES) >= 14, [p.name for p in EXAMPLES]
    assert EXPECTED_LOOP["ferroloop"] == "ferroloop._loop.Loop"
    assert EXPECTED_LOOP["ferroloop"] != EXPECTED_LOOP["asyncio"]


@pytest.mark.parametrize("path", _params())
def test_example(path: Path):
    missing = _missing_requirements(path)
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")

    # The two runs are independent (port 0, temporary dirs): run them at once.
    procs = {loop: _start(path, loop) for loop in ("asyncio", "ferroloop")}
    results = {loop: _finish(proc) for loop, proc in procs.items()}

    rest = {}
    for loop, (code, out, err) in results.items():
        where = f"{path.name} --loop {loop}"
        assert code == 0, f"{where} exited with {code}\nstdout:\n{out}\nstderr:\n{err}"
        for sign in STDERR_ERRORS:
            assert sign not in err, f"{where}: {sign!r} on stderr:\n{err}"
        lines = out.splitlines()
        loop_lines = [line for line in lines if line.startswith("loop: ")]
        assert loop_lines == [f"loop: {EXPECTED_LOOP[loop]}"], f"{where}:\n{out}"
        rest[loop] = [line for line in lines if not line.startswith("loop: ")]

    assert rest["asyncio"], f"{path.name} printed nothing but the loop line"
    assert rest["ferroloop"] == rest["asyncio"]
