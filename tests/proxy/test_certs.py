"""The devbox CA and its leaves (proxy/certs.py), checked by what a client's TLS stack does
with them: a real handshake between a client context and a leaf's server context, in
memory. The CA's name constraints hold (OpenSSL enforces them), its key never shows, and the
leaf cache mints once per host, again when a leaf ages, and stays within its bound."""

from __future__ import annotations

import contextlib
import ssl

import pytest
from cryptography import x509

from proxy.certs import (
    CA_DAYS,
    SNI_SEEN,
    CertError,
    LeafCache,
    check_authority,
    fingerprint,
    new_authority,
)
from proxy.config import Authority


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, name: str | None):
    """Run a TLS handshake in memory; returns (client SSLObject, server SSLObject)."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname=name)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(10):
        for key, obj in (("c", c), ("s", s)):
            if not done[key]:
                with contextlib.suppress(ssl.SSLWantReadError):
                    obj.do_handshake()
                    done[key] = True
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return c, s
    raise AssertionError("handshake did not finish")


def client_for(ca: Authority) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca.cert)


@pytest.fixture(scope="module")
def ca() -> Authority:
    return new_authority("devbox t interception CA", ["example.test", "git.corp"])


def test_the_ca_is_a_name_constrained_p256_ca_for_its_hosts_only(ca):
    cert = x509.load_pem_x509_certificate(ca.cert.encode())
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    names = cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert names.critical
    assert {n.value for n in names.value.permitted_subtrees} == {"example.test", "git.corp"}
    assert {str(n.value) for n in names.value.excluded_subtrees} == {"0.0.0.0/0", "::/0"}
    assert cert.public_key().curve.name == "secp256r1"
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime.days in (CA_DAYS, CA_DAYS - 1)


@pytest.mark.parametrize("host", ["example.test", "api.example.test", "git.corp"])
def test_a_leaf_for_a_permitted_host_verifies(ca, host):
    leaves = LeafCache(ca, 4)
    client, server = handshake(leaves.context(host), client_for(ca), host)
    assert client.getpeercert()["subjectAltName"] == (("DNS", host),)
    assert getattr(server, SNI_SEEN) == host
    assert client.selected_alpn_protocol() in (None, "http/1.1")


@pytest.mark.parametrize("host", ["localhost", "evilexample.test", "example.test.evil", "corp"])
def test_the_ca_cannot_vouch_for_any_other_host(ca, host):
    # the proxy would never mint these (it intercepts only the CA's hosts); if its key
    # leaked, a leaf for another name would still be refused by the client's TLS stack
    leaves = LeafCache(ca, 4)
    with pytest.raises(ssl.SSLCertVerificationError, match=r"(?i)constraint|permitted"):
        handshake(leaves.context(host), client_for(ca), host)


def test_a_hello_naming_another_server_fails_the_handshake(ca):
    leaves = LeafCache(ca, 4)
    with pytest.raises(ssl.SSLError):
        handshake(leaves.context("example.test"), client_for(ca), "git.corp")


def test_a_hello_without_a_server_name_completes_but_leaves_no_name(ca):
    client = client_for(ca)
    client.check_hostname = False
    _, server = handshake(LeafCache(ca, 4).context("example.test"), client, None)
    assert getattr(server, SNI_SEEN, None) is None  # proxy/intercept.py refuses it then


def test_the_cache_mints_once_again_when_old_and_stays_bounded(ca):
    now = [0.0]
    leaves = LeafCache(ca, 2, clock=lambda: now[0])
    first = leaves.context("example.test")
    assert leaves.context("example.test") is first and leaves.minted == 1
    now[0] += 25 * 3600  # past REMINT_AFTER
    assert leaves.context("example.test") is not first and leaves.minted == 2
    for host in ("a.example.test", "b.example.test", "c.example.test"):
        leaves.context(host)
    assert len(leaves) == 2


def test_the_ca_key_never_shows_in_its_repr(ca):
    assert ca.key not in repr(ca) and "***" in repr(ca)
    body = ca.key.splitlines()[1]
    assert body not in repr(LeafCache(ca, 1).__dict__)


@pytest.mark.parametrize(
    "broken",
    [
        lambda ca: Authority(
            ca.cert, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        ),
        lambda ca: Authority("not a certificate", ca.key),
        lambda ca: Authority(ca.cert, new_authority("other", ["x.test"]).key),
    ],
    ids=["bad-key", "bad-cert", "foreign-key"],
)
def test_a_broken_ca_is_refused_without_showing_the_key(ca, broken):
    bad = broken(ca)
    with pytest.raises(CertError) as refused:
        check_authority(bad)
    assert bad.key.splitlines()[1] not in str(refused.value)


def test_a_ca_needs_a_host():
    with pytest.raises(CertError):
        new_authority("none", [])


def test_fingerprint_is_the_sha256_of_the_der(ca):
    import hashlib

    der = ssl.PEM_cert_to_DER_cert(ca.cert)
    assert fingerprint(ca.cert).replace(":", "").lower() == hashlib.sha256(der).hexdigest()
    with pytest.raises(CertError):
        fingerprint("nope")
