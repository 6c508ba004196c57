"""ARCHITECTURE.md is the map of the code: it must name every
`AbstractEventLoop` method (in its method table) and every source module,
and every module it names must exist. A new method, a new file or a rename
fails here until the map says where it went."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAP = ROOT / "ARCHITECTURE.md"

if not MAP.exists():  # run from an installed wheel's tests only (tests/wheel_smoke.py)
    pytest.skip("ARCHITECTURE.md is not beside tests/", allow_module_level=True)

TEXT = MAP.read_text()


def _method_table() -> str:
    start = TEXT.index("## Every `AbstractEventLoop` method")
    end = TEXT.index("\n## ", start + 1)
    return TEXT[start:end]


@pytest.mark.parametrize(
    "method", sorted(m for m in dir(asyncio.AbstractEventLoop) if not m.startswith("_"))
)
def test_every_event_loop_method_is_in_the_method_table(method):
    rows = [line for line in _method_table().splitlines() if line.startswith("| `")]
    first_cells = [row.split(" | ")[0] for row in rows]
    assert any(f"`{method}`" in cell for cell in first_cells), (
        f"ARCHITECTURE.md's method table has no row for `{method}`"
    )


def _source_modules() -> list[str]:
    rust = sorted(str(p.relative_to(ROOT / "src")) for p in (ROOT / "src").rglob("*.rs"))
    python = sorted(p.name for p in (ROOT / "python" / "ferroloop").glob("*.py"))
    return rust + python


@pytest.mark.parametrize("module", _source_modules())
def test_every_source_module_is_on_the_map(module):
    # A Rust module in a directory is named by its path below src/
    # (`sys/epoll.rs`) or, for a directory's mod.rs, by the directory (`sys/`).
    names = [module]
    if module.endswith("/mod.rs"):
        names.append(module.removesuffix("mod.rs"))
    assert any(name in TEXT for name in names), f"ARCHITECTURE.md does not mention {module}"


def test_every_module_the_map_names_exists():
    named = set(re.findall(r"[\w/]+\.(?:rs|py)\b", TEXT))
    known = set(_source_modules()) | {p.split("/")[-1] for p in _source_modules()}
    # Scripts, tests and asyncio's own modules are named too.
    elsewhere = {p.name for p in Path(asyncio.__file__).parent.glob("*.py")}
    for folder in ("benchmarks", "scripts", "tests", "examples"):
        elsewhere |= {p.name for p in (ROOT / folder).rglob("*.py")}
    missing = sorted(
        n
        for n in named
        if not (ROOT / n).exists() and n not in known and n.split("/")[-1] not in elsewhere
    )
    assert not missing, f"ARCHITECTURE.md names modules that do not exist: {missing}"
