//! `DatagramCore`: the per-datagram paths of ferroloop's UDP transport.
//!
//! * receive (`read_ready`): one `recvfrom` into the thread's reusable
//!   buffer, a `bytes` of the exact size and the sender's address built
//!   natively, then `protocol.datagram_received(data, addr)` — where
//!   Python's `socket.recvfrom(256 KiB)` would allocate (and shrink) a
//!   256 KiB object per datagram;
//! * send (`sendto`): when nothing is buffered, `send`/`sendto` at once
//!   for `bytes`/`bytearray` to a connected peer or to a numeric
//!   `(host, port)` address, with no Python frame. Everything else (other
//!   data types, host names, scoped IPv6 addresses, a full socket buffer,
//!   a lost connection, argument errors) takes asyncio's own `sendto`,
//!   which the transport keeps as `_python_sendto`.
//!
//! Buffering, flow control and close are asyncio's own
//! `_SelectorDatagramTransport`, which `ferroloop._datagram.DatagramTransport`
//! extends; this core reads the transport's `_conn_lost`, `_buffer`,
//! `_address` and `_protocol` as asyncio's methods do.

use std::ffi::c_int;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;
use std::str::FromStr;

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyInt, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::py_io::os_error;
use crate::recv_buf::with_recv_buf;
use crate::sys::net::{recv_datagram, send_datagram};
use crate::sys::sockaddr::{Peer, SockAddr, SockAddrStorage, AF_INET, AF_INET6};

#[pyclass(frozen, module = "ferroloop._ferroloop")]
pub struct DatagramCore {
    /// The Python transport (`ferroloop._datagram.DatagramTransport`).
    transport: Py<PyAny>,
    fd: RawFd,
    family: c_int,
    /// The socket had a peer when the transport was made (asyncio's
    /// `_extra['peername']`): datagrams go out with `send`, not `sendto`.
    connected: bool,
}

/// `obj` as an exact `int` within `0..=max`, else None.
fn small_int(obj: &Bound<'_, PyAny>, max: u32) -> Option<u32> {
    let int = obj.cast_exact::<PyInt>().ok()?;
    int.extract::<u32>().ok().filter(|v| *v <= max)
}

/// The numeric address Python's `socket.sendto` would build from `addr`,
/// or None for anything it would resolve or reject (those go through
/// Python's own code, which gives its own results and errors).
fn numeric_sockaddr(family: c_int, addr: &Bound<'_, PyAny>) -> Option<SockAddr> {
    let tuple = addr.cast_exact::<PyTuple>().ok()?;
    let host = tuple.get_item(0).ok()?;
    let host = host.cast_exact::<PyString>().ok()?;
    let host = host.to_str().ok()?;
    let port = small_int(&tuple.get_item(1).ok()?, u16::MAX as u32)? as u16;
    match (family, tuple.len()) {
        (AF_INET, 2) => Some(SockAddr::v4(Ipv4Addr::from_str(host).ok()?, port)),
        (AF_INET6, 2..=4) => {
            let ip = Ipv6Addr::from_str(host).ok()?;
            let flowinfo = match tuple.get_item(2) {
                Ok(v) => small_int(&v, 0xfffff)?,
                Err(_) => 0,
            };
            let scope_id = match tuple.get_item(3) {
                Ok(v) => small_int(&v, u32::MAX)?,
                Err(_) => 0,
            };
            Some(SockAddr::v6(ip, port, flowinfo, scope_id))
        }
        _ => None,
    }
}

/// What the native send path did with a datagram.
enum Sent {
    /// Sent, or its error handed to `error_received`: nothing left to do.
    Done,
    /// Not a case the native path takes: asyncio's `sendto` does it.
    Python,
}

/// The address tuple Python's `socket` module gives for this sender.
fn sockaddr_to_py<'py>(py: Python<'py>, addr: &SockAddrStorage) -> PyResult<Bound<'py, PyAny>> {
    match addr.peer() {
        Peer::V4 { ip, port } => Ok((ip.to_string(), port).into_pyobject(py)?.into_any()),
        Peer::V6 {
            host,
            port,
            flowinfo,
            scope_id,
        } => Ok((host, port, flowinfo, scope_id)
            .into_pyobject(py)?
            .into_any()),
        Peer::Other => Ok(py.None().into_bound(py)),
    }
}

impl DatagramCore {
    fn try_send(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        addr: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Sent> {
        let transport = self.transport.bind(py);
        let addr = addr.filter(|a| !a.is_none()).cloned();
        let address = transport.getattr(intern!(py, "_address"))?;
        let target = if address.is_truthy()? {
            if addr.is_some() {
                return Ok(Sent::Python); // compared (or rejected) by asyncio
            }
            Some(address)
        } else {
            addr
        };
        let dest = if self.connected {
            None // asyncio sends to the peer whatever the address says
        } else {
            match target.and_then(|a| numeric_sockaddr(self.family, &a)) {
                Some(dest) => Some(dest),
                None => return Ok(Sent::Python),
            }
        };
        if transport.getattr(intern!(py, "_conn_lost"))?.is_truthy()?
            || transport.getattr(intern!(py, "_buffer"))?.is_truthy()?
        {
            return Ok(Sent::Python);
        }
        let sent = if let Ok(bytes) = data.cast_exact::<PyBytes>() {
            send_datagram(self.fd, bytes.as_bytes(), dest.as_ref())
        } else if let Ok(array) = data.cast_exact::<PyByteArray>() {
            // SAFETY: no Python code runs while the slice is in use.
            send_datagram(self.fd, unsafe { array.as_bytes() }, dest.as_ref())
        } else {
            return Ok(Sent::Python);
        };
        match sent {
            Ok(Some(_)) => Ok(Sent::Done),
            Ok(None) => Ok(Sent::Python), // full: asyncio buffers it
            Err(e) => {
                let protocol = transport.getattr(intern!(py, "_protocol"))?;
                let args = PyTuple::new(py, [os_error(py, e).into_value(py)])?;
                protocol.call_method1(intern!(py, "error_received"), args)?;
                Ok(Sent::Done)
            }
        }
    }
}

#[pymethods]
impl DatagramCore {
    #[new]
    fn new(transport: Py<PyAny>, fd: RawFd, family: c_int, connected: bool) -> Self {
        DatagramCore {
            transport,
            fd,
            family,
            connected,
        }
    }

    /// `transport.sendto(data, addr=None)`. Empty datagrams (dropped by
    /// asyncio before 3.13, sent from 3.13 on) take asyncio's path.
    #[pyo3(signature = (data, addr=None))]
    fn sendto(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        addr: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        if data.len().map_or(true, |n| n > 0) {
            if let Sent::Done = self.try_send(py, data, addr)? {
                return Ok(());
            }
        }
        let args = (data, addr);
        self.transport
            .bind(py)
            .call_method1(intern!(py, "_python_sendto"), args)?;
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.transport)
    }

    /// The socket is readable: one datagram to the protocol (or the
    /// error to `error_received`), as asyncio's `_read_ready`.
    fn read_ready(&self, py: Python<'_>) -> PyResult<()> {
        let transport = self.transport.bind(py);
        if transport.getattr(intern!(py, "_conn_lost"))?.is_truthy()? {
            return Ok(());
        }
        let mut addr = SockAddrStorage::default();
        let received = with_recv_buf(|buf| {
            recv_datagram(self.fd, buf, &mut addr)
                .map(|got| got.map(|n| PyBytes::new(py, &buf[..n])))
        });
        let protocol = transport.getattr(intern!(py, "_protocol"))?;
        match received {
            Ok(None) => Ok(()),
            Ok(Some(data)) => {
                let sender = sockaddr_to_py(py, &addr)?;
                protocol.call_method1(intern!(py, "datagram_received"), (data, sender))?;
                Ok(())
            }
            Err(e) => {
                let err = os_error(py, e);
                if err.is_instance_of::<PyKeyboardInterrupt>(py)
                    || err.is_instance_of::<PySystemExit>(py)
                {
                    return Err(err);
                }
                let args = PyTuple::new(py, [err.into_value(py)])?;
                protocol.call_method1(intern!(py, "error_received"), args)?;
                Ok(())
            }
        }
    }
}
