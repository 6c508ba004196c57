"""Every private asyncio name ferroloop relies on (ferroloop._asyncio_internals)
still exists on the running CPython, with the parameters ferroloop expects;
and no ferroloop module uses one that is not listed there.

A new CPython that renames a hook or adds a parameter to one fails the test
named after it, with what changed and what it breaks.
"""

from __future__ import annotations

import inspect
import pathlib
import re
import sys

import ferroloop
import pytest
from ferroloop import _asyncio_internals as internals
from ferroloop._asyncio_internals import Borrowed

VERSION = "{}.{}".format(*sys.version_info[:2])
APPLIES = [e for e in internals.BORROWED if e.applies()]


def _where(entry: Borrowed) -> str:
    return (
        f"ferroloop uses it in {entry.where} ({entry.why}); "
        f"checked on {', '.join(internals.CHECKED_ON)}"
    )


def _param_names(obj) -> tuple[list[str], bool]:
    """The parameter names of a callable, and whether it takes **kwargs."""
    sig = inspect.signature(obj)
    names = [p.name for p in sig.parameters.values()]
    var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    return names, var_kw


def _class_source(cls) -> str:
    """The source of `cls` and of its asyncio bases."""
    parts = []
    for klass in cls.__mro__:
        if klass.__module__.startswith("asyncio."):
            try:
                parts.append(inspect.getsource(klass))
            except (OSError, TypeError):
                pass
    return "\n".join(parts)


@pytest.mark.parametrize("entry", APPLIES, ids=lambda e: e.path)
def test_borrowed_name(entry: Borrowed) -> None:
    if entry.use == "attribute":
        owner = internals.resolve(entry.owner)
        name = entry.path.rsplit(".", 1)[1]
        source = _class_source(owner)
        assert re.search(rf"self\.{name}\b", source), (
            f"asyncio.{entry.owner} no longer sets self.{name} on CPython {VERSION}; "
            + _where(entry)
        )
        return
    try:
        obj = internals.resolve(entry.path)
    except AttributeError:
        pytest.fail(f"asyncio.{entry.path} is gone on CPython {VERSION}; " + _where(entry))
    if entry.params is None:
        return
    names, var_kw = _param_names(obj)
    if entry.use == "override":
        new = [n for n in names if n not in entry.params]
        assert not new, (
            f"asyncio.{entry.path} takes {new} on CPython {VERSION}, which ferroloop's "
            f"override does not know (it knows {list(entry.params)}); " + _where(entry)
        )
    else:  # call: what ferroloop passes must still be taken
        missing = [n for n in entry.params if n not in names]
        assert var_kw or not missing, (
            f"asyncio.{entry.path} no longer takes {missing} on CPython {VERSION} "
            f"(it takes {names}); " + _where(entry)
        )


_OVERRIDE_HOMES = {
    "base_events.BaseEventLoop": ferroloop.Loop,
    "selector_events.BaseSelectorEventLoop": ferroloop.Loop,
    "unix_events._UnixSelectorEventLoop": ferroloop.Loop,
}


def _override_home(entry: Borrowed):
    owner, _, name = entry.path.rpartition(".")
    if owner in _OVERRIDE_HOMES:
        return getattr(_OVERRIDE_HOMES[owner], name)
    if owner == "sslproto.SSLProtocol":
        from ferroloop import _ssl

        return getattr(_ssl.SSLProtocol, name)
    raise LookupError(entry.path)


@pytest.mark.parametrize("entry", [e for e in APPLIES if e.use == "override"], ids=lambda e: e.path)
def test_override_takes_asyncios_arguments(entry: Borrowed) -> None:
    """ferroloop's override accepts every argument asyncio's version takes
    (by name, or through **kwargs)."""
    asyncio_names, _ = _param_names(internals.resolve(entry.path))
    ours = _override_home(entry)
    try:
        names, var_kw = _param_names(ours)
    except ValueError:  # a native method without a text signature
        pytest.fail(f"ferroloop's {entry.path.rsplit('.', 1)[1]} has no signature to check")
    # `self` is bound away on some native methods' signatures.
    missing = [n for n in asyncio_names if n not in names and n != "self"]
    assert var_kw or not missing, (
        f"ferroloop's override of asyncio.{entry.path} rejects {missing} (CPython {VERSION})"
    )


_MODULES = (
    "base_events|base_subprocess|constants|events|format_helpers|futures|runners|"
    "selector_events|sslproto|tasks|transports|trsock|unix_events"
)
# module._name[.attr], and module.PublicClass._name
_PRIVATE_USE = re.compile(rf"\b({_MODULES})\.(_[a-zA-Z]\w*)(?:\.(\w+))?")
_PRIVATE_ON_PUBLIC = re.compile(rf"\b({_MODULES})\.([A-Z]\w+)\.(_[a-zA-Z]\w*)")


def test_every_private_use_is_listed() -> None:
    """A private asyncio name used in ferroloop's Python code is listed in
    ferroloop._asyncio_internals (so that its test watches it)."""
    listed = {e.path for e in internals.BORROWED} | {e.owner for e in internals.BORROWED if e.owner}
    package = pathlib.Path(ferroloop.__file__).parent
    unlisted = []
    for path in sorted(package.glob("*.py")):
        if path.name == "_asyncio_internals.py":
            continue
        text = path.read_text()
        for match in [*_PRIVATE_USE.finditer(text), *_PRIVATE_ON_PUBLIC.finditer(text)]:
            module, name, attr = match.groups()
            short = f"{module}.{name}"
            full = f"{short}.{attr}" if attr else short
            if not (full in listed or short in listed):
                unlisted.append(f"{path.name}: {match.group(0)}")
    assert not unlisted, "not in ferroloop._asyncio_internals.BORROWED: " + ", ".join(unlisted)


def test_entries_are_well_formed() -> None:
    for entry in internals.BORROWED:
        assert entry.use in {"override", "call", "subclass", "read", "attribute"}, entry
        assert entry.where and entry.why, entry
        assert (entry.owner is not None) == (entry.use == "attribute"), entry


@pytest.mark.skipif(sys.version_info < (3, 11), reason="3.10 keeps asyncio's TLS layer")
def test_start_tls_builds_ferroloops_ssl_protocol() -> None:
    """ferroloop's loop.start_tls runs asyncio's start_tls code with its global
    `sslproto` rebound (ferroloop/_ssl.py): that works while asyncio's
    start_tls builds `sslproto.SSLProtocol` by that global name.
    (test_tls_edges.py's first-data test shows the class it builds.)"""
    from asyncio import base_events

    from ferroloop import _ssl

    code = base_events.BaseEventLoop.start_tls.__code__
    assert "sslproto" in code.co_names and "SSLProtocol" in code.co_names
    assert ferroloop.Loop.start_tls is _ssl.start_tls
    assert inspect.signature(_ssl.start_tls) == inspect.signature(
        base_events.BaseEventLoop.start_tls
    )


@pytest.mark.skipif(sys.version_info < (3, 11), reason="3.10 keeps asyncio's TLS layer")
def test_start_tls_sees_asyncio_globals_as_they_are_at_the_call(monkeypatch) -> None:
    """asyncio's start_tls looks its module's globals up when it runs (a test
    patching `base_events.ssl` away gets its RuntimeError); so does ferroloop's."""
    import asyncio
    import ssl
    from asyncio import base_events

    monkeypatch.setattr(base_events, "ssl", None)
    loop = ferroloop.new_event_loop()
    try:
        with pytest.raises(RuntimeError, match="ssl module is not available"):
            loop.run_until_complete(
                loop.start_tls(None, asyncio.Protocol(), ssl.create_default_context())
            )
    finally:
        loop.close()
