"""The X.509 of host gateways: a devbox's interception CA, and the leaf certificates the proxy
mints with it for the hosts it intercepts. One implementation for both sides: the CLI makes
the CA at `devbox create` (services/authority.py), the proxy mints leaves (proxy/intercept.py).

The CA is ECDSA P-256, valid for CA_DAYS, may sign only end-entity certificates (path length
0) and carries critical name constraints: it can vouch for the DNS names it was made for
(and their subdomains, as RFC 5280 subtrees go) and for no IP address. So its key, were it
ever to leak out of the proxy, could impersonate nothing but those hosts, and only to the one
devbox that trusts it. A leaf is ECDSA P-256 too, for one host, valid LEAF_DAYS, and minted
again after REMINT_AFTER (the proxy may run for weeks).

`cryptography` is imported lazily: the CLI imports this module only when it makes a CA.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from proxy.config import Authority
from proxy.hosts import PolicyError, normalize_host

CA_DAYS = 3650
LEAF_DAYS = 7
REMINT_AFTER = 24 * 3600.0  # seconds; well inside LEAF_DAYS
BACKDATE = datetime.timedelta(hours=1)  # a box clock a little behind still accepts them
# ALPN: the proxy speaks HTTP/1.1 to the box (a client that offers h2 falls back to it)
ALPN = ["http/1.1"]
# where a leaf context's SNI check leaves the name a client asked for, on the SSLObject
SNI_SEEN = "devbox_sni"


class CertError(ValueError):
    """A CA certificate or key that cannot be used; the message never holds key material."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def new_authority(common_name: str, names: Iterable[str]) -> Authority:
    """A fresh CA named `common_name`, constrained to the DNS `names` (and their subdomains)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    permitted = sorted(set(names))
    if not permitted:
        raise CertError("a devbox CA needs at least one host name")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "devbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )
    now = _now()
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .add_extension(
            x509.NameConstraints(
                permitted_subtrees=[x509.DNSName(n) for n in permitted],
                # no IP address at all: the proxy never intercepts an IP literal
                excluded_subtrees=[
                    x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
                    x509.IPAddress(ipaddress.ip_network("::/0")),
                ],
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(
        cert=cert.public_bytes(serialization.Encoding.PEM).decode(),
        key=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
    )


def fingerprint(cert_pem: str) -> str:
    """The SHA-256 of a certificate's DER, as `devbox show` prints it (AB:CD:...)."""
    try:
        der = ssl.PEM_cert_to_DER_cert(cert_pem.strip())
    except ValueError:
        raise CertError("not a PEM certificate") from None
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


class _Loaded:
    """A CA's certificate and key, parsed once."""

    def __init__(self, authority: Authority) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            self.cert = x509.load_pem_x509_certificate(authority.cert.encode())
            key = serialization.load_pem_private_key(authority.key.encode(), password=None)
        except ValueError:
            raise CertError("the CA certificate or key does not parse") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertError("the CA key is not an ECDSA key")
        if key.public_key().public_numbers() != self.cert.public_key().public_numbers():
            raise CertError("the CA key does not belong to the CA certificate")
        self.key = key
        self.pem = authority.cert


def check_authority(authority: Authority) -> None:
    """Load-time check of a CA (raises CertError)."""
    _Loaded(authority)


def _mint(ca: _Loaded, host: str) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])]))
        .issuer_name(ca.cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    chain = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return chain, key_pem


def server_context(chain: bytes, key_pem: bytes, host: str) -> ssl.SSLContext:
    """A TLS server context presenting `chain` for `host`: TLS 1.2+, ALPN http/1.1 only, and
    a handshake whose ClientHello names another server (SNI) fails. The name a client sent
    is left on its SSLObject as SNI_SEEN; a hello without one never calls the check, so the
    caller refuses a connection whose SSLObject has no SNI_SEEN.

    ssl loads a certificate only from a file: the key goes through a memfd (memory, never
    a filesystem) where the platform has one, else a 0600 file removed at once."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(ALPN)
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION | ssl.OP_NO_TICKET
    ctx.sni_callback = _sni_check(host)
    _load_chain(ctx, chain + key_pem)
    return ctx


def _sni_check(host: str) -> Callable[[Any, str | None, ssl.SSLContext], int | None]:
    def check(sslobj: Any, name: str | None, _ctx: ssl.SSLContext) -> int | None:
        if name is None:
            return None  # no SNI_SEEN: refused once the handshake is done
        try:
            seen = normalize_host(name or "")
        except PolicyError:
            seen = ""
        setattr(sslobj, SNI_SEEN, seen)
        # the handshake then fails with reason CALLBACK_FAILED (proxy/intercept.py)
        return None if seen == host else ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME

    return check


def _load_chain(ctx: ssl.SSLContext, pem: bytes) -> None:
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("devbox-leaf", os.MFD_CLOEXEC)
        try:
            os.write(fd, pem)
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
            return
        except OSError:
            pass  # no /proc (some sandboxes): the file below
        finally:
            os.close(fd)
    fd, path = tempfile.mkstemp(prefix=".leaf-")
    try:
        os.write(fd, pem)
        os.close(fd)
        ctx.load_cert_chain(path)
    finally:
        os.unlink(path)


class LeafCache:
    """Server contexts per intercepted host, minted on first use and again after
    REMINT_AFTER. Bounded by the hosts a config names (`limit`); thread-safe, so a mint
    may run on a worker thread."""

    def __init__(self, authority: Authority, limit: int, *, clock: Any = time.monotonic) -> None:
        self._ca = _Loaded(authority)
        self._limit = max(1, limit)
        self._clock = clock
        self._lock = threading.Lock()
        self._contexts: dict[str, tuple[float, ssl.SSLContext]] = {}
        self.minted = 0

    def __len__(self) -> int:
        return len(self._contexts)

    def get(self, host: str) -> ssl.SSLContext | None:
        """The cached context for `host` if it is still fresh, else None (mint it)."""
        with self._lock:
            entry = self._contexts.get(host)
        if entry is not None and self._clock() - entry[0] < REMINT_AFTER:
            return entry[1]
        return None

    def mint(self, host: str) -> ssl.SSLContext:
        ctx = server_context(*_mint(self._ca, host), host)
        with self._lock:
            if len(self._contexts) >= self._limit and host not in self._contexts:
                oldest = min(self._contexts, key=lambda h: self._contexts[h][0])
                del self._contexts[oldest]
            self._contexts[host] = (self._clock(), ctx)
            self.minted += 1
        return ctx

    def context(self, host: str) -> ssl.SSLContext:
        return self.get(host) or self.mint(host)
