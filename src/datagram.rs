//! `DatagramReader`: the receive path of ferroloop's UDP transport. One
//! `recvfrom` into the thread's reusable buffer, a `bytes` of the exact
//! size and the sender's address built natively, then
//! `protocol.datagram_received(data, addr)` — where Python's
//! `socket.recvfrom(256 KiB)` would allocate (and shrink) a 256 KiB object
//! per datagram.
//!
//! The rest of the transport (sendto, buffering, flow control, close) is
//! asyncio's own `_SelectorDatagramTransport`, which
//! `ferroloop._transports.DatagramTransport` extends; this reader is
//! registered as its fd's reader, and reads the transport's `_conn_lost`
//! and `_protocol` as asyncio's `_read_ready` does.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::syscalls::{os_error, retry_syscall, with_recv_buf};

#[pyclass(frozen, module = "ferroloop._ferroloop")]
pub struct DatagramReader {
    /// The Python transport (`ferroloop._transports.DatagramTransport`).
    transport: Py<PyAny>,
    fd: RawFd,
}

/// The address tuple Python's `socket` module gives for this sender.
fn sockaddr_to_py<'py>(
    py: Python<'py>,
    addr: &libc::sockaddr_storage,
) -> PyResult<Bound<'py, PyAny>> {
    match addr.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a = unsafe { &*(addr as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Ok((ip.to_string(), u16::from_be(a.sin_port))
                .into_pyobject(py)?
                .into_any())
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a = unsafe { &*(addr as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Ok((
                ip.to_string(),
                u16::from_be(a.sin6_port),
                u32::from_be(a.sin6_flowinfo),
                a.sin6_scope_id,
            )
                .into_pyobject(py)?
                .into_any())
        }
        _ => Ok(py.None().into_bound(py)),
    }
}

#[pymethods]
impl DatagramReader {
    #[new]
    fn new(transport: Py<PyAny>, fd: RawFd) -> Self {
        DatagramReader { transport, fd }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.transport)
    }

    /// The socket is readable: one datagram to the protocol (or the
    /// error to `error_received`), as asyncio's `_read_ready`.
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let transport = self.transport.bind(py);
        if transport.getattr(intern!(py, "_conn_lost"))?.is_truthy()? {
            return Ok(());
        }
        // SAFETY: an all-zero sockaddr_storage is a valid value.
        let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let received = with_recv_buf(|buf| {
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            retry_syscall(|| {
                // SAFETY: `buf` and `addr` are writable for the sizes given.
                unsafe {
                    libc::recvfrom(
                        self.fd,
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        (&mut addr as *mut libc::sockaddr_storage).cast(),
                        &mut len,
                    )
                }
            })
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
