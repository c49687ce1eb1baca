"""Streaming redaction: any split of a body into chunks gives the same result as redacting
the whole body at once, and nothing is held back that could not start a secret."""

from __future__ import annotations

import base64
import contextlib
import json
import random
import zlib
from urllib.parse import quote

import pytest

from proxy.redact import MARKER, DecodeError, Decoder, Redactor

SECRETS = ["sk-abcabd-123", "sk-ab", "xyz/+="]  # overlapping prefixes, and URL-quotable bytes


def brute_holdback(redactor: Redactor, data: bytes) -> int:
    longest = max(len(n) for n in redactor.needles) - 1
    for k in range(min(longest, len(data)), 0, -1):
        if any(n.startswith(data[-k:]) for n in redactor.needles):
            return k
    return 0


def whole(redactor: Redactor, data: bytes) -> bytes:
    return redactor.bytes(data)


@pytest.mark.parametrize("seed", range(40))
def test_holdback_matches_the_definition(seed):
    rng = random.Random(seed)
    redactor = Redactor(SECRETS)
    alphabet = b"sk-abcd123xyz/+=% "
    for _ in range(200):
        data = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        assert redactor.holdback(data) == brute_holdback(redactor, data), data


def oracle(body: bytes) -> bytes:
    """Whole-body redaction written independently of Redactor: each secret and its
    URL-encoded form (the forms this body can hold), longest first, by str.replace."""
    text = body.decode("latin-1")
    forms = {f for s in SECRETS for f in (s, quote(s, safe=""))}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, MARKER.decode())
    return text.encode("latin-1")


def check_any_chunking(seed: int) -> None:
    rng = random.Random(seed)
    redactor = Redactor(SECRETS)
    pieces = [b"plain text ", *(s.encode() for s in SECRETS), b"sk-", b"xyz%2F%2B%3D", b"\n"]
    body = b"".join(rng.choice(pieces) for _ in range(60))
    cuts = sorted(rng.sample(range(1, len(body)), k=min(len(body) - 1, rng.randrange(1, 30))))
    stream = redactor.body()
    out = b""
    for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True):
        out += stream.feed(body[a:b])
    out += stream.flush()
    assert out == oracle(body), f"seed {seed}"
    for secret in SECRETS:
        assert secret.encode() not in out, f"seed {seed}"
        assert quote(secret, safe="").encode() not in out, f"seed {seed}"
    assert (MARKER in out) == any(s.encode() in body for s in SECRETS), f"seed {seed}"


@pytest.mark.parametrize("seed", range(40))
def test_any_chunking_redacts_like_the_whole_body(seed):
    check_any_chunking(seed)


def test_any_chunking_with_a_fresh_seed():
    seed = random.SystemRandom().randrange(2**32)
    print(f"fresh seed: {seed}")  # shown on failure; rerun with check_any_chunking(seed)
    check_any_chunking(seed)


def _decodings(token: str) -> list[bytes]:
    out = []
    for alphabet in (base64.b64decode, base64.urlsafe_b64decode):
        for cut in range(4):
            piece = token[cut:]
            piece = piece[: len(piece) - len(piece) % 4]
            with contextlib.suppress(ValueError):
                out.append(alphabet(piece))
    return out


@pytest.mark.parametrize("pad", range(9))
@pytest.mark.parametrize("secret", ["sk-real-secret-AAAA-1234567890", "k3y/with+slashes?=~~~01"])
def test_base64_embedded_at_any_offset_gives_away_at_most_two_bytes_per_end(pad, secret):
    """The README's claim: of a credential inside a longer base64 value, all but up to 3
    characters per end are redacted, and what stays decodes to at most 2 of its bytes."""
    redactor = Redactor([secret])
    raw = b"\xff" * pad + secret.encode() + b"\xfe" * 7
    windows = {secret.encode()[i : i + 3] for i in range(len(secret) - 2)}
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        out = redactor.text(encode(raw).decode())
        assert MARKER.decode() in out
        for token in out.split(MARKER.decode()):
            for decoded in _decodings(token):
                assert not any(w in decoded for w in windows), (token, decoded)


@pytest.mark.parametrize(
    "form",
    [
        lambda s: quote(s, safe=""),
        lambda s: "".join(f"%{b:02X}" for b in s.encode()),
        lambda s: "".join(f"%{b:02x}" for b in s.encode()),
        lambda s: json.dumps(s)[1:-1],
        lambda s: json.dumps(s)[1:-1].replace("/", "\\/"),
        lambda s: quote(s, safe="").lower().replace(s.lower(), s),  # lower hex, text kept
        lambda s: "k3y%2fwith%2bslashes%3f%3d~~~01",  # lower hex, every escape
        lambda s: base64.b64encode(s.encode()).decode(),
        lambda s: base64.urlsafe_b64encode(s.encode()).decode().rstrip("="),
    ],
)
def test_whole_encoded_forms_are_redacted(form):
    secret = "k3y/with+slashes?=~~~01"
    out = Redactor([secret]).text(f"x {form(secret)} y")
    assert out == f"x {MARKER.decode()} y"


# -- Decoder: a compressed body is read exactly as declared, or not at all ------------------


def _deflate(data: bytes, wbits: int) -> bytes:
    c = zlib.compressobj(wbits=wbits)
    return c.compress(data) + c.flush()


def _decode(decoder: Decoder, *chunks: bytes) -> list[bytes]:
    pieces = [p for chunk in chunks for p in decoder.feed(chunk)]
    return [*pieces, decoder.finish()]


@pytest.mark.parametrize(
    ("encoding", "wbits"), [("gzip", 31), ("x-gzip", 31), ("deflate", 15), ("deflate", -15)]
)
def test_decoder_gives_every_byte_in_pieces_of_at_most_one_step(encoding, wbits):
    # highly compressible: one input chunk holds far more than a step of output
    body = b"0" * 200_000 + bytes(range(256)) * 40 + b"1" * 100_000
    compressed = _deflate(body, wbits)
    for size in (len(compressed), 7):
        chunks = [compressed[i : i + size] for i in range(0, len(compressed), size)]
        pieces = _decode(Decoder(encoding, step=1000), *chunks)
        assert b"".join(pieces) == body
        assert max(len(p) for p in pieces) <= 1000


def test_decoder_reads_every_gzip_member():
    body = _deflate(b"first ", 31) + _deflate(b"second", 31)
    assert b"".join(_decode(Decoder("gzip"), body)) == b"first second"


@pytest.mark.parametrize("wbits", [15, -15])
def test_deflate_body_is_one_stream_nothing_after_it(wbits):
    decoder = Decoder("deflate")
    with pytest.raises(DecodeError):
        _decode(decoder, _deflate(b"first ", wbits) + _deflate(b"second", wbits))


@pytest.mark.parametrize(("encoding", "wbits"), [("gzip", 31), ("deflate", 15), ("deflate", -15)])
def test_an_empty_chunk_after_the_end_is_nothing(encoding, wbits):
    decoder = Decoder(encoding)
    assert b"".join(_decode(decoder, _deflate(b"whole body", wbits), b"")) == b"whole body"


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_an_empty_body_declared_compressed_is_empty(encoding):
    assert _decode(Decoder(encoding), b"") == [b""]
    assert _decode(Decoder(encoding)) == [b""]


@pytest.mark.parametrize(("encoding", "wbits"), [("gzip", 31), ("deflate", 15), ("deflate", -15)])
def test_a_body_cut_short_is_an_error(encoding, wbits):
    compressed = _deflate(b"a body long enough to cut" * 10, wbits)
    with pytest.raises(DecodeError):
        _decode(Decoder(encoding), compressed[: len(compressed) // 2])


def test_gzip_declared_body_must_be_gzip():
    # the raw deflate fallback is for `deflate` only (zlib's header is read for either)
    with pytest.raises(DecodeError):
        _decode(Decoder("gzip"), _deflate(b"not gzip at all", -15))


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_garbage_declared_compressed_is_an_error(encoding):
    with pytest.raises(DecodeError):
        _decode(Decoder(encoding), b"\xff" * 64)


def test_deflate_that_goes_bad_midway_is_not_reread_as_raw_deflate():
    # a zlib stream whose checksum is replaced by a raw deflate stream: the raw fallback is
    # only for a body that is raw deflate from its first byte
    decoder = Decoder("deflate")
    out = list(decoder.feed(_deflate(b"honest part", 15)[:-4]))
    assert b"".join(out) == b"honest part"
    with pytest.raises(DecodeError):
        _decode(decoder, _deflate(b"smuggled", -15))


@pytest.mark.parametrize("split_needles", [False, True])
def test_every_form_split_anywhere_across_two_chunks_is_redacted(split_needles):
    redactor = Redactor(SECRETS)
    for needle in redactor.needles:
        body = b"<" + needle + b">"
        whole_body = redactor.bytes(body)
        for cut in range(1, len(body)):
            stream = redactor.body()
            out = stream.feed(body[:cut]) + stream.feed(body[cut:]) + stream.flush()
            assert out == whole_body, (needle, cut)
            assert needle not in out


def test_only_the_tail_that_could_start_a_secret_is_held_back():
    # "sk" may start the secret again: held; the complete secret before it is not
    redactor = Redactor(["sk-live-1234567890"])
    stream = redactor.body()
    assert stream.feed(b"data: sk-live-1234567890sk") == b"data: " + MARKER
    assert stream.feed(b"ip\n") == b"skip\n"
    assert stream.flush() == b""


def test_secret_straddling_the_cut_at_the_first_byte_is_held_whole():
    # "1234" may start the second secret, so the cut lands inside the first one
    redactor = Redactor(["abcd1234", "1234zz99"])
    stream = redactor.body()
    assert stream.feed(b"abcd1234") == b""  # not "abcd": it is part of a secret
    out = stream.feed(b"zz99") + stream.flush()
    assert out == redactor.bytes(b"abcd1234zz99")


def test_a_secret_inside_another_is_never_redacted_first():
    # longest first: "bbbb" sorts after the longer secret but must not split it
    redactor = Redactor(["bbbb", "aaaa-bbbb-secret"])
    assert redactor.text("<aaaa-bbbb-secret>") == f"<{MARKER.decode()}>"
    assert redactor.bytes(b"<aaaa-bbbb-secret>") == b"<" + MARKER + b">"


def test_secrets_of_the_minimum_length_count_shorter_ones_are_skipped():
    redactor = Redactor(["abc", "wxyz", "long-secret-value"])
    assert redactor.text("abc wxyz long-secret-value") == "abc {0} {0}".format(MARKER.decode())


def test_no_secrets_redacts_nothing():
    for redactor in (Redactor([]), Redactor(["ab"])):
        assert redactor.needles == ()
        assert redactor.text("plain") == "plain"
        stream = redactor.body()
        assert stream.feed(b"plain") == b"plain"
        assert stream.flush() == b""


def test_json_escaped_secret_is_redacted_and_nothing_else():
    secret = 'k"\\é/\n1'  # JSON escapes each of these differently
    redactor = Redactor([secret])
    for escaped in (json.dumps(secret)[1:-1], json.dumps(secret)[1:-1].replace("/", "\\/")):
        assert redactor.text(f'{{"echo": "{escaped}"}}') == f'{{"echo": "{MARKER.decode()}"}}'
    assert redactor.text("full null nul ul") == "full null nul ul"


def test_base64_of_an_11_byte_credential_is_redacted_at_any_offset():
    # README: embedded base64 is covered for credentials of 11 bytes or more
    secret = "k3y-11bytes"
    redactor = Redactor([secret])
    for pad in range(3):
        value = base64.b64encode(b"\x00" * pad + secret.encode() + b"\x00" * 5).decode()
        assert MARKER.decode() in redactor.text(value), pad


def test_spans_finds_every_occurrence_overlaps_included():
    redactor = Redactor(["aaaa"])
    assert sorted(redactor.spans("aaaaa-aaaa")) == [(0, 4), (1, 5), (6, 10)]
    assert redactor.spans("none here") == []


def test_header_names_are_matched_case_insensitively():
    redactor = Redactor(["Sk-Secret-Value"])
    assert redactor.holds_secret("x-sk-secret-value-echo")
    assert redactor.holds_secret("X-SK-SECRET-VALUE")
    assert not redactor.holds_secret("x-request-id")


def test_a_deflate_body_is_not_followed_by_a_gzip_member():
    # further members are gzip's alone: after a deflate stream ends, nothing may follow
    with pytest.raises(DecodeError):
        _decode(Decoder("deflate"), _deflate(b"first", 15) + _deflate(b"second", 31))


@pytest.mark.parametrize("step", [1, 2, 5, 64])
@pytest.mark.parametrize("size", [1, 2, 3])
def test_each_feed_gives_out_all_the_input_so_far_decodes_to(step, size):
    # a streamed compressed body is passed on as it arrives, never a step behind
    rng = random.Random(step * 10 + size)
    body = b"a" * 3000 + rng.randbytes(40) + b"b" * 3000
    compressed = _deflate(body, 31)
    decoder = Decoder("gzip", step=step)
    oracle = zlib.decompressobj(31)
    received = expected = b""
    for i in range(0, len(compressed), size):
        chunk = compressed[i : i + size]
        received += b"".join(decoder.feed(chunk))
        expected += oracle.decompress(chunk)
        assert received == expected, i
    assert received + decoder.finish() == body


def test_a_secret_whose_end_may_start_another_is_held_whole():
    # "1234z" may start the second secret: the cut falls inside the first, which is then
    # held back whole (twice over: the first secret appears again before it)
    redactor = Redactor(["abcd1234", "1234zz99"])
    for body in (b"abcd1234z", b"abcd1234 abcd1234z"):
        stream = redactor.body()
        first = stream.feed(body)
        assert b"abcd" not in first
        out = first + stream.feed(b"Q") + stream.flush()
        assert out == redactor.bytes(body + b"Q")
        assert b"abcd" not in out and b"1234" not in out


def test_the_straddling_secret_is_found_before_another_copy_in_the_held_tail():
    # the held tail "defabcdef" (the start of the longer secret) holds "abcdef" whole too
    redactor = Redactor(["abcdef", "defabcdefQQ"])
    stream = redactor.body()
    assert stream.feed(b"abcdefabcdef") == b""
    assert stream.feed(b"!") + stream.flush() == MARKER + MARKER + b"!"


def test_a_cut_moved_back_is_checked_again():
    # "89ab" straddles the first cut ("abX" may start "abXY"); moving before it makes
    # "0123456789" straddle the new one
    redactor = Redactor(["0123456789", "89ab", "abXY"])
    stream = redactor.body()
    assert stream.feed(b"0123456789abX") == b""
    # "0123456789" and "89ab" overlap: one marker covers both, so no part of "89ab" stays
    assert stream.feed(b"Q") + stream.flush() == MARKER + b"XQ"


def test_a_secret_with_only_its_last_byte_past_the_cut_is_held():
    redactor = Redactor(["abcdef", "fQQQ"])
    stream = redactor.body()
    assert stream.feed(b"abcdefQ") == b""
    assert stream.feed(b"!") + stream.flush() == MARKER + b"Q!"


def test_an_empty_body_flushes_to_nothing():
    assert Redactor(["sk-secret"]).body().flush() == b""


@pytest.mark.parametrize("secrets", [["abcd1234", "1234zz99"], ["1234zz99", "abcd1234"]])
def test_overlapping_secrets_are_covered_whole_in_any_order(secrets):
    # one secret ends where another begins: redacting either first must not leave the
    # other's remaining part in clear (it did, depending on set order)
    redactor = Redactor(secrets)
    body = b"xx abcd1234zz99 yy abcd1234 zz 1234zz99"
    whole = b"xx " + MARKER + b" yy " + MARKER + b" zz " + MARKER
    assert redactor.bytes(body) == whole
    assert redactor.text(body.decode()) == whole.decode()
    for cut in range(len(body) + 1):
        stream = redactor.body()
        assert stream.feed(body[:cut]) + stream.feed(body[cut:]) + stream.flush() == whole
