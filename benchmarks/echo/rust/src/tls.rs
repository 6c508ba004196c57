//! TLS for `--tls-*`: rustls (ring provider), TLS 1.3 only, one cipher suite.
//!
//! Every server the benchmark measures (the Python loops' `ssl` module and the
//! Rust ceiling) negotiates what the client offers, and the client offers one
//! suite only, so every loop runs the same cipher. The client verifies the
//! server's certificate against the CA the driver generated (`--tls-ca`).

use std::io::{self, ErrorKind, Read, Write};
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig};

/// The one suite the client offers.
pub const CIPHER_SUITE: &str = "TLS13_AES_128_GCM_SHA256";

fn provider() -> Arc<CryptoProvider> {
    let mut provider = ring::default_provider();
    provider.cipher_suites = vec![ring::cipher_suite::TLS13_AES_128_GCM_SHA256];
    Arc::new(provider)
}

fn tls_error(context: &str, error: impl std::fmt::Display) -> String {
    format!("{context}: {error}")
}

/// A client configuration trusting only the CA certificate(s) in `ca_pem`.
pub fn client_config(ca_pem: &Path) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).map_err(|e| tls_error("--tls-ca", e))? {
        let cert = cert.map_err(|e| tls_error("--tls-ca", e))?;
        roots.add(cert).map_err(|e| tls_error("--tls-ca", e))?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error("TLS client", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A server configuration with the certificate chain and key in PEM files.
pub fn server_config(cert_pem: &Path, key_pem: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain = CertificateDer::pem_file_iter(cert_pem)
        .map_err(|e| tls_error("--tls-cert", e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error("--tls-cert", e))?;
    let key = PrivateKeyDer::from_pem_file(key_pem).map_err(|e| tls_error("--tls-key", e))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error("TLS server", e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| tls_error("--tls-cert/--tls-key", e))?;
    Ok(Arc::new(config))
}

/// A client connection to `server_name` (a DNS name or an IP address).
pub fn client_connection(
    config: &Arc<ClientConfig>,
    server_name: &str,
) -> Result<ClientConnection, String> {
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| tls_error("--tls-server-name", e))?;
    ClientConnection::new(config.clone(), name).map_err(|e| tls_error("TLS client", e))
}

/// A TLS connection over a non-blocking socket `S`, with the semantics the
/// edge-triggered client and server need:
///
/// - `read` returns fewer bytes than asked only when the socket would block
///   (or at EOF), so "short read = drained" holds as for a plain socket;
/// - `write` takes plaintext into rustls and sends what the socket takes; it
///   returns `WouldBlock` while earlier ciphertext is still unsent, and
///   `has_pending_output` says when WRITABLE is needed to flush the rest.
pub struct TlsStream<S> {
    pub conn: Connection,
    pub sock: S,
}

impl<S: Read + Write> TlsStream<S> {
    pub fn new(conn: impl Into<Connection>, sock: S) -> TlsStream<S> {
        TlsStream {
            conn: conn.into(),
            sock,
        }
    }

    /// Completes the handshake on a blocking socket.
    pub fn handshake(&mut self) -> io::Result<()> {
        while self.conn.is_handshaking() {
            self.conn.complete_io(&mut self.sock)?;
        }
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock)?;
        }
        Ok(())
    }

    /// Ciphertext is waiting for the socket to take it.
    pub fn has_pending_output(&self) -> bool {
        self.conn.wants_write()
    }

    /// Sends pending ciphertext until done (Ok(true)) or the socket is full.
    pub fn flush_output(&mut self) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// The negotiated suite's name, once the handshake is done.
    pub fn cipher_suite(&self) -> Option<String> {
        self.conn
            .negotiated_cipher_suite()
            .map(|suite| format!("{:?}", suite.suite()))
    }
}

impl<S: Read + Write> Read for TlsStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        loop {
            // Plaintext rustls already decrypted comes first.
            while filled < buf.len() {
                match self.conn.reader().read(&mut buf[filled..]) {
                    Ok(0) => return Ok(filled), // close_notify received
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if filled > 0 => {
                        let _ = e; // report it on the next call
                        return Ok(filled);
                    }
                    Err(e) => return Err(e),
                }
            }
            if filled == buf.len() {
                return Ok(filled);
            }
            match self.conn.read_tls(&mut self.sock) {
                Ok(0) => {
                    // EOF: a final process reports a truncated stream.
                    self.conn
                        .process_new_packets()
                        .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
                    if filled > 0 {
                        return Ok(filled);
                    }
                    return match self.conn.reader().read(buf) {
                        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(0),
                        other => other,
                    };
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock && filled > 0 => return Ok(filled),
                Err(e) => return Err(e),
            }
            let state = self.conn.process_new_packets();
            // Handshake messages, alerts or key updates may need sending.
            let flushed = self.flush_output();
            state.map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
            flushed?;
        }
    }
}

impl<S: Read + Write> Write for TlsStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.flush_output()? {
            return Err(ErrorKind::WouldBlock.into());
        }
        let n = self.conn.writer().write(buf)?;
        self.flush_output()?;
        if n == 0 && !buf.is_empty() {
            return Err(ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.flush_output()? {
            Ok(())
        } else {
            Err(ErrorKind::WouldBlock.into())
        }
    }
}
