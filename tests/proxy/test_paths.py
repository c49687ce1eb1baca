"""canonical_path: the one reading of a path that the gateway (and policy path rules) use."""

from __future__ import annotations

import pytest

from proxy.paths import PathError, canonical_path

ACCEPTED = [
    ("", ""),
    ("/", "/"),
    ("/v1/messages", "/v1/messages"),
    ("/v1/a%2Fb", "/v1/a/b"),  # decoded: a check sees what a decoding upstream sees
    ("/v1/%252Fx", "/v1//x"),  # decoded until stable
    ("/v1/x;v=1/y", "/v1/x/y"),  # ;params stripped per segment
    ("/v1/...", "/v1/..."),  # three dots is a name
    ("/v1/..x/.y", "/v1/..x/.y"),
    ("/v1/%E2%82%AC", "/v1/\u20ac"),
    ("/v1/a%3Fb", "/v1/a"),  # a decoded '?' ends the segment, as a re-parsing upstream reads it
    ("/v1/X../..X/X.X", "/v1/X../..X/X.X"),  # dots inside a name
    ("/v1/a%FFb", "/v1/a\ufffdb"),  # bytes that are not UTF-8: replaced, never an exception
    ("/v1/a\udcffb", "/v1/a\ufffdb"),  # what a server makes of such a byte in a raw path
    ("/v1/%" + "25" * 3 + "41", "/v1/A"),  # MAX_DECODE_ROUNDS layers of encoding: read
]

REFUSED = [
    ("/v1/..#/admin", "'#'"),
    ("/v1/#x", "'#'"),
    ("/..", "dot segments"),
    ("/.", "dot segments"),
    ("/v1/../admin", "dot segments"),
    ("/v1/./x", "dot segments"),
    ("/v1/%2e%2e/admin", "dot segments"),
    ("/v1/%2E./admin", "dot segments"),
    ("/v1/%252e%252e/admin", "dot segments"),  # double-encoded dots
    ("/v1/%25252e%25252e/admin", "dot segments"),  # triple
    ("/v1/..;/admin", "dot segments"),  # Tomcat-style ;params
    ("/v1/..;jsessionid=1/admin", "dot segments"),
    ("/v1/%2e%2e%3bx/admin", "dot segments"),
    ("/v1/..%2fadmin", "dot segments"),  # an encoded slash makes a new segment
    ("/v1/..%252fadmin", "dot segments"),
    ("/v1/..%3f", "dot segments"),
    ("/v1/..%23", "dot segments"),
    ("/v1/.. /x", "dot segments"),
    ("/v1/..%20/x", "dot segments"),
    ("/v1/..\\admin", "backslash"),
    ("/v1/..%5cadmin", "backslash"),
    ("/v1/..%5Cadmin", "backslash"),
    ("/v1/%255c", "backslash"),  # a backslash in any encoding
    ("/v1/%25255C", "backslash"),
    ("/v1/a%00b", "control"),
    ("/v1/a%2500b", "control"),
    ("/v1/a%0d%0aX: y", "control"),
    ("/v1/a\x7f", "control"),
    ("/v1/%" + "25" * 5 + "2e", "too many layers"),
    ("/v1/%" + "25" * 4 + "41", "too many layers"),  # one layer more than MAX_DECODE_ROUNDS
]

# what the client is shown (a 400's text): a fixed phrase per reason
MESSAGES = {
    "'#'": "'#' is not allowed in a path",
    "dot segments": "dot segments are not allowed in a path",
    "backslash": "backslashes are not allowed in a path",
    "control": "control characters are not allowed in a path",
    "too many layers": "too many layers of percent-encoding in a path",
}


@pytest.mark.parametrize(("raw", "canonical"), ACCEPTED)
def test_accepted_paths_and_their_canonical_form(raw, canonical):
    assert canonical_path(raw) == canonical


@pytest.mark.parametrize(("raw", "reason"), REFUSED)
def test_refused_paths(raw, reason):
    with pytest.raises(PathError) as err:
        canonical_path(raw)
    assert str(err.value) == MESSAGES[reason]
    assert raw not in str(err.value)  # a fixed phrase, never the input


def test_canonical_form_is_stable():
    for _, canonical in ACCEPTED:
        if "?" not in canonical and "%" not in canonical:
            assert canonical_path(canonical) == canonical
