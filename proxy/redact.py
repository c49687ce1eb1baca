"""Redaction of real credentials that an upstream reflects back toward the devbox.

`Redactor(secrets)` replaces every occurrence of a secret, and of the forms a careless
endpoint quotes it in (`encoded_forms`), with MARKER in header values, WebSocket messages
and streamed bodies. `BodyRedactor` works chunk
by chunk: it holds back only the shortest tail that could be the start of a secret, so a
server-sent event whose chunk ends in a newline passes without delay.
`Decoder` turns a gzip/deflate body into identity bytes on the fly (bounded per step), so a
compressed body can be redacted too.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Iterable, Iterator
from typing import AnyStr
from urllib.parse import quote, quote_plus

MARKER = b"[REDACTED]"
# Secrets shorter than this would turn ordinary text into markers; config rejects them.
MIN_SECRET_LEN = 4
# A base64 needle for a secret embedded at an unknown offset in a longer base64 string is
# only the part fixed by the secret alone; shorter than this it would match ordinary text.
MIN_EMBEDDED_B64 = 12


def _b64_forms(raw: bytes) -> set[bytes]:
    forms: set[bytes] = set()
    # The whole secret, encoded alone (standard and urlsafe, padded or not).
    whole = base64.b64encode(raw)
    forms |= {whole, whole.rstrip(b"=")}
    # Embedded at byte offset q of a longer value: the secret's bytes from the next multiple
    # of 3 on form whole base64 groups that depend on the secret alone. One core per
    # alignment (q % 3 == 0, 2, 1 -> skip 0, 1, 2 bytes); the characters at either end
    # mix with the neighbours' bits and stay (up to 3, giving away at most 2 bytes of the
    # secret per end).
    for skip in (0, 1, 2):
        body = raw[skip:]
        body = body[: len(body) - len(body) % 3]
        core = base64.b64encode(body)
        if len(core) >= MIN_EMBEDDED_B64:
            forms.add(core)
    return forms | {f.replace(b"+", b"-").replace(b"/", b"_") for f in forms}


def _percent_forms(secret: str) -> set[str]:
    forms = {quote(secret, safe=""), quote(secret), quote_plus(secret, safe="")}
    raw = secret.encode()
    forms.add("".join(f"%{b:02X}" for b in raw))  # every byte escaped
    lower = {_lower_escapes(f) for f in forms}
    return forms | lower


def _lower_escapes(text: str) -> str:
    parts = text.split("%")
    return parts[0] + "".join("%" + p[:2].lower() + p[2:] for p in parts[1:])


def encoded_forms(secret: str) -> set[bytes]:
    r"""The secret as sent, and as an endpoint would quote it: percent-encoded (upper or
    lower hex, `/` kept or not, `+` for space, every byte escaped), JSON-escaped (`\/` too),
    and base64 (standard and urlsafe, alone or embedded at any of the 3 alignments)."""
    forms = {secret, *_percent_forms(secret)}
    as_json = json.dumps(secret)[1:-1]
    forms |= {as_json, as_json.replace("/", "\\/")}
    return {f.encode() for f in forms} | _b64_forms(secret.encode())


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        needles: set[bytes] = set()
        for secret in secrets:
            if len(secret) < MIN_SECRET_LEN:
                continue
            needles |= encoded_forms(secret)
        # longest first, so a secret containing another is replaced whole
        self.needles = tuple(sorted(needles, key=len, reverse=True))
        self._text = tuple(n.decode() for n in self.needles)
        self._starts = frozenset(n[:1] for n in self.needles)
        self._longest = max((len(n) for n in self.needles), default=1) - 1
        self._folded = tuple(n.decode().lower() for n in self.needles)

    def holds_secret(self, name: str) -> bool:
        """Whether `name` (a header name: case-insensitive, as HTTP/2 hops lowercase it)
        contains any form of a secret."""
        lowered = name.lower()
        return any(n in lowered for n in self._folded)

    def bytes(self, data: bytes) -> bytes:
        return _cover(data, _occurrences(data, self.needles), MARKER)

    def text(self, value: str) -> str:
        return _cover(value, _occurrences(value, self._text), MARKER.decode())

    def spans(self, value: str) -> list[tuple[int, int]]:
        """Where any form of a secret occurs in `value` (start, end), overlaps included."""
        return _occurrences(value, self._text)

    def body(self) -> BodyRedactor:
        return BodyRedactor(self)

    def safe_cut(self, data: bytes, cut: int) -> int:
        """`cut`, moved back to the start of any secret occurrence that straddles it."""
        moved = True
        while moved:
            moved = False
            for needle in self.needles:
                j = data.find(needle, max(0, cut - len(needle) + 1))
                if j != -1 and j < cut < j + len(needle):
                    cut, moved = j, True
        return cut

    def holdback(self, data: bytes) -> int:
        """Length of the longest suffix of `data` that is a proper prefix of a needle.

        Only positions holding a needle's first byte can start such a suffix, so those are
        found with bytes.find instead of trying every suffix length (this runs per chunk).
        """
        end = len(data)
        lo = max(0, end - self._longest)
        best = 0
        for start in self._starts:
            i = data.find(start, lo)
            while i != -1 and end - i > best:
                tail = data[i:]
                if any(n.startswith(tail) for n in self.needles):
                    best = end - i  # the earliest match is the longest suffix for this byte
                    break
                i = data.find(start, i + 1)
        return best


def _occurrences(value: AnyStr, needles: Iterable[AnyStr]) -> list[tuple[int, int]]:
    found = []
    for needle in needles:
        i = value.find(needle)
        while i != -1:
            found.append((i, i + len(needle)))
            i = value.find(needle, i + 1)
    return found


def _cover(value: AnyStr, spans: list[tuple[int, int]], marker: AnyStr) -> AnyStr:
    """`value` with one marker over each run of overlapping spans: secrets that overlap
    (one ends where another begins, or one holds another) go as a whole, whichever order
    they are found in."""
    if not spans:
        return value
    spans.sort()
    out: list[AnyStr] = []
    pos = 0
    start, end = spans[0]
    for s, e in spans[1:]:
        if s < end:
            end = max(end, e)
            continue
        out += (value[pos:start], marker)
        pos, (start, end) = end, (s, e)
    out += (value[pos:start], marker, value[end:])
    return value[:0].join(out)


class BodyRedactor:
    """Streaming redaction across chunk boundaries."""

    def __init__(self, redactor: Redactor) -> None:
        self._r = redactor
        self._tail = b""

    def feed(self, chunk: bytes) -> bytes:
        # Decide what to hold back on the raw bytes, before any replacement: a complete short
        # secret may be the start of a longer one that the next chunk completes.
        data = self._tail + chunk if self._tail else chunk
        cut = self._r.safe_cut(data, len(data) - self._r.holdback(data))
        self._tail = data[cut:]
        return self._r.bytes(data[:cut])

    def flush(self) -> bytes:
        tail, self._tail = self._tail, b""
        return self._r.bytes(tail)


class DecodeError(Exception):
    pass


class Decoder:
    """gzip / deflate (zlib or raw) to identity, at most `step` output bytes at a time.

    A gzip body may hold several members (RFC 1952), decoded in turn; any other byte after
    the end of the compressed data, or a body that ends before it, is a DecodeError: the
    body is passed on exactly as declared, or not at all.
    """

    def __init__(self, encoding: str, step: int = 64 * 1024) -> None:
        self._encoding = encoding
        self._step = step
        # 32+: accept a gzip or zlib header; raw deflate is tried if that fails at once
        self._d = zlib.decompressobj(zlib.MAX_WBITS | 32)
        self._started = False
        self._gzip = encoding != "deflate"
        self._empty = True  # an empty body declared compressed is just empty

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        data = chunk
        self._empty = self._empty and not chunk
        while data or not self._d.eof:
            if self._d.eof:
                # more after the end: only a further gzip member may follow
                if not self._gzip:
                    raise DecodeError("data after the end of a compressed body")
                self._d = zlib.decompressobj(zlib.MAX_WBITS | 16)
            try:
                out = self._d.decompress(data, self._step)
            except zlib.error:
                if self._started or self._encoding != "deflate":
                    raise DecodeError("bad compressed body") from None
                self._d = zlib.decompressobj(-zlib.MAX_WBITS)
                self._started = True
                continue
            self._started = True
            if out:
                yield out
            data = self._d.unconsumed_tail or (self._d.unused_data if self._d.eof else b"")
            # a full step may leave output pending for input already consumed
            if not data and len(out) < self._step:
                return

    def finish(self) -> bytes:
        """What is left at the end of the body; DecodeError if the body was cut short."""
        try:
            tail = self._d.flush()
        except zlib.error:
            raise DecodeError("bad compressed body") from None
        if not self._d.eof and not self._empty:
            raise DecodeError("compressed body cut short")
        return tail
