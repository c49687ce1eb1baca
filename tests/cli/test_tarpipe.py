"""Tar streams without a whole archive in memory (engine/tarpipe.py): a producer thread
into a pipe read as chunks, and a file over an iterator of chunks; and the progress bar a
transfer shows on a terminal (render.transfer)."""

from __future__ import annotations

import sys
import threading

import pytest

from devbox_cli.engine.tarpipe import ChunkReader, piped
from devbox_cli.errors import DevboxError


def test_what_is_written_comes_out_in_bounded_chunks():
    def produce(out):
        for _ in range(64):
            out.write(b"x" * 100_000)

    sizes = [len(chunk) for chunk in piped(produce, chunk=1 << 16)]
    assert sum(sizes) == 6_400_000
    assert max(sizes) <= 1 << 16 and len(sizes) >= 6_400_000 // (1 << 16)


def test_the_producers_error_comes_out_at_the_end():
    def produce(out):
        out.write(b"partial")
        raise DevboxError("cannot read /x: Permission denied")

    chunks = []
    with pytest.raises(DevboxError, match="Permission denied"):
        for chunk in piped(produce):
            chunks.append(chunk)
    assert b"".join(chunks) == b"partial"


def test_a_consumer_that_stops_ends_the_producer():
    done = threading.Event()

    def produce(out):
        try:
            while True:  # endless: only the closed pipe stops it
                out.write(b"y" * 65536)
        finally:
            done.set()

    stream = piped(produce)
    next(stream)
    stream.close()  # the engine refused the upload
    assert done.wait(30)


def test_chunk_reader_reads_across_chunks_and_counts():
    seen = []
    reader = ChunkReader([b"abc", b"", b"defg", b"h"], on_read=seen.append)
    assert reader.read(2) == b"ab"
    assert reader.read(4) == b"cdef"
    assert reader.read() == b"gh"
    assert reader.read(5) == b""
    assert reader.count == 8 and sum(seen) == 8


def test_the_progress_bar_shows_only_on_a_terminal_and_for_large_transfers(capsys, monkeypatch):
    from devbox_cli import render

    with render.transfer("copying big") as update:
        assert update is None  # not a terminal: nothing to count for
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with render.transfer("copying small") as update:
        assert update is not None
        update(1 << 20, 1 << 20)  # a terminal, but small: no bar
    assert capsys.readouterr().err == ""
    with render.transfer("copying big") as update:
        assert update is not None
        for done in range(0, 64 << 20, 8 << 20):
            update(done, 64 << 20)
    assert "copying big" in capsys.readouterr().err
