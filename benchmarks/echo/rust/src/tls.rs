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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;
    use std::path::PathBuf;
    use std::process::Command;

    /// A CA and a server certificate for "localhost", made with the openssl
    /// command (None when it is missing).
    fn certificates() -> Option<PathBuf> {
        let dir = std::env::temp_dir().join(format!("echo-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let d = |name: &str| dir.join(name).to_str().unwrap().to_string();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let ext = d("server.ext");
        std::fs::write(
            &ext,
            "basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost\n",
        )
        .ok()?;
        let steps: [Vec<String>; 3] = [
            ["req", "-x509"]
                .iter()
                .chain(&ec)
                .map(|s| s.to_string())
                .chain(
                    [
                        "-keyout",
                        &d("ca.key"),
                        "-out",
                        &d("ca.pem"),
                        "-days",
                        "1",
                        "-subj",
                        "/CN=test CA",
                        "-addext",
                        "basicConstraints=critical,CA:TRUE",
                        "-addext",
                        "keyUsage=critical,keyCertSign",
                    ]
                    .iter()
                    .map(|s| s.to_string()),
                )
                .collect(),
            ["req"]
                .iter()
                .chain(&ec)
                .map(|s| s.to_string())
                .chain(
                    [
                        "-keyout",
                        &d("server.key"),
                        "-out",
                        &d("server.csr"),
                        "-subj",
                        "/CN=localhost",
                    ]
                    .iter()
                    .map(|s| s.to_string()),
                )
                .collect(),
            [
                "x509",
                "-req",
                "-in",
                &d("server.csr"),
                "-CA",
                &d("ca.pem"),
                "-CAkey",
                &d("ca.key"),
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &ext,
                "-out",
                &d("server.pem"),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ];
        for args in steps {
            let status = Command::new("openssl").args(&args).output().ok()?.status;
            if !status.success() {
                return None;
            }
        }
        Some(dir)
    }

    fn would_block<T>(result: io::Result<T>) -> io::Result<Option<T>> {
        match result {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// 300 KB each way through non-blocking TLS streams on a socket pair:
    /// the handshake and echo progress only through read/write/flush_output,
    /// as in the client and the ceiling, and every byte comes back.
    #[test]
    fn echo_over_nonblocking_socketpair() {
        let Some(dir) = certificates() else {
            eprintln!("openssl missing: test skipped");
            return;
        };
        let client_cfg = client_config(&dir.join("ca.pem")).unwrap();
        let server_cfg = server_config(&dir.join("server.pem"), &dir.join("server.key")).unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let mut client = TlsStream::new(client_connection(&client_cfg, "localhost").unwrap(), a);
        let mut server = TlsStream::new(rustls::ServerConnection::new(server_cfg).unwrap(), b);
        let message: Vec<u8> = (0..300_000).map(|i| (i % 251) as u8).collect();
        let (mut sent, mut echoed, mut pending) = (0, Vec::new(), Vec::new());
        let mut buf = vec![0u8; 64 * 1024];
        for _ in 0..100_000 {
            if sent < message.len() {
                sent += would_block(client.write(&message[sent..]))
                    .unwrap()
                    .unwrap_or(0);
            }
            client.flush_output().unwrap();
            if pending.is_empty() {
                if let Some(n) = would_block(server.read(&mut buf)).unwrap() {
                    pending.extend_from_slice(&buf[..n]);
                }
            }
            let n = would_block(server.write(&pending)).unwrap().unwrap_or(0);
            pending.drain(..n);
            server.flush_output().unwrap();
            if let Some(n) = would_block(client.read(&mut buf)).unwrap() {
                echoed.extend_from_slice(&buf[..n]);
            }
            if echoed.len() == message.len() {
                break;
            }
        }
        assert_eq!(echoed, message);
        assert_eq!(client.cipher_suite().as_deref(), Some(CIPHER_SUITE));
        let _ = std::fs::remove_dir_all(dir);
    }
}
