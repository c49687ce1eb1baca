"""Redaction of real credentials that an upstream reflects back toward the devbox.

`Redactor(secrets)` replaces every occurrence of a secret (and its URL-encoded form) with
MARKER in header values, WebSocket messages and streamed bodies. `BodyRedactor` works chunk
by chunk: it holds back only the shortest tail that could be the start of a secret, so a
server-sent event whose chunk ends in a newline passes without delay.
`Decoder` turns a gzip/deflate body into identity bytes on the fly (bounded per step), so a
compressed body can be redacted too.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from urllib.parse import quote

MARKER = b"[REDACTED]"
# Secrets shorter than this would turn ordinary text into markers; config rejects them.
MIN_SECRET_LEN = 4


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        needles: set[bytes] = set()
        for secret in secrets:
            if len(secret) < MIN_SECRET_LEN:
                continue
            needles.add(secret.encode())
            needles.add(quote(secret, safe="").encode())
        # longest first, so a secret containing another is replaced whole
        self.needles = tuple(sorted(needles, key=len, reverse=True))
        self._text = tuple(n.decode() for n in self.needles)
        self._starts = frozenset(n[:1] for n in self.needles)
        self._longest = max((len(n) for n in self.needles), default=1) - 1

    def bytes(self, data: bytes) -> bytes:
        for needle in self.needles:
            if needle in data:
                data = data.replace(needle, MARKER)
        return data

    def text(self, value: str) -> str:
        for needle in self._text:
            if needle in value:
                value = value.replace(needle, MARKER.decode())
        return value

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
    """gzip / deflate (zlib or raw) to identity, at most `step` output bytes at a time."""

    def __init__(self, encoding: str, step: int = 64 * 1024) -> None:
        self._encoding = encoding
        self._step = step
        # 32+: accept a gzip or zlib header; raw deflate is tried if that fails at once
        self._d = zlib.decompressobj(zlib.MAX_WBITS | 32)
        self._started = False

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        data = chunk
        while not self._d.eof:
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
            data = self._d.unconsumed_tail
            # a full step may leave output pending for input already consumed
            if not data and len(out) < self._step:
                return

    def flush(self) -> bytes:
        try:
            return self._d.flush()
        except zlib.error:
            raise DecodeError("bad compressed body") from None
