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
"""

from __future__ import annotations

import ssl
import sys
from asyncio import sslproto

# 3.10's sslproto (the _SSLPipe design) has none of these: there `SSLProtocol`
# is asyncio's class (end of module).
_State = getattr(sslproto, "SSLProtocolState", None)
_WRAPPED = getattr(_State, "WRAPPED", None)
_FLUSHING = getattr(_State, "FLUSHING", None)
_SHUTDOWN = getattr(_State, "SHUTDOWN", None)
_DO_HANDSHAKE = getattr(_State, "DO_HANDSHAKE", None)
_AGAIN = getattr(sslproto, "SSLAgainErrors", ())
_FATAL = "Fatal error on SSL protocol"
_SSLObject = ssl.SSLObject
_LAMBDA_DO_READ = sys.version_info < (3, 13)  # 3.13 schedules the bound method


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
                while offset < wants:
                    if not incoming.pending and not incoming.eof and not sslobj.pending():
                        break  # the next read would raise SSLWantReadError
                    count = sslobj.read(wants - offset, buf[offset:])
                    if count > 0:
                        offset += count
                    else:
                        break
                else:
                    if _LAMBDA_DO_READ:
                        self._loop.call_soon(lambda: self._do_read())
                    else:
                        self._loop.call_soon(self._do_read)
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
