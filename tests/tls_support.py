"""Certificates for the TLS tests, made at test time (imported as a plain
module).

`make_certificates(directory)` writes a small PKI into `directory`:

- a CA ("ferroloop test CA");
- a server certificate for "localhost" and 127.0.0.1, signed by the CA;
- a second server certificate, for SNI_NAME only, signed by the CA;
- a client certificate (clientAuth), signed by the CA, for mutual TLS;
- a self-signed "localhost" certificate that no client trusts.

Keys are EC P-256: handshakes are cheap, which the churn test needs. The
`cryptography` package makes them when it can be imported; otherwise the
`openssl` command does. With neither, `CertificateToolMissing` is raised
(the fixture turns it into a skip).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import ipaddress
import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from transport_support import HOST, MB, Recorder, wait_until

SNI_NAME = "sni.ferroloop.test"
CLIENT_CN = "ferroloop test client"


class CertificateToolMissing(Exception):
    """Neither the cryptography package nor the openssl command is there."""


@dataclasses.dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    sni_cert: Path
    sni_key: Path
    client_cert: Path
    client_key: Path
    untrusted_cert: Path
    untrusted_key: Path
    tool: str  # "cryptography" or "openssl"

    def server_context(self, *, cert="server", require_client_cert=False, alpn=None):
        """A server context; cert is "server", "sni" or "untrusted"."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        chain = {
            "server": (self.server_cert, self.server_key),
            "sni": (self.sni_cert, self.sni_key),
            "untrusted": (self.untrusted_cert, self.untrusted_key),
        }[cert]
        ctx.load_cert_chain(*chain)
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.ca)
        if alpn is not None:
            ctx.set_alpn_protocols(alpn)
        return ctx

    def client_context(self, *, with_cert=False, alpn=None, context_class=ssl.SSLContext):
        """A client context that trusts the CA (and checks host names)."""
        ctx = context_class(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.ca)
        if with_cert:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        if alpn is not None:
            ctx.set_alpn_protocols(alpn)
        return ctx


def _paths(directory: Path, tool: str) -> Certificates:
    return Certificates(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        sni_cert=directory / "sni.pem",
        sni_key=directory / "sni.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        untrusted_cert=directory / "untrusted.pem",
        untrusted_key=directory / "untrusted.key",
        tool=tool,
    )


def make_certificates(directory: Path) -> Certificates:
    directory = Path(directory)
    try:
        import cryptography  # noqa: F401
    except ImportError:
        if shutil.which("openssl") is None:
            raise CertificateToolMissing(
                "needs the cryptography package or the openssl command to make certificates"
            ) from None
        return _make_with_openssl(directory)
    return _make_with_cryptography(directory)


# --- the cryptography package ---------------------------------------------------


def _make_with_cryptography(directory: Path) -> Certificates:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    files = _paths(directory, "cryptography")
    now = datetime.datetime.now(datetime.timezone.utc)

    def write_key(key, path):
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def build(subject_cn, key, issuer_cn, issuer_key, *, ca=False, sans=(), eku=None):
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject_cn))
            .issuer_name(name(issuer_cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                critical=False,
            )
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        if eku is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def write_cert(cert, path):
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cn = "ferroloop test CA"
    write_cert(build(ca_cn, ca_key, ca_cn, ca_key, ca=True), files.ca)

    def leaf(cn, cert_path, key_path, sans, eku, issuer_cn=ca_cn, issuer_key=ca_key):
        key = ec.generate_private_key(ec.SECP256R1())
        write_key(key, key_path)
        if issuer_key is None:  # self-signed
            issuer_key = key
        write_cert(build(cn, key, issuer_cn, issuer_key, sans=sans, eku=eku), cert_path)

    server_auth = ExtendedKeyUsageOID.SERVER_AUTH
    localhost_sans = (
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    )
    leaf("localhost", files.server_cert, files.server_key, localhost_sans, server_auth)
    leaf(SNI_NAME, files.sni_cert, files.sni_key, (x509.DNSName(SNI_NAME),), server_auth)
    leaf(
        CLIENT_CN,
        files.client_cert,
        files.client_key,
        (),
        ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    leaf(
        "localhost",
        files.untrusted_cert,
        files.untrusted_key,
        localhost_sans,
        server_auth,
        issuer_cn="localhost",
        issuer_key=None,
    )
    return files


# --- the openssl command -------------------------------------------------------


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_with_openssl(directory: Path) -> Certificates:
    files = _paths(directory, "openssl")
    ca_key = directory / "ca.key"

    def genkey(path):
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", path, cwd=directory)

    genkey(ca_key)
    _openssl(
        "req", "-x509", "-new", "-key", ca_key, "-subj", "/CN=ferroloop test CA",
        "-days", "2", "-sha256", "-out", files.ca,
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,digitalSignature,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
        cwd=directory,
    )  # fmt: skip

    serial = iter(range(1000, 2000))

    def leaf(cn, cert_path, key_path, extensions, self_signed=False):
        genkey(key_path)
        csr = directory / (cert_path.stem + ".csr")
        ext = directory / (cert_path.stem + ".ext")
        ext.write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid\n" + "".join(f"{e}\n" for e in extensions)
        )
        _openssl("req", "-new", "-key", key_path, "-subj", f"/CN={cn}", "-out", csr, cwd=directory)
        if self_signed:
            signer = ["-signkey", key_path]
        else:
            signer = ["-CA", files.ca, "-CAkey", ca_key, "-set_serial", str(next(serial))]
        _openssl(
            "x509", "-req", "-in", csr, *signer, "-days", "2", "-sha256",
            "-extfile", ext, "-out", cert_path,
            cwd=directory,
        )  # fmt: skip

    server_ext = ["subjectAltName=DNS:localhost,IP:127.0.0.1", "extendedKeyUsage=serverAuth"]
    leaf("localhost", files.server_cert, files.server_key, server_ext)
    leaf(SNI_NAME, files.sni_cert, files.sni_key, [f"subjectAltName=DNS:{SNI_NAME}", "extendedKeyUsage=serverAuth"])  # fmt: skip
    leaf(CLIENT_CN, files.client_cert, files.client_key, ["extendedKeyUsage=clientAuth"])
    leaf("localhost", files.untrusted_cert, files.untrusted_key, server_ext, self_signed=True)
    return files


# Hand-driven TLS peers (test_tls*.py).


class RawTLS:
    """A TLS endpoint driven by hand: an ssl.SSLObject over MemoryBIOs on a
    plain non-blocking socket, through the loop's sock_* methods. It lets a
    test stop reading, send half a record or cut the TCP connection under
    TLS, which no asyncio transport does on purpose."""

    def __init__(self, loop, sock, ctx, *, server_side, server_hostname=None):
        self.loop = loop
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(
            self.incoming, self.outgoing, server_side=server_side, server_hostname=server_hostname
        )

    @classmethod
    def client(cls, loop, sock, certs, ctx=None):
        ctx = ctx or certs.client_context()
        return cls(loop, sock, ctx, server_side=False, server_hostname="localhost")

    async def flush(self):
        data = self.outgoing.read()
        if data:
            await self.loop.sock_sendall(self.sock, data)

    async def feed(self):
        data = await self.loop.sock_recv(self.sock, 65536)
        if not data:
            raise ConnectionResetError("raw TLS peer: EOF")
        self.incoming.write(data)

    async def handshake(self, *, send_last_flight=True):
        """The handshake; with send_last_flight=False, this side's last
        flight stays in the outgoing BIO (for the caller to send with
        more)."""
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self.flush()
                await self.feed()
        if send_last_flight:
            await self.flush()

    def records(self, data: bytes) -> bytes:
        """data, encrypted into TLS records (not sent)."""
        self.obj.write(data)
        return self.outgoing.read()

    def close_notify(self) -> bytes:
        """Our close_notify (not sent)."""
        with contextlib.suppress(ssl.SSLWantReadError):
            self.obj.unwrap()
        return self.outgoing.read()

    async def read(self, n, timeout=3.0):
        """At least n bytes of application data; an SSLError (a record
        that does not decrypt, clear text, ...) is returned, not raised."""
        data = bytearray()

        async def reader():
            while len(data) < n:
                try:
                    data.extend(self.obj.read(MB))
                except ssl.SSLWantReadError:
                    await self.feed()

        try:
            await asyncio.wait_for(reader(), timeout)
        except ssl.SSLError as exc:
            return bytes(data), exc
        return bytes(data), None

    async def read_until_close(self, timeout=3.0):
        """Decrypt everything until the peer's close_notify or TCP EOF:
        (application data, whether a close_notify came)."""
        data = bytearray()

        async def reader():
            while True:
                try:
                    chunk = self.obj.read(MB)
                except ssl.SSLWantReadError:
                    try:
                        raw = await self.loop.sock_recv(self.sock, MB)
                    except ConnectionResetError:
                        return False
                    if not raw:
                        return False
                    self.incoming.write(raw)
                    continue
                except ssl.SSLZeroReturnError:
                    return True
                if not chunk:
                    return True
                data.extend(chunk)

        close_notify = await asyncio.wait_for(reader(), timeout)
        return bytes(data), close_notify

    async def answer_close(self):
        """Read until the peer's close_notify, then send ours."""
        _, close_notify = await self.read_until_close()
        assert close_notify, "the peer ended the TCP connection without close_notify"
        await self.loop.sock_sendall(self.sock, self.close_notify())


async def connected_raw_socket(loop, port, *, rcvbuf=None):
    sock = socket.socket()
    if rcvbuf is not None:
        # A small receive buffer: a server's writes back up quickly once
        # this end stops reading.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await loop.sock_connect(sock, (HOST, port))
    return sock


@contextlib.asynccontextmanager
async def raw_tls_client(loop, port, certs, *, rcvbuf=None):
    """A RawTLS client on a socket connected to HOST:port (closed on exit);
    the handshake is the caller's to drive."""
    sock = await connected_raw_socket(loop, port, rcvbuf=rcvbuf)
    with sock:
        yield RawTLS.client(loop, sock, certs)


def listening_socket():
    lsock = socket.create_server((HOST, 0))
    lsock.setblocking(False)
    return lsock


# --- TLS servers and connections (test_tls*.py) ------------------------------

NEW_SSLPROTO = sys.version_info >= (3, 11)
needs_311 = pytest.mark.skipif(
    not NEW_SSLPROTO, reason="ssl_shutdown_timeout and StreamWriter.start_tls are 3.11+"
)
X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT = 18
X509_V_ERR_HOSTNAME_MISMATCH = 62


class Server:
    """A create_server server (TLS if given a context) whose protocols are
    all kept: Recorders, echoing unless echo=False, or factory()'s."""

    def __init__(self, loop, factory=None, *, echo=True):
        self.loop = loop
        self.factory = factory or (lambda: Recorder(loop, echo=echo))
        self.protocols = []
        self.server = None

    def _make(self):
        proto = self.factory()
        self.protocols.append(proto)
        return proto

    async def start(self, ssl_ctx=None, **kw):
        self.server = await self.loop.create_server(self._make, HOST, 0, ssl=ssl_ctx, **kw)
        return self

    @property
    def port(self):
        return self.server.sockets[0].getsockname()[1]

    def made(self):
        return [p for p in self.protocols if p.transport is not None]

    async def first(self):
        """The first connection's protocol, once its connection is made."""
        await wait_until(lambda: self.protocols and self.protocols[0].transport is not None)
        return self.protocols[0]

    async def close(self):
        """Closes every connection gracefully, waits for their
        connection_lost, then closes the server."""
        for p in self.made():
            if not p.transport.is_closing():
                p.transport.close()
        await asyncio.wait_for(
            asyncio.gather(*(p.lost for p in self.made()), return_exceptions=True), 3
        )
        self.server.close()
        await asyncio.wait_for(self.server.wait_closed(), 3)

    async def abort(self):
        """Aborts every connection still open, then closes the server."""
        for p in self.protocols:
            if p.transport is not None and not p.transport.is_closing():
                p.transport.abort()
        self.server.close()
        await asyncio.wait_for(self.server.wait_closed(), 3)


async def tls_client(loop, port, certs, **kw):
    """A TLS client (a Recorder) of a test server on HOST:port, for
    "localhost", with a fresh default client context."""
    return await loop.create_connection(
        lambda: Recorder(loop), HOST, port,
        ssl=certs.client_context(), server_hostname="localhost", **kw,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def tls_pair(loop, server_ctx, client_ctx, *, server_hostname="localhost", **client_kw):
    """A TLS server and one TLS client of it, both ends established.

    Yields (client transport, client Recorder, server Recorder, Server);
    closes both ends gracefully and waits for connection_lost on exit."""
    srv = await Server(loop).start(server_ctx)
    client = None
    try:
        transport, client = await loop.create_connection(
            lambda: Recorder(loop),
            HOST,
            srv.port,
            ssl=client_ctx,
            server_hostname=server_hostname,
            **client_kw,
        )
        await wait_until(lambda: srv.made())
        yield transport, client, srv.made()[0], srv
    finally:
        if client is not None and not client.transport.is_closing():
            client.transport.close()
        if client is not None:
            await asyncio.wait_for(client.lost, 3)
        await srv.close()


def plain_tls_pair(loop, certs, **client_kw):
    """tls_pair with fresh default contexts."""
    return tls_pair(loop, certs.server_context(), certs.client_context(), **client_kw)


async def echo_once(transport, proto, payload=b"ping"):
    before = len(proto.data)
    transport.write(payload)
    data = await proto.received(before + len(payload))
    assert data[before:] == payload


async def check_tls_echo(loop, certs):
    """The loop still serves TLS: a fresh server and client, one echo, a
    clean close on both ends."""
    async with plain_tls_pair(loop, certs) as (tr, cl, sv, _):
        await echo_once(tr, cl, b"still alive")
        tr.close()
        assert await asyncio.wait_for(cl.lost, 3) is None
        assert await asyncio.wait_for(sv.lost, 3) is None
    assert cl.lost_calls == sv.lost_calls == 1
