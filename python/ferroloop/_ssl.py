"""asyncio's TLS layer with a shorter data path (CPython 3.11+; 3.10 keeps asyncio's).

`SSLProtocol` is asyncio's `sslproto.SSLProtocol` (3.11 rewrote it; 3.12 and
3.13 keep its data path): the handshake, shutdown, timeouts, flow control and
errors are asyncio's own methods. Only the per-record methods are replaced,
by versions that take the same steps with fewer Python calls:

- incoming ciphertext (`buffer_updated` -> `_do_read` -> `_do_read__copied`
  or `_do_read__buffered`):
  the read loop stops when the incoming BIO is empty (not at EOF) and the
  SSL object holds no decrypted bytes, where asyncio reads once more to get
  `SSLWantReadError` (an exception, with its message formatted, per batch);
  the flow-control checks are inlined and call asyncio's methods only when
  they would act;
- outgoing application data (`_SSLProtocolTransport.write` ->
  `_write_appdata` -> `_do_write` -> `_process_outgoing`): with an empty
  backlog the data goes to `SSLObject.write` directly (the backlog deque is
  only used for what the SSL object did not take), and the outgoing BIO is
  read only when it holds bytes.

Every state check, error path and exception is asyncio's; what is skipped is
work whose outcome is known (a read that would raise `SSLWantReadError`, a
read of an empty BIO, a flow-control call that would do nothing).
`loop.start_tls` builds asyncio's class directly (base_events), so upgraded
connections keep the stock data path.

Where asyncio's steps end a connection badly, they are replaced by what
uvloop's TLS layer (which asyncio's was ported from) does:

- application data that arrives after our close_notify (the peer sent it
  before it saw ours) is read and discarded before each `unwrap()`, which
  otherwise fails with SSLError(APPLICATION_DATA_AFTER_CLOSE_NOTIFY) and
  loses the connection with it; a TCP transport paused by the read buffer's
  high-water mark resumes, so that the peer's close_notify can arrive;
- once the shutdown completed, closing the TCP transport (which flushes its
  buffer first) is bounded by ssl_shutdown_timeout too (asyncio 3.14+ does
  this; 3.11-3.13 set no timer, and a peer that stopped reading kept the
  connection forever);
- `close()` after the peer's EOF arrived while reading was paused (asyncio
  keeps the connection in FLUSHING without a timer; its close() did
  nothing) completes the shutdown;
- a connection upgraded by start_tls (whose protocol gets no
  connection_made) delivers its first data after the waiter's callbacks,
  so that the code awaiting start_tls has the new transport first.

`start_tls` is the loop's `start_tls`: asyncio's own function (its code and
globals, as the running CPython has them at the call), run with
`sslproto.SSLProtocol` meaning this module's class.
"""

from __future__ import annotations

import inspect
import ssl
import sys
import types
from asyncio import base_events, sslproto

# 3.10's sslproto (the _SSLPipe design) has none of these: there `SSLProtocol`
# is asyncio's class (end of module).
_State = getattr(sslproto, "SSLProtocolState", None)
_WRAPPED = getattr(_State, "WRAPPED", None)
_FLUSHING = getattr(_State, "FLUSHING", None)
_SHUTDOWN = getattr(_State, "SHUTDOWN", None)
_DO_HANDSHAKE = getattr(_State, "DO_HANDSHAKE", None)
_AGAIN = getattr(sslproto, "SSLAgainErrors", ())
_CON_MADE = getattr(getattr(sslproto, "AppProtocolState", None), "STATE_CON_MADE", None)
_FATAL = "Fatal error on SSL protocol"
_SSLObject = ssl.SSLObject
_LAMBDA_DO_READ = sys.version_info < (3, 13)  # 3.13 schedules the bound method
_DISCARD_SIZE = 64 * 1024  # what one read of discarded application data asks for


# An `ssl.SSLObject`'s read/write/pending only forward to its C object
# (`_sslobj`): that is called directly, one Python frame less per call. A
# subclass (`SSLContext.sslobject_class`) keeps its own methods.


class _SSLProtocolTransport(sslproto._SSLProtocolTransport):
    def write(self, data):
        """Write some data bytes to the transport.

        This does not block; it buffers the data and arranges for it
        to be sent out asynchronously.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data: expecting a bytes-like instance, got {type(data).__name__}")
        if not data:
            return
        proto = self._ssl_protocol
        if proto._state is not _WRAPPED or proto._write_backlog:
            proto._write_appdata((data,))
            return
        # _write_appdata + _do_write with an empty backlog: the backlog holds
        # only what the SSL object does not take.
        try:
            try:
                sslobj = proto._sslobj
                if type(sslobj) is _SSLObject:
                    sslobj = sslobj._sslobj
                count = sslobj.write(data)
            except _AGAIN:
                proto._write_backlog.append(data)
                proto._write_buffer_size += len(data)
            except BaseException:
                proto._write_backlog.append(data)
                proto._write_buffer_size += len(data)
                raise
            else:
                data_len = len(data)
                if count < data_len:
                    # The rest goes through asyncio's loop, which retries it.
                    proto._write_backlog.append(data[count:])
                    proto._write_buffer_size += data_len - count
                    proto._do_write()
                    return
            # _process_outgoing()
            outgoing = proto._outgoing
            if not proto._ssl_writing_paused and outgoing.pending:
                proto._transport.write(outgoing.read())
            size = outgoing.pending + proto._write_buffer_size
            if proto._app_writing_paused:
                if size <= proto._outgoing_low_water:
                    proto._control_app_writing()
            elif size >= proto._outgoing_high_water:
                proto._control_app_writing()
        except Exception as ex:  # noqa: BLE001 (asyncio reports any error so)
            proto._fatal_error(ex, _FATAL)


class SSLProtocol(sslproto.SSLProtocol):
    # Set while a start_tls handshake completes: the first _do_read() waits
    # for the waiter's callbacks (see _on_handshake_complete).
    _defer_read = False

    def _get_app_transport(self):
        if self._app_transport is None:
            if self._app_transport_created:
                raise RuntimeError("Creating _SSLProtocolTransport twice")
            self._app_transport = _SSLProtocolTransport(self._loop, self)
            self._app_transport_created = True
        return self._app_transport

    def buffer_updated(self, nbytes):
        incoming = self._incoming
        incoming.write(self._ssl_buffer_view[:nbytes])
        state = self._state
        if state is _WRAPPED:
            if self._app_reading_paused:
                self._do_read()
                return
            # _do_read() of a WRAPPED connection; for a non-buffered app
            # protocol with _do_read__copied() and _process_outgoing() inlined.
            # Deliberate copies (here and in _SSLProtocolTransport.write): with
            # the calls instead, a 1 KiB TLS echo round trip costs 8% more
            # instructions (callgrind, 3.11: 90.2k against 83.5k). The cold
            # paths (_do_read: resume, handshake, FLUSHING) call the methods.
            try:
                if self._app_protocol_is_buffer:
                    self._do_read__buffered()
                    self._after_read()
                    return
                sslobj = self._sslobj
                if type(sslobj) is _SSLObject:
                    sslobj = sslobj._sslobj
                max_size = self.max_size
                chunk = b"1"
                first = data = None
                try:
                    while True:
                        chunk = sslobj.read(max_size)
                        if not chunk:
                            break
                        if first is None:
                            first = chunk
                        elif data is None:
                            data = [first, chunk]
                        else:
                            data.append(chunk)
                        if not incoming.pending and not incoming.eof and not sslobj.pending():
                            break  # the next read would raise SSLWantReadError
                except _AGAIN:
                    pass
                if first is not None:
                    self._app_protocol.data_received(first if data is None else b"".join(data))
                if not chunk:
                    # close_notify
                    self._call_eof_received()
                    self._start_shutdown()
                # _after_read(), inlined
                if self._write_backlog:
                    self._do_write()
                else:
                    outgoing = self._outgoing
                    if not self._ssl_writing_paused and outgoing.pending:
                        self._transport.write(outgoing.read())
                    size = outgoing.pending + self._write_buffer_size
                    if self._app_writing_paused:
                        if size <= self._outgoing_low_water:
                            self._control_app_writing()
                    elif size >= self._outgoing_high_water:
                        self._control_app_writing()
                size = incoming.pending
                if self._ssl_reading_paused:
                    if size <= self._incoming_low_water:
                        self._control_ssl_reading()
                elif size >= self._incoming_high_water:
                    self._control_ssl_reading()
            except Exception as ex:  # noqa: BLE001 (asyncio reports any error so)
                self._fatal_error(ex, _FATAL)
        elif state is _DO_HANDSHAKE:
            self._do_handshake()
        elif state is _FLUSHING:
            self._do_flush()
        elif state is _SHUTDOWN:
            self._do_shutdown()

    def _after_read(self):
        """The end of _do_read() after the app got the data: flush what the
        SSL object produced, then the reading side's flow control."""
        if self._write_backlog:
            self._do_write()
        else:
            self._process_outgoing()
        size = self._incoming.pending
        if self._ssl_reading_paused:
            if size <= self._incoming_low_water:
                self._control_ssl_reading()
        elif size >= self._incoming_high_water:
            self._control_ssl_reading()

    # Handshake flow

    def _on_handshake_complete(self, handshake_exc):
        """asyncio's, except for a connection upgraded by start_tls (the app
        protocol is not given connection_made): the data that came with the
        end of the handshake is delivered on the next iteration, after the
        waiter's callbacks (as uvloop does), instead of before start_tls
        returns. asyncio's order made a protocol reused across the upgrade
        answer that data on the plain transport, which the peer then read
        as a broken TLS record (WRONG_VERSION_NUMBER)."""
        if handshake_exc is not None or self._app_state is not _CON_MADE:
            super()._on_handshake_complete(handshake_exc)
            return
        self._defer_read = True
        try:
            super()._on_handshake_complete(handshake_exc)
        finally:
            self._defer_read = False

    # Shutdown flow

    def _start_shutdown(self):
        """asyncio's, and also close() after the peer's EOF came while
        reading was paused: asyncio's eof_received() then leaves the
        connection in FLUSHING, without a timer, until reading resumes (to
        deliver what is buffered), and its _start_shutdown() ignores
        FLUSHING: close() did nothing and connection_lost never came. Here
        close() starts the timer and finishes the flush on the next
        iteration (not from inside close(), which may run from a flush in
        progress: that one goes on by itself)."""
        if (
            self._state is _FLUSHING
            and self._eof_received
            and self._shutdown_timeout_handle is None
        ):
            if self._app_transport is not None:
                self._app_transport._closed = True
            self._shutdown_timeout_handle = self._loop.call_later(
                self._ssl_shutdown_timeout, self._check_shutdown_timeout
            )
            self._loop.call_soon(self._flush_after_eof)
            return
        super()._start_shutdown()

    def _flush_after_eof(self):
        if self._state is _FLUSHING:
            self._do_flush()

    def _do_shutdown(self):
        """asyncio's, with the application data received after our
        close_notify discarded before each unwrap() (see the module doc)."""
        try:
            if not self._eof_received:
                self._discard_appdata()
                self._sslobj.unwrap()
        except _AGAIN:
            self._process_outgoing()
        except ssl.SSLError as exc:
            self._on_shutdown_complete(exc)
        else:
            self._process_outgoing()
            self._call_eof_received()
            self._on_shutdown_complete(None)

    def _discard_appdata(self):
        """Read and drop the application data the SSL object holds, up to
        the peer's close_notify (left for unwrap() to see), then resume the
        TCP transport's reading if the read buffer's high-water mark had
        paused it. SSL errors propagate (as unwrap()'s would)."""
        sslobj = self._sslobj
        incoming = self._incoming
        try:
            while incoming.pending or sslobj.pending():
                if not sslobj.read(_DISCARD_SIZE):
                    break  # the peer's close_notify
        except (*_AGAIN, ssl.SSLZeroReturnError):
            # SSLZeroReturnError: the peer's close_notify, after ours.
            pass
        if self._ssl_reading_paused and incoming.pending <= self._incoming_low_water:
            self._control_ssl_reading()

    def _on_shutdown_complete(self, shutdown_exc):
        """asyncio 3.14's: after a clean shutdown, the timer also bounds the
        TCP transport's close, which flushes its buffer first: a peer that
        does not read could hold it forever. The timer is started here if
        the peer began the shutdown with a TCP EOF (asyncio 3.11-3.13 cancel
        it here, or never had one)."""
        if shutdown_exc:
            if self._shutdown_timeout_handle is not None:
                self._shutdown_timeout_handle.cancel()
                self._shutdown_timeout_handle = None
            self._fatal_error(shutdown_exc)
        else:
            self._loop.call_soon(self._transport.close)
            if self._shutdown_timeout_handle is None:
                self._shutdown_timeout_handle = self._loop.call_later(
                    self._ssl_shutdown_timeout, self._check_shutdown_timeout
                )

    # Outgoing flow

    def _process_outgoing(self):
        outgoing = self._outgoing
        if not self._ssl_writing_paused and outgoing.pending:
            self._transport.write(outgoing.read())
        # _control_app_writing() when it would act.
        size = outgoing.pending + self._write_buffer_size
        if self._app_writing_paused:
            if size <= self._outgoing_low_water:
                self._control_app_writing()
        elif size >= self._outgoing_high_water:
            self._control_app_writing()

    # Incoming flow

    def _do_read(self):
        if self._defer_read:  # start_tls's first read: see _on_handshake_complete
            self._defer_read = False
            self._loop.call_soon(self._do_read)
            return
        state = self._state
        if state is not _WRAPPED and state is not _FLUSHING:
            return
        try:
            if not self._app_reading_paused:
                if self._app_protocol_is_buffer:
                    self._do_read__buffered()
                else:
                    self._do_read__copied()
                if self._write_backlog:
                    self._do_write()
                else:
                    self._process_outgoing()
            # _control_ssl_reading() when it would act.
            size = self._incoming.pending
            if self._ssl_reading_paused:
                if size <= self._incoming_low_water:
                    self._control_ssl_reading()
            elif size >= self._incoming_high_water:
                self._control_ssl_reading()
        except Exception as ex:  # noqa: BLE001 (asyncio reports any error so)
            self._fatal_error(ex, _FATAL)

    def _do_read__buffered(self):
        sslobj = self._sslobj
        if type(sslobj) is _SSLObject:
            sslobj = sslobj._sslobj
        incoming = self._incoming
        offset = 0
        count = 1

        buf = self._app_protocol_get_buffer(incoming.pending)  # _get_read_buffer_size()
        wants = len(buf)

        try:
            count = sslobj.read(wants, buf)

            if count > 0:
                offset = count
                # The rest goes into a view of the app's buffer: asyncio's
                # buf[offset:] is a copy when buf is a bytearray, and what
                # was read into it was lost.
                view = None
                try:
                    while offset < wants:
                        if not incoming.pending and not incoming.eof and not sslobj.pending():
                            break  # the next read would raise SSLWantReadError
                        if view is None:
                            view = memoryview(buf).cast("B")
                        count = sslobj.read(wants - offset, view[offset:])
                        if count > 0:
                            offset += count
                        else:
                            break
                    else:
                        if _LAMBDA_DO_READ:
                            self._loop.call_soon(lambda: self._do_read())
                        else:
                            self._loop.call_soon(self._do_read)
                finally:
                    if view is not None:
                        view.release()  # the app may resize its buffer
        except _AGAIN:
            pass
        if offset > 0:
            self._app_protocol_buffer_updated(offset)
        if not count:
            # close_notify
            self._call_eof_received()
            self._start_shutdown()

    def _do_read__copied(self):
        sslobj = self._sslobj
        if type(sslobj) is _SSLObject:
            sslobj = sslobj._sslobj
        incoming = self._incoming
        max_size = self.max_size
        chunk = b"1"
        first = data = None
        try:
            while True:
                chunk = sslobj.read(max_size)
                if not chunk:
                    break
                if first is None:
                    first = chunk
                elif data is None:
                    data = [first, chunk]
                else:
                    data.append(chunk)
                if not incoming.pending and not incoming.eof and not sslobj.pending():
                    # Nothing left to decrypt: the next read would raise
                    # SSLWantReadError.
                    break
        except _AGAIN:
            pass
        if first is not None:
            self._app_protocol.data_received(first if data is None else b"".join(data))
        if not chunk:
            # close_notify
            self._call_eof_received()
            self._start_shutdown()


if sys.version_info < (3, 11):
    SSLProtocol = sslproto.SSLProtocol


class _SSLProtoWithOurProtocol:
    """`asyncio.sslproto` as seen by `start_tls`: its names, but
    `SSLProtocol` is ferroloop's."""

    SSLProtocol = SSLProtocol

    def __getattr__(self, name):
        return getattr(sslproto, name)


async def _start_tls(self, *args, **kwargs):
    """asyncio's `BaseEventLoop.start_tls` as it is now (its code, its module's
    globals looked up at this call), with `sslproto` meaning
    `_SSLProtoWithOurProtocol`: the steps stay the running CPython's (3.14
    moves a StreamReader's buffered bytes, for one), only the class it
    builds changes. Something other than a plain function there (a wrapper
    put in by someone else) is called as it is."""
    func = base_events.BaseEventLoop.start_tls
    if type(func) is not types.FunctionType:
        return await func(self, *args, **kwargs)
    module_globals = dict(func.__globals__)
    module_globals["sslproto"] = _SSLPROTO
    ours = types.FunctionType(
        func.__code__, module_globals, func.__name__, func.__defaults__, func.__closure__
    )
    ours.__kwdefaults__ = func.__kwdefaults__
    return await ours(self, *args, **kwargs)


_SSLPROTO = _SSLProtoWithOurProtocol()
_start_tls.__signature__ = inspect.signature(base_events.BaseEventLoop.start_tls)
_start_tls.__doc__ = base_events.BaseEventLoop.start_tls.__doc__

# 3.10 keeps asyncio's TLS layer, and its start_tls.
start_tls = None if SSLProtocol is sslproto.SSLProtocol else _start_tls
