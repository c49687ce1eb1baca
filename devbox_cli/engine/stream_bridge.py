"""A plain socket for a hijacked stream that is not one: an exec over a TLS engine comes back
as an ssl.SSLSocket, over ssh as a channel object. asyncio adopts only plain sockets, so
`bridge` hands it one end of a socketpair and pumps bytes between the other end and the
stream on a thread of its own, both directions on that one thread with non-blocking calls:
an SSL connection must never be read and written from two threads at once (CPython gh-76714).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from typing import Any

CHUNK = 256 * 1024
LIMIT = 1 << 20  # bytes held per direction before the pump stops reading that side


def bridge(stream: Any) -> socket.socket:
    """Our end of a socketpair that carries `stream` both ways; closing it (or the stream
    ending) ends the pump and closes the stream."""
    ours, theirs = socket.socketpair()
    threading.Thread(
        target=pump, args=(stream, theirs), name="devbox-stream-bridge", daemon=True
    ).start()
    return ours


def _would_block() -> tuple[type[BaseException], ...]:
    import ssl

    return (BlockingIOError, InterruptedError, TimeoutError, ssl.SSLWantReadError,
            ssl.SSLWantWriteError)  # fmt: skip


def pump(stream: Any, pair: socket.socket) -> None:
    blocked = _would_block()
    to_stream, to_pair = bytearray(), bytearray()
    stream_eof = pair_eof = False
    sel = selectors.DefaultSelector()
    try:
        stream.setblocking(False)
        pair.setblocking(False)
        while True:
            moved = True
            while moved:  # until every side would block: also drains what TLS decrypted
                moved = False
                if not stream_eof and len(to_pair) < LIMIT:
                    try:
                        data = stream.recv(CHUNK)
                    except blocked:
                        pass
                    else:
                        stream_eof = not data
                        to_pair += data
                        moved = True
                if not pair_eof and len(to_stream) < LIMIT:
                    try:
                        data = pair.recv(CHUNK)
                    except blocked:
                        pass
                    else:
                        pair_eof = not data
                        to_stream += data
                        moved = True
                for buf, dest in ((to_pair, pair), (to_stream, stream)):
                    if buf:
                        try:
                            sent = dest.send(buf)
                        except blocked:
                            continue
                        del buf[:sent]
                        moved = moved or sent > 0
            if pair_eof and not to_stream:
                return  # our side is done; closing the stream tells the engine
            if stream_eof and not to_pair:
                with contextlib.suppress(OSError):
                    pair.shutdown(socket.SHUT_WR)
                if pair_eof:
                    return
            _wait(sel, stream, pair, to_stream, to_pair, stream_eof, pair_eof)
    except OSError:
        return  # either side broke: closing both ends the session
    finally:
        sel.close()
        for end in (pair, stream):
            with contextlib.suppress(Exception):
                end.close()


def _wait(
    sel: selectors.BaseSelector,
    stream: Any,
    pair: socket.socket,
    to_stream: bytearray,
    to_pair: bytearray,
    stream_eof: bool,
    pair_eof: bool,
) -> None:
    # TLS may need to write to read (or read to write), so a stream with work pending in
    # either direction is woken for both.
    stream_events = (0 if stream_eof else selectors.EVENT_READ) | (
        selectors.EVENT_WRITE if to_stream else 0
    )
    pair_events = (0 if pair_eof or len(to_stream) >= LIMIT else selectors.EVENT_READ) | (
        selectors.EVENT_WRITE if to_pair else 0
    )
    if len(to_pair) >= LIMIT:
        stream_events &= ~selectors.EVENT_READ
    for end, events in ((stream, stream_events), (pair, pair_events)):
        with contextlib.suppress(KeyError):
            sel.unregister(end)
        if events:
            sel.register(end, events)
    sel.select()
