"""The port-forward wire format (proxy/relay_wire.py): encoding, decoding in pieces, and every
malformed header refused as soon as it is in, before its payload is held."""

from __future__ import annotations

import os
import random

import pytest

from proxy import relay_wire as w


def test_frames_round_trip_whatever_the_pieces():
    frames = [
        w.Frame(w.HELLO, 0, w.PROTOCOL),
        w.Frame(w.OPEN, 1, b""),
        w.Frame(w.DATA, 1, os.urandom(w.MAX_DATA)),
        w.Frame(w.DATA, 7, b"x"),
        w.Frame(w.ACK, 1, w.COUNT.pack(w.WINDOW)),
        w.Frame(w.EOF, 1, b""),
        w.Frame(w.CLOSE, 2, bytes([w.REFUSED])),
        w.Frame(w.PING, 0, b"12345678"),
        w.Frame(w.PONG, 0, b""),
    ]
    stream = b"".join(w.encode(*f) for f in frames)
    rng = random.Random(7)
    for _ in range(20):
        decoder, got, pos = w.Decoder(), [], 0
        while pos < len(stream):
            step = rng.choice([1, 2, 8, 9, 10, 4096, 70000])
            got += decoder.feed(stream[pos : pos + step])
            pos += step
        assert got == frames
        assert decoder.pending == 0


def test_helpers_encode_what_their_frames_mean():
    assert w.Decoder().feed(w.ack(3, 1000)) == [w.Frame(w.ACK, 3, (1000).to_bytes(4, "big"))]
    assert w.Decoder().feed(w.close(9, w.RESET)) == [w.Frame(w.CLOSE, 9, bytes([w.RESET]))]


def header(kind: int, channel: int, length: int) -> bytes:
    return w.HEADER.pack(kind, channel, length)


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (header(0, 0, 0), "unknown frame kind 0"),
        (header(99, 1, 0), "unknown frame kind 99"),
        (header(w.DATA, 1, w.MAX_DATA + 1), "DATA frame of 65537 bytes"),
        (header(w.DATA, 1, 2**32 - 1), "DATA frame of 4294967295 bytes"),
        (header(w.DATA, 1, 0), "DATA frame of 0 bytes"),
        (header(w.ACK, 1, 3), "ACK frame of 3 bytes"),
        (header(w.ACK, 1, 8), "ACK frame of 8 bytes"),
        (header(w.CLOSE, 1, 0), "CLOSE frame of 0 bytes"),
        (header(w.OPEN, 1, 1), "OPEN frame of 1 bytes"),
        (header(w.EOF, 1, 5), "EOF frame of 5 bytes"),
        (header(w.HELLO, 0, 65), "HELLO frame of 65 bytes"),
        (header(w.HELLO, 0, 0), "HELLO frame of 0 bytes"),
        (header(w.PING, 0, 9), "PING frame of 9 bytes"),
        (header(w.DATA, 0, 1), "DATA frame on channel 0"),
        (header(w.OPEN, 0, 0), "OPEN frame on channel 0"),
        (header(w.PING, 5, 0), "PING frame on channel 5"),
        (header(w.HELLO, 1, 3), "HELLO frame on channel 1"),
    ],
)
def test_a_bad_header_is_refused_before_its_payload_arrives(head, message):
    decoder = w.Decoder()
    with pytest.raises(w.ProtocolError, match=message):
        decoder.feed(head)  # the header alone: nothing of a claimed payload is waited for
    assert decoder.pending <= w.HEADER.size


def test_a_bad_header_after_good_frames_is_still_refused():
    decoder = w.Decoder()
    good = w.encode(w.DATA, 1, b"ok")
    with pytest.raises(w.ProtocolError):
        decoder.feed(good + header(w.DATA, 1, 2**31))


def test_the_decoder_holds_at_most_one_incomplete_frame():
    decoder = w.Decoder()
    frame = w.encode(w.DATA, 1, b"z" * w.MAX_DATA)
    assert decoder.feed(frame[:-1]) == []
    assert decoder.pending == w.HEADER.size + w.MAX_DATA - 1
    assert decoder.feed(frame[-1:]) == [w.Frame(w.DATA, 1, b"z" * w.MAX_DATA)]
    assert decoder.pending == 0


def test_every_kind_has_a_name_a_size_rule_and_every_reason_a_text():
    assert set(w.NAMES) == set(w.PAYLOAD_SIZES) == set(range(1, 10))
    assert set(w.REASONS) == set(range(1, 7))
    assert w.ACK_AT <= w.WINDOW and w.MAX_DATA <= w.WINDOW
