//! TCP or Unix-domain endpoints, listeners and non-blocking streams for mio.

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::args::Args;
use crate::tls::TlsStream;

#[derive(Clone, Debug)]
pub enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Endpoint {
    /// `--unix PATH` if given, else `--addr HOST:PORT` (or `default_addr`).
    pub fn from_args(args: &Args, default_addr: Option<&str>) -> Result<Endpoint, String> {
        if let Some(path) = args.get("unix") {
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let addr = args
            .get("addr")
            .or(default_addr)
            .ok_or("give --addr HOST:PORT or --unix PATH")?;
        addr.to_socket_addrs()
            .map_err(|e| format!("--addr {addr}: {e}"))?
            .next()
            .map(Endpoint::Tcp)
            .ok_or(format!("--addr {addr}: no address"))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Endpoint::Tcp(addr) => write!(f, "{addr}"),
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// TLS (rustls) over a `Tcp` or `Unix` stream.
    Tls(Box<TlsStream<Stream>>),
}

impl Stream {
    /// Connects (blocking), sets TCP_NODELAY, and returns the stream non-blocking.
    pub fn connect(endpoint: &Endpoint) -> io::Result<Stream> {
        match endpoint {
            Endpoint::Tcp(addr) => {
                let stream = std::net::TcpStream::connect(addr)?;
                stream.set_nodelay(true)?;
                stream.set_nonblocking(true)?;
                Ok(Stream::Tcp(TcpStream::from_std(stream)))
            }
            Endpoint::Unix(path) => {
                let stream = std::os::unix::net::UnixStream::connect(path)?;
                stream.set_nonblocking(true)?;
                Ok(Stream::Unix(UnixStream::from_std(stream)))
            }
        }
    }

    /// Connects, completes a TLS handshake with `server_name` (blocking), and
    /// returns the TLS stream non-blocking.
    pub fn connect_tls(
        endpoint: &Endpoint,
        config: &std::sync::Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> io::Result<Stream> {
        let conn = crate::tls::client_connection(config, server_name).map_err(io::Error::other)?;
        let plain = match endpoint {
            Endpoint::Tcp(addr) => {
                let stream = std::net::TcpStream::connect(addr)?;
                stream.set_nodelay(true)?;
                let mut tls = TlsStream::new(conn, stream);
                tls.handshake()?;
                tls.sock.set_nonblocking(true)?;
                (tls.conn, Stream::Tcp(TcpStream::from_std(tls.sock)))
            }
            Endpoint::Unix(path) => {
                let stream = std::os::unix::net::UnixStream::connect(path)?;
                let mut tls = TlsStream::new(conn, stream);
                tls.handshake()?;
                tls.sock.set_nonblocking(true)?;
                (tls.conn, Stream::Unix(UnixStream::from_std(tls.sock)))
            }
        };
        Ok(Stream::Tls(Box::new(TlsStream::new(plain.0, plain.1))))
    }

    /// Wraps an accepted stream in a TLS server connection (the handshake
    /// happens as the client's data arrives).
    pub fn accept_tls(self, config: &std::sync::Arc<rustls::ServerConfig>) -> io::Result<Stream> {
        let conn = rustls::ServerConnection::new(config.clone()).map_err(io::Error::other)?;
        Ok(Stream::Tls(Box::new(TlsStream::new(conn, self))))
    }

    /// TLS ciphertext is waiting for the socket (WRITABLE is needed).
    pub fn has_pending_output(&self) -> bool {
        match self {
            Stream::Tls(s) => s.has_pending_output(),
            _ => false,
        }
    }

    /// Sends pending TLS ciphertext; Ok(true) once none is left.
    pub fn flush_output(&mut self) -> io::Result<bool> {
        match self {
            Stream::Tls(s) => s.flush_output(),
            _ => Ok(true),
        }
    }

    /// The negotiated TLS cipher suite, for a TLS stream.
    pub fn cipher_suite(&self) -> Option<String> {
        match self {
            Stream::Tls(s) => s.cipher_suite(),
            _ => None,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(r, t, i),
            Stream::Unix(s) => s.register(r, t, i),
            Stream::Tls(s) => s.sock.register(r, t, i),
        }
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(r, t, i),
            Stream::Unix(s) => s.reregister(r, t, i),
            Stream::Tls(s) => s.sock.reregister(r, t, i),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(r),
            Stream::Unix(s) => s.deregister(r),
            Stream::Tls(s) => s.sock.deregister(r),
        }
    }
}

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// Binds and listens; a stale Unix socket file at the path is replaced.
    pub fn bind(endpoint: &Endpoint) -> io::Result<Listener> {
        match endpoint {
            Endpoint::Tcp(addr) => Ok(Listener::Tcp(TcpListener::bind(*addr)?)),
            Endpoint::Unix(path) => {
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    if meta.file_type().is_socket() {
                        std::fs::remove_file(path)?;
                    }
                }
                Ok(Listener::Unix(UnixListener::bind(path)?))
            }
        }
    }

    /// Where the listener ended up (the real port when bound to port 0).
    pub fn local_endpoint(&self, requested: &Endpoint) -> io::Result<Endpoint> {
        match self {
            Listener::Tcp(l) => Ok(Endpoint::Tcp(l.local_addr()?)),
            Listener::Unix(_) => Ok(requested.clone()),
        }
    }

    /// Accepts one pending connection, with TCP_NODELAY set for TCP.
    pub fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => {
                let (stream, _) = l.accept()?;
                stream.set_nodelay(true)?;
                Ok(Stream::Tcp(stream))
            }
            Listener::Unix(l) => Ok(Stream::Unix(l.accept()?.0)),
        }
    }
}

impl Source for Listener {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.register(r, t, i),
            Listener::Unix(l) => l.register(r, t, i),
        }
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.reregister(r, t, i),
            Listener::Unix(l) => l.reregister(r, t, i),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.deregister(r),
            Listener::Unix(l) => l.deregister(r),
        }
    }
}

/// Ok(None) when the call would block or was interrupted: try on a later event.
pub fn retry_later(result: io::Result<usize>) -> io::Result<Option<usize>> {
    match result {
        Ok(n) => Ok(Some(n)),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => Ok(None),
        Err(e) => Err(e),
    }
}
