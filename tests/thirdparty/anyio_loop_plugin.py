"""pytest plugin: run anyio's own test suite on ferroloop (or on stock asyncio).

Loaded by scripts/anyio-suite with ``-p anyio_loop_plugin`` (this folder on
PYTHONPATH), from the root of the pinned anyio sdist, whose tests/conftest.py
parametrizes the ``anyio_backend`` fixture over asyncio, asyncio+uvloop,
asyncio+eager (3.12+) and trio, and whose tests parametrize it directly too
(``asyncio_params``, ``["asyncio"]``, ``["trio"]``).

After collection, for every test using ``anyio_backend``:

* trio, and any asyncio variant with a loop factory of its own (uvloop,
  eager tasks), is deselected: one asyncio configuration is run;
* the plain asyncio variant is kept and, with ``--anyio-loop=ferroloop`` (the
  default), its backend options get ``loop_factory=ferroloop.new_event_loop``
  (anyio's asyncio test runner passes it to ``asyncio.Runner``); the test
  keeps its id (``test_x[asyncio]``). With ``--anyio-loop=stock`` the options
  are left as anyio wrote them (``loop_factory`` None: asyncio's own loop).

anyio's ``asyncio_event_loop`` fixture (a bare loop some tests drive by hand)
is replaced in the same way: a ferroloop loop, or asyncio's. And with
ferroloop, ``ferroloop.EventLoopPolicy`` is installed for the session, so that
the tests that call ``anyio.run(..., backend="asyncio")``, ``asyncio.run()`` or
``asyncio.new_event_loop()`` themselves, with no loop factory, get ferroloop
loops too (``--anyio-loop-policy=no`` leaves asyncio's policy alone).

``--anyio-known-failures=FILE`` deselects the tests listed there (one node id
a line, ``#`` starts a comment giving the reason). They are not hidden: the
terminal summary lists each with its reason, and a listed id that matches no
collected test is an error (the list must not go stale).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

LOOPS = ("ferroloop", "stock")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("anyio-loop", "anyio's suite on ferroloop")
    group.addoption(
        "--anyio-loop",
        choices=LOOPS,
        default="ferroloop",
        help="event loop for anyio's asyncio backend: ferroloop (default) or stock asyncio",
    )
    group.addoption(
        "--anyio-known-failures",
        metavar="FILE",
        default=None,
        help="deselect the node ids listed in FILE (each with its reason), and list them",
    )
    group.addoption(
        "--anyio-loop-policy",
        choices=("yes", "no"),
        default="yes",
        help="with ferroloop, also install ferroloop.EventLoopPolicy (default: yes)",
    )


def _loop_factory(config: pytest.Config):
    if config.getoption("anyio_loop") == "ferroloop":
        import ferroloop

        return ferroloop.new_event_loop
    return None


_saved_policy: list = []


def pytest_configure(config: pytest.Config) -> None:
    if _loop_factory(config) is None or config.getoption("anyio_loop_policy") == "no":
        return
    import warnings

    import ferroloop

    with warnings.catch_warnings():
        # policies are deprecated from 3.14 on (anyio runs with -W error)
        warnings.simplefilter("ignore", DeprecationWarning)
        _saved_policy.append(asyncio.get_event_loop_policy())
        asyncio.set_event_loop_policy(ferroloop.EventLoopPolicy())


def pytest_unconfigure(config: pytest.Config) -> None:
    if _saved_policy:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop_policy(_saved_policy.pop())


def pytest_report_header(config: pytest.Config) -> list[str]:
    factory = _loop_factory(config)
    if factory is None:
        return ["anyio-loop: stock asyncio (loop_factory=None)"]
    import ferroloop

    where = Path(ferroloop.__file__).parent
    policy = type(asyncio.get_event_loop_policy()).__module__
    return [f"anyio-loop: ferroloop.new_event_loop ({where}), event loop policy from {policy}"]


def pytest_plugin_registered(plugin: object, plugin_name: str) -> None:
    # anyio's tests/conftest.py defines asyncio_event_loop(); its fixtures are
    # parsed when its directory is collected, after this, so replacing the
    # function here is enough.
    if not (plugin_name or "").endswith("conftest.py"):
        return
    if not hasattr(plugin, "asyncio_event_loop") or not hasattr(plugin, "asyncio_params"):
        return

    @pytest.fixture
    def asyncio_event_loop(request: pytest.FixtureRequest):
        factory = _loop_factory(request.config)
        if factory is not None:
            loop = factory()
        elif sys.version_info >= (3, 13):
            loop = asyncio.EventLoop()
        else:
            loop = asyncio.new_event_loop()
        yield loop
        loop.close()

    plugin.asyncio_event_loop = asyncio_event_loop
    _replaced_fixtures.append(plugin_name)


_replaced_fixtures: list[str] = []


def _read_known_failures(path: str) -> dict[str, str]:
    known: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        nodeid, _, reason = line.partition("#")
        nodeid = nodeid.strip()
        if nodeid:
            known[nodeid] = reason.strip() or "(no reason given)"
    return known


_KNOWN_KEY = pytest.StashKey[dict]()
_SELECTED_KEY = pytest.StashKey[bool]()


# tryfirst: before -k/-m/--deselect, so that the stale-list check below sees
# every test of the run. Items that anyio's own pytest_collection_finish adds
# later (async tests without the anyio_backend fixture) would escape this; in
# anyio's suite every async test has the fixture (anyio_mode = "auto" adds it
# at collection), and pytest_collection_finish below checks that none escaped.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    factory = _loop_factory(config)
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or "anyio_backend" not in callspec.params:
            keep.append(item)
            continue
        backend = callspec.params["anyio_backend"]
        if isinstance(backend, str):
            name, options = backend, {}
        else:
            name, options = backend
        if name != "asyncio" or options.get("loop_factory") is not None:
            drop.append(item)  # trio, asyncio+uvloop, asyncio+eager
            continue
        if factory is not None:
            callspec.params["anyio_backend"] = ("asyncio", {**options, "loop_factory": factory})
        keep.append(item)

    known_file = config.getoption("anyio_known_failures")
    known = _read_known_failures(known_file) if known_file else {}
    if known:
        ids = {item.nodeid for item in keep}
        # Checked on whole runs only (no test paths given on the command line).
        if config.args_source is pytest.Config.ArgsSource.TESTPATHS:
            stale = sorted(set(known) - ids)
            if stale:
                raise pytest.UsageError(
                    f"{known_file}: these ids match no collected test (stale list?):\n  "
                    + "\n  ".join(stale)
                )
        drop += [item for item in keep if item.nodeid in known]
        keep = [item for item in keep if item.nodeid not in known]
        config.stash[_KNOWN_KEY] = {k: v for k, v in known.items() if k in ids}

    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    config.stash[_SELECTED_KEY] = True


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    if _loop_factory(session.config) is None or not session.config.stash.get(_SELECTED_KEY, False):
        return  # (stock asyncio, or the selection above failed: its error is the one to show)
    for item in session.items:
        if "asyncio_event_loop" in getattr(item, "fixturenames", ()) and not _replaced_fixtures:
            raise pytest.UsageError(
                f"{item.nodeid}: uses anyio's asyncio_event_loop fixture, which this plugin "
                "did not replace (anyio's tests/conftest.py changed?)"
            )
        callspec = getattr(item, "callspec", None)
        if callspec is None or "anyio_backend" not in callspec.params:
            continue
        backend = callspec.params["anyio_backend"]
        if isinstance(backend, str) or backend[1].get("loop_factory") is None:
            raise pytest.UsageError(
                f"{item.nodeid}: anyio_backend {backend!r} would run on stock asyncio"
            )


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    # (the report header is not shown with -q: say which loop ran here too)
    terminalreporter.section("anyio-loop")
    for line in pytest_report_header(config):
        terminalreporter.line(line)
    known = config.stash.get(_KNOWN_KEY, {})
    if not known:
        return
    terminalreporter.section("known failures (deselected: they fail on stock asyncio too)")
    whole_run = (
        config.args_source is pytest.Config.ArgsSource.TESTPATHS
        and not config.option.keyword
        and not config.option.markexpr
    )
    if not whole_run:
        terminalreporter.line(
            f"{len(known)} (listed in {config.getoption('anyio_known_failures')})"
        )
        return
    for nodeid, reason in known.items():
        terminalreporter.line(f"{nodeid}: {reason}")
