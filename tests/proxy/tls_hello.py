"""ClientHello bytes for the tunnel-guard tests: real ones from the ssl module, synthetic ones
built field by field (to inject ECH, duplicates and malformed lengths), and re-fragmenting."""

from __future__ import annotations

import contextlib
import ssl


def real_client_hello(server_hostname: str | None) -> bytes:
    """The TLS records a real client (Python's ssl, OpenSSL) sends first."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with contextlib.suppress(ssl.SSLWantReadError):  # it waits for the ServerHello
        obj.do_handshake()
    return outgoing.read()


def vec(size: int, data: bytes) -> bytes:
    return len(data).to_bytes(size, "big") + data


def sni_extension(*names: bytes, name_type: int = 0) -> tuple[int, bytes]:
    entries = b"".join(bytes([name_type]) + vec(2, n) for n in names)
    return 0x0000, vec(2, entries)


def hello_body(extensions: list[tuple[int, bytes]] | None, *, session_id: bytes = b"") -> bytes:
    body = b"\x03\x03" + bytes(32) + vec(1, session_id) + vec(2, b"\x13\x01") + vec(1, b"\x00")
    if extensions is not None:
        body += vec(
            2, b"".join(kind.to_bytes(2, "big") + vec(2, data) for kind, data in extensions)
        )
    return body


def handshake(body: bytes, msg_type: int = 1) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


def records(message: bytes, size: int = 16384, kind: int = 0x16) -> bytes:
    """`message` split into TLS records of at most `size` bytes each."""
    out = b""
    for i in range(0, len(message), size):
        out += bytes([kind, 3, 1]) + vec(2, message[i : i + size])
    return out


def synthetic_hello(*names: str, extra: list[tuple[int, bytes]] = ()) -> bytes:  # type: ignore[assignment]
    exts = [sni_extension(*(n.encode() for n in names))] if names else []
    return records(handshake(hello_body(exts + list(extra))))


def unwrap_records(data: bytes) -> bytes:
    """The handshake bytes inside `data`'s TLS records (to re-fragment a real hello)."""
    out, pos = b"", 0
    while pos < len(data):
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        out += data[pos + 5 : pos + 5 + length]
        pos += 5 + length
    return out


def with_extension(hello_records: bytes, kind: int, data: bytes) -> bytes:
    """A real hello with one more extension appended (lengths fixed up)."""
    message = unwrap_records(hello_records)
    body = message[4:]
    # walk to the extensions block: version, random, session id, suites, compression
    pos = 34
    pos += 1 + body[pos]
    pos += 2 + int.from_bytes(body[pos : pos + 2], "big")
    pos += 1 + body[pos]
    exts = body[pos + 2 :] + kind.to_bytes(2, "big") + vec(2, data)
    return records(handshake(body[:pos] + vec(2, exts)))
