"""What a CONNECT tunnel carries: the client's first bytes must not name another host.

A CONNECT to an allowed host could otherwise carry a TLS ClientHello whose SNI names a denied
virtual host on the same server or CDN (domain fronting), or plain HTTP with any `Host`. The
guard reads the client's side of the tunnel before any of it reaches the upstream:

- TLS (first byte 0x16): the ClientHello is reassembled across TLS records and TCP reads
  (bounded: MAX_HELLO bytes) and parsed strictly; its server_name must pass `check_sni`
  (the caller compares it with the CONNECT host). A missing SNI goes to `check_sni` as None;
  an encrypted_client_hello (0xfe0d) or draft ESNI (0xffce) extension, an SSLv2-format hello
  (it has no SNI), a malformed hello or anything but handshake records before it is refused.
  A TLS 1.3 client's records are followed after it, so a second hello (after a
  HelloRetryRequest) is checked the same way; then the rest passes untouched (the HTTP Host
  inside TLS can't be seen without terminating TLS).
- Plain HTTP (a first line holding "HTTP/"): every request head, pipelined and keep-alive
  ones too, is checked with `check_host`; bodies are followed by Content-Length or chunked
  framing so each next head is found. Anything the guard can't frame for sure is refused:
  obs-folded or bare-LF heads, absolute-form targets, CONNECT, Upgrade, a Transfer-Encoding
  other than `chunked`, both or repeated framing headers.
- Anything else (SSH, databases, a server that speaks first) passes untouched: those name no
  virtual host.

`feed` returns the bytes that may go upstream now and holds an incomplete hello or head;
`waiting` says something is held, so the caller can bound the time it waits.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from proxy.context import MAX_HEAD_BYTES

MAX_HELLO = 64 * 1024  # a ClientHello with post-quantum key shares is ~2 KB; padding ~16 KB
MAX_CHUNK_LINE = 1024

ECH_EXTENSIONS = frozenset({0xFE0D, 0xFFCE})  # encrypted_client_hello; draft encrypted SNI
_SERVER_NAME = 0x0000
_SUPPORTED_VERSIONS = 0x002B
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_REQUEST_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([\x21-\x7e]+) HTTP/1\.[01]")
_FIELD = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\x00\r\n]*?)[ \t]*")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x0c\x0e-\x1f\x7f]")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(;[^\r\n]*)?")

# check_sni(name or None) / check_host(Host value): None to admit, else the refusal's rule
Check = Callable[[str | None], str | None]


class Refused(Exception):
    """The tunnel must close: `rule` goes to the audit record."""

    def __init__(self, rule: str) -> None:
        super().__init__(rule)
        self.rule = rule


class TunnelGuard:
    def __init__(self, check_sni: Check, check_host: Check) -> None:
        self._check_sni = check_sni
        self._check_host = check_host
        self._buf = bytearray()
        self._mode = "start"  # start | line | tls | tls-more | http | pass
        self._http: _HttpFramer | None = None
        self._pos = 0  # TLS records of _buf read so far
        self._message = bytearray()  # the handshake bytes they carried

    @property
    def passing(self) -> bool:
        """Nothing more to check: bytes go through untouched."""
        return self._mode == "pass"

    @property
    def waiting(self) -> bool:
        """An incomplete hello, first line or request head is held back."""
        if self._http is not None:
            return self._http.waiting
        return bool(self._buf) and self._mode != "pass"

    def feed(self, data: bytes) -> bytes:
        if self._mode == "pass":
            return data
        if self._http is not None:
            return self._http.feed(data)
        self._buf += data
        if self._mode == "start":
            self._mode = self._classify()
        if self._mode == "line":
            self._mode = self._first_line()
        if self._mode in ("tls", "tls-more"):
            return self._tls()
        if self._mode == "http":
            self._http = _HttpFramer(self._check_host)
            held, self._buf = bytes(self._buf), bytearray()
            return self._http.feed(held)
        if self._mode == "pass":
            held, self._buf = bytes(self._buf), bytearray()
            return held
        return b""

    def _classify(self) -> str:
        first = self._buf[0]
        if first == 0x16:
            return "tls"
        if first >= 0x80:
            # SSLv2-format ClientHello (msg type 1 in its third byte): it carries no SNI
            if len(self._buf) < 3:
                return "start"
            if self._buf[2] == 1:
                raise Refused("tunnel:tls-sslv2-hello")
            return "pass"
        if first in _TCHAR or first in b"\r\n":
            return "line"
        return "pass"

    def _first_line(self) -> str:
        end = self._buf.find(b"\n")
        line = bytes(self._buf[: len(self._buf) if end < 0 else end])
        if _CONTROL.search(line.rstrip(b"\r")):
            return "pass"  # no HTTP server takes a control byte in a request line
        if end < 0:
            if len(self._buf) > MAX_HEAD_BYTES:
                # text with no line end: it could still become a request line
                raise Refused("tunnel:unclassified-first-line")
            return "line"
        line = line.rstrip(b"\r")
        return "http" if not line or b"HTTP/" in line.upper() else "pass"

    def _tls(self) -> bytes:
        """Hold records until the first ClientHello is complete and checked. A client that
        offers TLS 1.3 may get a HelloRetryRequest and send a second hello, which servers
        may route by anew: its records are followed ("tls-more") until the client sends
        application data or a message that is no ClientHello (a TLS 1.2 flight)."""
        out = bytearray()
        while True:
            hello = self._reassemble()
            if hello is None:
                break
            name, tls13 = _parse_client_hello(hello)
            rule = self._check_sni(name)
            if rule is not None:
                raise Refused(rule)
            out += self._release(self._pos)
            if not tls13:
                self._mode = "pass"
                break
            self._mode = "tls-more"
        if self._mode == "pass":
            out += self._release(len(self._buf))
        elif self._mode == "tls-more" and not self._message:
            out += self._release(self._pos)  # whole records between the hellos
        elif len(self._buf) > 2 * MAX_HELLO:  # tiny records: bound their headers too
            raise Refused("tunnel:tls-malformed")
        return bytes(out)

    def _release(self, upto: int) -> bytes:
        held = bytes(self._buf[:upto])
        del self._buf[:upto]
        self._pos -= upto
        return held

    def _reassemble(self) -> bytes | None:
        """The next ClientHello message body once every record holding it has arrived, else
        None. Incremental (each record is read once); raises Refused on anything but
        well-formed handshake records carrying one ClientHello."""
        buf, message = self._buf, self._message
        more = self._mode == "tls-more"
        while len(buf) - self._pos >= (5 if not more else 1):
            pos = self._pos
            kind = buf[pos]
            if more and (kind not in (0x14, 0x15, 0x16) or (message and kind != 0x16)):
                # application data, or a handshake message cut by another record (the
                # server refuses that): the hellos are over
                self._mode = "pass"
                return None
            if len(buf) - pos < 5:
                return None
            major, length = buf[pos + 1], int.from_bytes(buf[pos + 3 : pos + 5])
            if (kind != 0x16 and not more) or major != 3 or not 0 < length <= 16384 + 256:
                raise Refused("tunnel:tls-malformed")
            if len(buf) - pos - 5 < length:
                return None
            self._pos = pos + 5 + length
            if kind != 0x16:
                continue  # change_cipher_spec or alert between the hellos
            message += buf[pos + 5 : pos + 5 + length]
            if len(message) >= 4:
                if message[0] != 1:
                    if not more:  # the first handshake message must be a ClientHello
                        raise Refused("tunnel:tls-malformed")
                    self._mode = "pass"  # a TLS 1.2 client flight (or encrypted Finished)
                    return None
                size = int.from_bytes(message[1:4])
                if size > MAX_HELLO:
                    raise Refused("tunnel:tls-malformed")
                if len(message) == 4 + size:
                    hello = bytes(message[4:])
                    message.clear()
                    return hello
                if len(message) > 4 + size:  # another message behind it in the same flight
                    raise Refused("tunnel:tls-malformed")
        return None


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise Refused("tunnel:tls-malformed")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size))

    def vector(self, size: int) -> bytes:
        return self.take(self.number(size))

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def parse_client_hello(body: bytes) -> str | None:
    """The host_name of the server_name extension, or None when there is none.

    Raises Refused for a malformed hello, ECH, or an unusable server_name."""
    return _parse_client_hello(body)[0]


def _parse_client_hello(body: bytes) -> tuple[str | None, bool]:
    """(server name or None, whether the hello offers TLS 1.3)."""
    r = _Reader(body)
    r.take(2 + 32)  # legacy_version, random
    if len(r.vector(1)) > 32:  # legacy_session_id
        raise Refused("tunnel:tls-malformed")
    suites = r.vector(2)
    if not suites or len(suites) % 2:
        raise Refused("tunnel:tls-malformed")
    if not r.vector(1):  # legacy_compression_methods
        raise Refused("tunnel:tls-malformed")
    if r.left == 0:
        return None, False  # no extensions at all
    extensions = _Reader(r.vector(2))
    if r.left:
        raise Refused("tunnel:tls-malformed")
    seen: set[int] = set()
    name: str | None = None
    tls13 = False
    while extensions.left:
        kind, data = extensions.number(2), extensions.vector(2)
        if kind in seen:
            raise Refused("tunnel:tls-malformed")  # RFC 8446 4.2: at most one of each type
        seen.add(kind)
        if kind in ECH_EXTENSIONS:
            raise Refused("tunnel:tls-ech")
        if kind == _SERVER_NAME:
            name = _server_name(data)
        elif kind == _SUPPORTED_VERSIONS:
            versions = _Reader(data).vector(1)
            tls13 = any(versions[i : i + 2] == b"\x03\x04" for i in range(0, len(versions), 2))
    return name, tls13


def _server_name(data: bytes) -> str:
    outer = _Reader(data)
    names = _Reader(outer.vector(2))
    if outer.left or not names.left:
        raise Refused("tunnel:tls-malformed")
    found: str | None = None
    while names.left:
        kind, value = names.number(1), names.vector(2)
        if kind != 0 or found is not None or not value:
            raise Refused("tunnel:tls-sni-invalid")  # RFC 6066: one host_name, nothing else
        if not all(0x21 <= b < 0x7F for b in value):
            raise Refused("tunnel:tls-sni-invalid")
        found = value.decode("ascii")
    assert found is not None
    return found


class _HttpFramer:
    """Plain HTTP/1.x requests inside a tunnel: check each head, follow each body."""

    def __init__(self, check_host: Check) -> None:
        self._check_host = check_host
        self._buf = bytearray()
        self._state = "head"  # head | body | chunk-size | chunk-data | chunk-end | trailers
        self._remaining = 0

    @property
    def waiting(self) -> bool:
        return bool(self._buf)

    def feed(self, data: bytes) -> bytes:
        self._buf += data
        out = bytearray()
        while self._buf:
            if self._state in ("body", "chunk-data"):
                n = min(self._remaining, len(self._buf))
                out += self._buf[:n]
                del self._buf[:n]
                self._remaining -= n
                if self._remaining:
                    break
                self._state = "head" if self._state == "body" else "chunk-end"
                continue
            line_end = self._buf.find(b"\r\n\r\n" if self._state == "head" else b"\r\n")
            limit = MAX_HEAD_BYTES if self._state in ("head", "trailers") else MAX_CHUNK_LINE
            if line_end < 0:
                if len(self._buf) > limit:
                    raise Refused("tunnel:http-malformed")
                if self._state == "head" and self._buf.startswith(b"\r\n"):
                    out += self._buf[:2]  # an empty line before a request is allowed
                    del self._buf[:2]
                    continue
                break
            size = line_end + (4 if self._state == "head" else 2)
            piece = bytes(self._buf[:size])
            if self._state == "head" and piece.startswith(b"\r\n"):
                piece = b"\r\n"
                size = 2
            else:
                self._advance(piece[: size - (4 if self._state == "head" else 2)])
            out += piece
            del self._buf[:size]
        return bytes(out)

    def _advance(self, text: bytes) -> None:
        if self._state == "head":
            self._head(text)
        elif self._state == "chunk-size":
            match = _CHUNK_SIZE.fullmatch(text)
            if match is None:
                raise Refused("tunnel:http-malformed")
            self._remaining = int(match.group(1), 16)
            self._state = "chunk-data" if self._remaining else "trailers"
        elif self._state == "chunk-end":
            if text:
                raise Refused("tunnel:http-malformed")
            self._state = "chunk-size"
        elif self._state == "trailers":
            if not text:
                self._state = "head"
            elif _FIELD.fullmatch(text) is None:
                raise Refused("tunnel:http-malformed")

    def _head(self, text: bytes) -> None:
        request_line, *lines = text.split(b"\r\n")
        if any(b"\n" in line or b"\r" in line for line in lines) or b"\n" in request_line:
            raise Refused("tunnel:http-malformed")  # a bare CR or LF: parsers disagree
        match = _REQUEST_LINE.fullmatch(request_line)
        if match is None:
            raise Refused("tunnel:http-malformed")
        method, target = match.group(1), match.group(2)
        if method == b"CONNECT":
            raise Refused("tunnel:http-connect")
        if not (target.startswith(b"/") or (target == b"*" and method == b"OPTIONS")):
            raise Refused("tunnel:http-absolute-form")  # its authority would win over Host
        fields: dict[bytes, list[bytes]] = {}
        for line in lines:
            field = _FIELD.fullmatch(line)
            if field is None:
                raise Refused("tunnel:http-malformed")  # obs-fold, space before ':' ...
            fields.setdefault(field.group(1).lower(), []).append(field.group(2))
        hosts = fields.get(b"host", [])
        if len(hosts) != 1:
            raise Refused("tunnel:http-host-missing" if not hosts else "tunnel:http-malformed")
        rule = self._check_host(hosts[0].decode("latin-1"))
        if rule is not None:
            raise Refused(rule)
        if b"upgrade" in fields:
            raise Refused("tunnel:http-upgrade")  # what follows would not be HTTP to check
        encodings, lengths = fields.get(b"transfer-encoding"), fields.get(b"content-length")
        if encodings is not None:
            if lengths is not None or len(encodings) != 1 or encodings[0].lower() != b"chunked":
                raise Refused("tunnel:http-framing")
            self._state = "chunk-size"
        elif lengths is not None:
            if len(lengths) != 1 or not lengths[0].isdigit() or len(lengths[0]) > 18:
                raise Refused("tunnel:http-framing")
            self._remaining = int(lengths[0])
            self._state = "body" if self._remaining else "head"
