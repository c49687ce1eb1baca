"""The wire format of `devbox port-forward`: many TCP connections multiplexed over one byte
stream, the stdin/stdout of `python -m proxy.relay` inside the proxy container (a `docker
exec` carried by the Engine API). Pure and stdlib only: the CLI's end
(devbox_cli/engine/forwarding.py) and the relay's (proxy/relay.py) share this definition.

A frame is a 9-byte header, then its payload:

    kind u8 | channel u32 | length u32 | payload (length bytes)      big-endian

    HELLO   channel 0  the protocol name      the opener (CLI) first; the relay answers
    OPEN    channel    -                      opener: a new connection; ids strictly increase
    OPENED  channel    -                      relay: connected to the box's port
    DATA    channel    1..MAX_DATA bytes      either way, never beyond the receiver's window
    ACK     channel    u32 n                  the receiver wrote n more bytes on: n more credit
    EOF     channel    -                      the sender's side stopped writing (half-close)
    CLOSE   channel    u8 reason              the connection is over (refused, reset, ...)
    PING    channel 0  0..8 bytes             liveness; answered with PONG and the same bytes
    PONG    channel 0  0..8 bytes

Every length is checked against its kind as soon as the header is in, before any payload is
buffered, so a peer cannot make the other end hold more than one frame's worth of a stream.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

PROTOCOL = b"devbox-relay/1"
HEADER = struct.Struct(">BII")
COUNT = struct.Struct(">I")

HELLO, OPEN, OPENED, DATA, ACK, EOF, CLOSE, PING, PONG = range(1, 10)
NAMES = {
    HELLO: "HELLO",
    OPEN: "OPEN",
    OPENED: "OPENED",
    DATA: "DATA",
    ACK: "ACK",
    EOF: "EOF",
    CLOSE: "CLOSE",
    PING: "PING",
    PONG: "PONG",
}
SESSION_KINDS = frozenset({HELLO, PING, PONG})  # on channel 0; every other kind on 1..

MAX_DATA = 64 * 1024
# What either end may send on one connection before the other acknowledges it: the most
# that one connection can make the receiving end buffer, whoever is slow.
WINDOW = 256 * 1024
ACK_AT = WINDOW // 4  # acknowledge in batches; the sender stalls only at WINDOW
MAX_CHANNELS = 128  # open connections per session: the relay's memory stays under 2 x 32 MB
MAX_CHANNEL_ID = 2**32 - 1

# kind -> (least, most) payload bytes
PAYLOAD_SIZES = {
    HELLO: (1, 64),
    OPEN: (0, 0),
    OPENED: (0, 0),
    DATA: (1, MAX_DATA),
    ACK: (COUNT.size, COUNT.size),
    EOF: (0, 0),
    CLOSE: (1, 1),
    PING: (0, 8),
    PONG: (0, 8),
}

# CLOSE reasons
REFUSED, RESET, UNREACHABLE, TIMEOUT, BUSY, FAILED = range(1, 7)
REASONS = {
    REFUSED: "connection refused",
    RESET: "connection reset",
    UNREACHABLE: "host unreachable",
    TIMEOUT: "connection timed out",
    BUSY: "too many connections at once",
    FAILED: "connection failed",
}


class ProtocolError(Exception):
    """The other end sent something this protocol does not allow; the session ends."""


class Frame(NamedTuple):
    kind: int
    channel: int
    payload: bytes


def encode(kind: int, channel: int = 0, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, channel, len(payload)) + payload


def ack(channel: int, count: int) -> bytes:
    return encode(ACK, channel, COUNT.pack(count))


def close(channel: int, reason: int) -> bytes:
    return encode(CLOSE, channel, bytes([reason]))


def check_header(kind: int, channel: int, length: int) -> None:
    sizes = PAYLOAD_SIZES.get(kind)
    if sizes is None:
        raise ProtocolError(f"unknown frame kind {kind}")
    name = NAMES[kind]
    if not sizes[0] <= length <= sizes[1]:
        raise ProtocolError(f"{name} frame of {length} bytes (allowed: {sizes[0]}..{sizes[1]})")
    if (kind in SESSION_KINDS) != (channel == 0):
        raise ProtocolError(f"{name} frame on channel {channel}")


class Decoder:
    """Frames from a byte stream fed in pieces of any size."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        buf = self._buf
        buf += data
        frames = []
        pos, end = 0, len(buf)
        while end - pos >= HEADER.size:
            kind, channel, length = HEADER.unpack_from(buf, pos)
            check_header(kind, channel, length)
            stop = pos + HEADER.size + length
            if stop > end:
                break
            frames.append(Frame(kind, channel, bytes(buf[pos + HEADER.size : stop])))
            pos = stop
        del buf[:pos]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held (at most one header and MAX_DATA)."""
        return len(self._buf)
