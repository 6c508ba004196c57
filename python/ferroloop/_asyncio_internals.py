"""What ferroloop borrows from asyncio's private internals, in one place.

ferroloop is exact because asyncio's own services run on its core; that
makes it depend on names asyncio does not promise to keep. Each is listed
here with how ferroloop uses it, the versions it was checked on, and what a
change would break. `tests/test_asyncio_internals.py` checks every entry
against the running interpreter (presence; for callables, the parameters),
one named test each, and that no ferroloop module uses a private asyncio
name missing from this list: a CPython release that renames a hook or adds
a parameter to one fails one test that says which, instead of hanging
servers (3.15's `context=` broke `_make_socket_transport` that way).

Kinds of use:

- ``override``: ferroloop defines the method and asyncio calls it on
  ferroloop's loop (or transport). Every parameter asyncio's own version
  takes must be one ferroloop's takes: ``params`` lists them all, over
  every checked version; a new one fails the test.
- ``call``: ferroloop calls it; ``params`` are the parameters it passes
  (they must still exist).
- ``subclass`` / ``read``: ferroloop subclasses it or reads it; it must
  exist.
- ``attribute``: an instance attribute asyncio's class sets (in
  ``owner``'s source, as ``self.<name>``) and ferroloop reads or writes.

The Rust core's borrowed names are listed too (``where`` says which file).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

# The CPython versions every entry was checked on (by this module's test).
CHECKED_ON = ("3.10", "3.11", "3.12", "3.13", "3.13t", "3.14", "3.15")


@dataclass(frozen=True)
class Borrowed:
    path: str  # "module.Name[.attr]" under asyncio
    use: str  # override | call | subclass | read | attribute
    where: str  # the ferroloop file(s) that use it
    why: str
    params: tuple[str, ...] | None = None  # see the module doc
    since: tuple[int, int] = (3, 10)  # first version it exists on
    until: tuple[int, int] | None = None  # last version it exists on
    owner: str | None = None  # for ``attribute``: the class that sets it

    def applies(self, version: tuple[int, int] | None = None) -> bool:
        version = version or sys.version_info[:2]
        return self.since <= version and (self.until is None or version <= self.until)


def _o(path, where, why, params, **kw) -> Borrowed:
    return Borrowed(path, "override", where, why, tuple(params.split()), **kw)


def _c(path, where, why, params="", **kw) -> Borrowed:
    return Borrowed(path, "call", where, why, tuple(params.split()), **kw)


def _r(path, where, why, use="read", **kw) -> Borrowed:
    return Borrowed(path, use, where, why, **kw)


def _attrs(owner, names, where, why, **kw) -> list[Borrowed]:
    return [
        Borrowed(f"{owner}.{name}", "attribute", where, why, owner=owner, **kw)
        for name in names.split()
    ]


_SEL = "selector_events.BaseSelectorEventLoop"
_UNIX = "unix_events._UnixSelectorEventLoop"
_BASE = "base_events.BaseEventLoop"

BORROWED: list[Borrowed] = [
    # -- hooks asyncio's services call on the loop: ferroloop's transports --
    _o(
        f"{_SEL}._make_socket_transport",
        "_factories.py",
        "every TCP/Unix connection's transport",
        "self sock protocol waiter extra server context",
    ),
    _o(
        f"{_SEL}._make_ssl_transport",
        "_factories.py",
        "every TLS connection's transport",
        "self rawsock protocol sslcontext waiter server_side server_hostname extra server "
        "ssl_handshake_timeout ssl_shutdown_timeout context",
    ),
    _o(
        f"{_SEL}._make_datagram_transport",
        "_factories.py",
        "every UDP/Unix datagram transport",
        "self sock protocol address waiter extra",
    ),
    _o(
        f"{_UNIX}._make_read_pipe_transport",
        "_factories.py",
        "connect_read_pipe and subprocess pipes",
        "self pipe protocol waiter extra",
    ),
    _o(
        f"{_UNIX}._make_write_pipe_transport",
        "_factories.py",
        "connect_write_pipe and subprocess pipes",
        "self pipe protocol waiter extra",
    ),
    _o(
        f"{_UNIX}._make_subprocess_transport",
        "_subprocess.py",
        "subprocesses watched by a pidfd",
        "self protocol args shell stdin stdout stderr bufsize extra kwargs",
    ),
    _o(
        f"{_SEL}._accept_connection2",
        "_loop.py",
        "counts accepted connections, then calls asyncio's",
        "self protocol_factory conn extra sslcontext server ssl_handshake_timeout "
        "ssl_shutdown_timeout context",
    ),
    _o(
        f"{_SEL}._add_reader",
        "src/event_loop/io_watch.rs",
        "fd readiness",
        "self fd callback args context",
    ),
    _o(
        f"{_SEL}._add_writer",
        "src/event_loop/io_watch.rs",
        "fd readiness",
        "self fd callback args context",
    ),
    _o(f"{_SEL}._remove_reader", "src/event_loop/io_watch.rs", "fd readiness", "self fd"),
    _o(f"{_SEL}._remove_writer", "src/event_loop/io_watch.rs", "fd readiness", "self fd"),
    _o(f"{_SEL}._write_to_self", "src/event_loop/mod.rs", "wakes the poller", "self"),
    _o(f"{_BASE}._add_callback", "_loop.py", "asyncio's signal path", "self handle"),
    _o(
        f"{_BASE}.create_task",
        "src/event_loop/tasks.rs",
        "native Task creation; other keywords go to asyncio's",
        "self coro name context kwargs",
    ),
    _o(
        f"{_BASE}.call_soon_threadsafe",
        "_loop.py, src/fastcall.rs",
        "3.14+: returns asyncio's _ThreadSafeHandle",
        "self callback args context",
    ),
    # -- loop attributes asyncio's base class sets and reads: the core's ---
    *_attrs(
        _BASE,
        "_stopping _closed _task_factory _debug _thread_id",
        "src/event_loop/mod.rs",
        "state the core owns (properties); _thread_id: run_forever before 3.13",
    ),
    *_attrs(
        "selector_events.BaseSelectorEventLoop",
        "_selector _transports _ssock",
        "_loop.py, src/sock_api.rs",
        "the selector view; fd -> transport map; the self-pipe's fd",
    ),
    # -- asyncio code ferroloop calls -------------------------------------
    _c(f"{_BASE}._check_closed", "_loop.py", "asyncio's error", "self"),
    _c(f"{_BASE}._check_running", "_loop.py", "run_forever before 3.13", "self"),
    _c(
        f"{_BASE}._check_thread",
        "src/event_loop/scheduling.rs",
        "debug mode's thread check",
        "self",
    ),
    _c(
        f"{_BASE}._check_callback",
        "src/event_loop/scheduling.rs, _loop.py",
        "asyncio's callback checks and messages",
        "self callback method",
    ),
    _c(
        f"{_BASE}._set_coroutine_origin_tracking",
        "_loop.py",
        "run_forever before 3.13",
        "self enabled",
    ),
    _r(f"{_BASE}._asyncgen_firstiter_hook", "_loop.py", "run_forever before 3.13"),
    _r(f"{_BASE}._asyncgen_finalizer_hook", "_loop.py", "run_forever before 3.13"),
    _c(f"{_BASE}._run_forever_setup", "_loop.py", "run_forever", "self", since=(3, 13)),
    _c(f"{_BASE}._run_forever_cleanup", "_loop.py", "run_forever", "self", since=(3, 13)),
    _c(
        f"{_SEL}._ensure_fd_no_transport",
        "_factories.py",
        "asyncio's 'fd is used by transport' check",
        "self fd",
    ),
    _c("base_events._check_ssl_socket", "_loop.py", "sock_* on an SSLSocket", "sock"),
    _c("base_events._format_handle", "_glue.py", "debug mode's slow-callback log", "handle"),
    _c("base_events.Server._attach", "_stream.py", "server bookkeeping", "self"),
    _c("base_events.Server._detach", "_stream.py", "server bookkeeping", "self"),
    _c("events._set_running_loop", "_loop.py", "run_forever before 3.13", "loop"),
    _c("events._get_running_loop", "__init__.py", "run() on 3.10"),
    _r("events._ThreadSafeHandle", "_loop.py", "call_soon_threadsafe's handle", since=(3, 14)),
    _r(
        "events._BaseDefaultEventLoopPolicy",
        "__init__.py",
        "EventLoopPolicy's base",
        use="subclass",
        since=(3, 14),
    ),
    _r(
        "unix_events._UnixDefaultEventLoopPolicy",
        "__init__.py",
        "EventLoopPolicy's base",
        use="subclass",
        until=(3, 13),
    ),
    _c("runners._cancel_all_tasks", "__init__.py", "run() on 3.10", "loop"),
    _c(
        "futures._set_result_unless_cancelled",
        "_stream.py, _pipe.py",
        "wakes a connection's waiter",
        "fut result",
    ),
    _c(
        "selector_events._SelectorSocketTransport",
        "_stream.py",
        "the transport of a socket.socket subclass (it calls the socket's methods)",
        "loop sock protocol waiter extra server",
    ),
    _c(
        "selector_events._SelectorSocketTransport.write",
        "_glue.py",
        "its TypeError for non-bytes data, in the running version's words",
        "self data",
    ),
    _c("format_helpers._format_callback_source", "_glue.py", "handle repr, errors", "func args"),
    _c("format_helpers.extract_stack", "_glue.py", "debug mode's source tracebacks", "f"),
    _r("constants._SendfileMode", "_stream.py", "the transport's sendfile mode"),
    _r(
        "transports._FlowControlMixin",
        "_stream.py, _pipe.py",
        "SocketTransport's base (loop.sendfile checks it)",
        use="subclass",
    ),
    # -- transports and TLS -----------------------------------------------
    _r(
        "selector_events._SelectorDatagramTransport",
        "_datagram.py",
        "DatagramTransport's base (native sendto and reads)",
        use="subclass",
    ),
    *_attrs(
        "selector_events._SelectorTransport",
        "_sock _sock_fd _protocol _loop _buffer _conn_lost _closing _extra",
        "_datagram.py, src/datagram.rs",
        "the datagram core reads and writes asyncio's transport state",
    ),
    *_attrs(
        "selector_events._SelectorDatagramTransport",
        "_address",
        "src/datagram.rs",
        "the datagram core's sendto",
    ),
    _c(
        "selector_events._SelectorDatagramTransport._call_connection_lost",
        "_datagram.py",
        "drops the core's bound methods",
        "self exc",
    ),
    _c(
        "unix_events._UnixSubprocessTransport",
        "_subprocess.py",
        "the subprocess transport, over ferroloop's pipes",
        "loop protocol args shell stdin stdout stderr bufsize waiter extra",
    ),
    _r(
        "unix_events._ThreadedChildWatcher",
        "_subprocess.py",
        "3.14+: a loop whose asyncio chose a threaded watcher keeps asyncio's subprocess code",
        since=(3, 14),
    ),
    *_attrs(
        "unix_events._UnixSelectorEventLoop",
        "_watcher",
        "_subprocess.py",
        "3.14+: the child watcher asyncio chose for this loop",
        since=(3, 14),
    ),
    _c(
        "unix_events._UnixSubprocessTransport._process_exited",
        "_subprocess.py",
        "the pidfd saw the child exit",
        "self returncode",
    ),
    _c("unix_events._UnixSubprocessTransport._wait", "_subprocess.py", "exit status", "self"),
    *_attrs(
        "base_subprocess.BaseSubprocessTransport",
        "_proc",
        "_subprocess.py",
        "the Popen whose returncode ferroloop sets after reaping",
    ),
    _r("sslproto.SSLProtocol", "_ssl.py", "TLS with a shorter data path", use="subclass"),
    _o(
        f"{_BASE}.start_tls",
        "_ssl.py, _factories.py",
        "asyncio's own code, run with its global sslproto.SSLProtocol meaning ferroloop's",
        "self transport protocol sslcontext server_side server_hostname "
        "ssl_handshake_timeout ssl_shutdown_timeout",
        since=(3, 11),
    ),
    _r("sslproto._SSLProtocolTransport", "_ssl.py", "its write()", use="subclass", since=(3, 11)),
    _r("sslproto.SSLProtocolState", "_ssl.py", "TLS states", since=(3, 11)),
    _r("sslproto.SSLAgainErrors", "_ssl.py", "the errors that mean 'again'", since=(3, 11)),
    _r(
        "sslproto.AppProtocolState",
        "_ssl.py",
        "whether the app protocol got connection_made (start_tls's does not)",
        since=(3, 11),
    ),
    *[
        _o(
            f"sslproto.SSLProtocol.{name}",
            "_ssl.py",
            "replaced per-record path",
            params,
            since=(3, 11),
        )
        for name, params in (
            ("_get_app_transport", "self"),
            ("buffer_updated", "self nbytes"),
            ("_process_outgoing", "self"),
            ("_do_read", "self"),
            ("_do_read__buffered", "self"),
            ("_do_read__copied", "self"),
            ("_on_handshake_complete", "self handshake_exc"),
            ("_start_shutdown", "self"),
            ("_do_shutdown", "self"),
            ("_on_shutdown_complete", "self shutdown_exc"),
        )
    ],
    *[
        _c(f"sslproto.SSLProtocol.{name}", "_ssl.py", "asyncio's TLS steps", params, since=(3, 11))
        for name, params in (
            ("_write_appdata", "self list_of_data"),
            ("_do_write", "self"),
            ("_control_app_writing", "self"),
            ("_control_ssl_reading", "self"),
            ("_call_eof_received", "self"),
            ("_do_flush", "self"),
            ("_check_shutdown_timeout", "self"),
            ("_do_handshake", "self"),
            ("_fatal_error", "self exc message"),
        )
    ],
    *_attrs(
        "sslproto.SSLProtocol",
        "_state _write_backlog _write_buffer_size _sslobj _outgoing _incoming "
        "_ssl_writing_paused _ssl_reading_paused _app_writing_paused _app_reading_paused "
        "_outgoing_low_water _outgoing_high_water _incoming_low_water _incoming_high_water "
        "_app_transport _app_transport_created _ssl_buffer_view _app_protocol "
        "_app_protocol_is_buffer _app_protocol_get_buffer _app_protocol_buffer_updated "
        "_transport _loop _shutdown_timeout_handle _ssl_shutdown_timeout _eof_received "
        "_app_state",
        "_ssl.py",
        "the TLS state the shorter data path and the shutdown steps read and update",
        since=(3, 11),
    ),
    *_attrs(
        "sslproto._SSLProtocolTransport",
        "_ssl_protocol",
        "_ssl.py",
        "the app transport's protocol",
    ),
]


def resolve(path: str):
    """The object at `path` under the asyncio package (AttributeError if gone)."""
    import importlib

    module, _, rest = path.partition(".")
    obj = importlib.import_module(f"asyncio.{module}")
    for part in rest.split("."):
        obj = getattr(obj, part)
    return obj
