"""Tar streams without whole archives in memory: a reader over an iterator of chunks (what
the Engine API yields), and a writer run on a thread into a pipe whose other end is read
as chunks (what the Engine API is sent, chunked, as it is made). Standard library only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

CHUNK = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class ChunkReader:
    """A read-only file over an iterator of bytes; `count` is what has been read so far,
    `on_read(n)` (if set) hears of every chunk taken from the iterator."""

    def __init__(self, chunks: Iterable[bytes], on_read: Callable[[int], None] | None = None):
        self._chunks = iter(chunks)
        self._buf = b""
        self._pos = 0
        self.count = 0
        self.on_read = on_read

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while size < 0 or len(out) < size:
            if self._pos >= len(self._buf):
                try:
                    self._buf, self._pos = next(self._chunks), 0
                except StopIteration:
                    break
                if self.on_read is not None:
                    self.on_read(len(self._buf))
                continue
            want = len(self._buf) - self._pos if size < 0 else size - len(out)
            piece = self._buf[self._pos : self._pos + want]
            self._pos += len(piece)
            out += piece
        self.count += len(out)
        return bytes(out)


def piped(produce: Callable[[BinaryIO], None], chunk: int = CHUNK) -> Iterator[bytes]:
    """Run `produce(out)` on a thread, writing into a pipe; yield what it writes as it comes.
    Its exception is raised here once the stream ends. A consumer that stops early (the
    engine refused the upload) closes the pipe, so the producer meets EPIPE and ends."""
    read_fd, write_fd = os.pipe()
    with contextlib.suppress(OSError):  # a bigger pipe: fewer, larger chunks on the wire
        fcntl.fcntl(write_fd, _F_SETPIPE_SZ, chunk)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with open(write_fd, "wb", buffering=chunk) as out:
                produce(out)
        except BrokenPipeError:
            pass  # the consumer went away; it reports why
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=run, name="devbox-tar", daemon=True)
    worker.start()
    try:
        with open(read_fd, "rb", buffering=0) as source:
            while data := source.read(chunk):
                yield data
    finally:
        worker.join()
    if failure:
        raise failure[0]
