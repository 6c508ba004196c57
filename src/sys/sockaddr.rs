//! Socket addresses between `std::net`'s types and the kernel's
//! `sockaddr_in` / `sockaddr_in6` / `sockaddr_storage`.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Address families, as the kernel numbers them (`socket.AF_*`).
pub use libc::{AF_INET, AF_INET6};

/// A destination in the form the kernel takes.
pub enum SockAddr {
    V4(libc::sockaddr_in),
    V6(libc::sockaddr_in6),
}

impl SockAddr {
    pub fn v4(ip: Ipv4Addr, port: u16) -> SockAddr {
        // SAFETY: an all-zero sockaddr_in is a valid value.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = port.to_be();
        sa.sin_addr.s_addr = u32::from(ip).to_be();
        SockAddr::V4(sa)
    }

    /// `flowinfo` is the host-order 20-bit flow label field, `scope_id`
    /// the interface index (Python's 4-tuple).
    pub fn v6(ip: Ipv6Addr, port: u16, flowinfo: u32, scope_id: u32) -> SockAddr {
        // SAFETY: an all-zero sockaddr_in6 is a valid value.
        let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sa.sin6_port = port.to_be();
        sa.sin6_flowinfo = flowinfo.to_be();
        sa.sin6_addr.s6_addr = ip.octets();
        sa.sin6_scope_id = scope_id;
        SockAddr::V6(sa)
    }

    /// The pointer and length `sendto`/`connect` take.
    pub(super) fn as_raw(&self) -> (*const libc::sockaddr, libc::socklen_t) {
        match self {
            SockAddr::V4(sa) => (
                (sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            SockAddr::V6(sa) => (
                (sa as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            ),
        }
    }
}

/// Room for any address `recvfrom`/`accept` report.
pub struct SockAddrStorage(libc::sockaddr_storage);

/// A sender's address, decoded.
pub enum Peer {
    V4 {
        ip: Ipv4Addr,
        port: u16,
    },
    V6 {
        /// As Python's `socket` module writes it (see `numeric_host_v6`).
        host: String,
        port: u16,
        flowinfo: u32,
        scope_id: u32,
    },
    /// Another family (or none was reported).
    Other,
}

impl Default for SockAddrStorage {
    fn default() -> Self {
        // SAFETY: an all-zero sockaddr_storage is a valid value.
        SockAddrStorage(unsafe { std::mem::zeroed() })
    }
}

impl SockAddrStorage {
    /// The pointer and capacity `recvfrom`/`accept` take.
    pub(super) fn as_raw_mut(&mut self) -> (*mut libc::sockaddr, libc::socklen_t) {
        (
            (&mut self.0 as *mut libc::sockaddr_storage).cast(),
            std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        )
    }

    /// The address the kernel wrote.
    pub fn peer(&self) -> Peer {
        match self.0.ss_family as libc::c_int {
            libc::AF_INET => {
                // SAFETY: the family says this storage holds a sockaddr_in.
                let a = unsafe { &*(&self.0 as *const _ as *const libc::sockaddr_in) };
                Peer::V4 {
                    ip: Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    port: u16::from_be(a.sin_port),
                }
            }
            libc::AF_INET6 => {
                // SAFETY: the family says this storage holds a sockaddr_in6.
                let a = unsafe { &*(&self.0 as *const _ as *const libc::sockaddr_in6) };
                Peer::V6 {
                    host: numeric_host_v6(a),
                    port: u16::from_be(a.sin6_port),
                    flowinfo: u32::from_be(a.sin6_flowinfo),
                    scope_id: a.sin6_scope_id,
                }
            }
            _ => Peer::Other,
        }
    }
}

/// The host string Python's `socket` module makes of an IPv6 address:
/// `getnameinfo(NI_NUMERICHOST)`, as CPython's `makeipaddr` (a scoped
/// link-local address keeps its `%interface`, an IPv4-compatible one is
/// dotted).
fn numeric_host_v6(addr: &libc::sockaddr_in6) -> String {
    let mut host = [0 as libc::c_char; libc::NI_MAXHOST as usize];
    // SAFETY: `addr` is a whole sockaddr_in6 and `host` is writable for
    // its length; getnameinfo NUL-terminates what it writes.
    let rc = unsafe {
        libc::getnameinfo(
            (addr as *const libc::sockaddr_in6).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            libc::NI_NUMERICHOST,
        )
    };
    if rc != 0 {
        return Ipv6Addr::from(addr.sin6_addr.s6_addr).to_string();
    }
    // SAFETY: NUL-terminated by getnameinfo (see above).
    unsafe { std::ffi::CStr::from_ptr(host.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a `SockAddr` looks like once the kernel hands it back.
    fn round_trip(sa: &SockAddr) -> Peer {
        let mut storage = SockAddrStorage::default();
        let (src, len) = sa.as_raw();
        // SAFETY: copies `len` bytes of a live sockaddr into the storage,
        // which is larger.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.cast::<u8>(),
                (&mut storage.0 as *mut libc::sockaddr_storage).cast::<u8>(),
                len as usize,
            )
        };
        storage.peer()
    }

    #[test]
    fn ipv4_round_trips() {
        let Peer::V4 { ip, port } = round_trip(&SockAddr::v4(Ipv4Addr::new(10, 1, 2, 3), 5353))
        else {
            panic!("not v4");
        };
        assert_eq!((ip, port), (Ipv4Addr::new(10, 1, 2, 3), 5353));
    }

    #[test]
    fn ipv6_round_trips_as_python_writes_it() {
        let ip: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let Peer::V6 {
            host,
            port,
            flowinfo,
            scope_id,
        } = round_trip(&SockAddr::v6(ip, 443, 0x12345, 0))
        else {
            panic!("not v6");
        };
        assert_eq!(
            (host.as_str(), port, flowinfo, scope_id),
            ("2001:db8::1", 443, 0x12345, 0)
        );
        let Peer::V6 { host, .. } =
            round_trip(&SockAddr::v6("::ffff:1.2.3.4".parse().unwrap(), 1, 0, 0))
        else {
            panic!("not v6");
        };
        assert_eq!(host, "::ffff:1.2.3.4");
    }

    #[test]
    fn an_empty_storage_is_no_address() {
        assert!(matches!(SockAddrStorage::default().peer(), Peer::Other));
    }
}
