"""Streaming redaction: any split of a body into chunks gives the same result as redacting
the whole body at once, and nothing is held back that could not start a secret."""

from __future__ import annotations

import base64
import contextlib
import json
import random
from urllib.parse import quote

import pytest

from proxy.redact import MARKER, Redactor

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
        lambda s: base64.b64encode(s.encode()).decode(),
        lambda s: base64.urlsafe_b64encode(s.encode()).decode().rstrip("="),
    ],
)
def test_whole_encoded_forms_are_redacted(form):
    secret = "k3y/with+slashes?=~~~01"
    out = Redactor([secret]).text(f"x {form(secret)} y")
    assert out == f"x {MARKER.decode()} y"
