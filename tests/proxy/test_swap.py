"""The credential swap (proxy/swap.py), as tables: where a token counts as presented, what
never goes upstream, what a client without the token keeps, and a path holding a token."""

from __future__ import annotations

import base64

import pytest
from multidict import CIMultiDict

from proxy.config import Auth
from proxy.errors import ProxyError
from proxy.swap import checked_path, presented, upstream_headers, upstream_query
from tests.proxy.conftest import SECRET_A, TOKEN_A, TOKEN_B, binding

B = binding("https://api.example")
TOKENS = (TOKEN_A, TOKEN_B)


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {TOKEN_A}"},
        {"Authorization": f"bearer   {TOKEN_A}  "},
        {"Authorization": f"token {TOKEN_A}"},  # gh's scheme
        {"Authorization": basic(f"x-access-token:{TOKEN_A}")},  # git: the password
        {"Authorization": basic(f"{TOKEN_A}:x-oauth-basic")},  # the user
        {"Authorization": basic(f":{TOKEN_A}")},
        {"x-api-key": TOKEN_A},
    ],
)
def test_where_a_token_is_presented(headers):
    assert presented(CIMultiDict(headers), B)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": f"Bearer {TOKEN_B}"},  # another gateway's token
        {"Authorization": f"Bearer {TOKEN_A}x"},
        {"Authorization": TOKEN_A},  # no scheme: no credentials
        {"Authorization": basic(f"{TOKEN_A}x:pw")},
        {"Authorization": basic(TOKEN_A)},  # no ':' : not a user-pass pair
        {"Authorization": "Basic " + TOKEN_A},  # not base64 of a pair
        {"Authorization": "Basic !!!"},
        {"Cookie": f"t={TOKEN_A}"},  # not a place a token is presented
        {"x-api-key": f"{TOKEN_A} {TOKEN_A}"},
    ],
)
def test_where_a_token_is_not_presented(headers):
    assert not presented(CIMultiDict(headers), B)


def test_the_gateways_own_auth_header_is_a_place_too():
    b = binding("https://api.example", auth=Auth("header", "PRIVATE-TOKEN"))
    assert presented(CIMultiDict({"private-token": TOKEN_A}), b)
    assert not presented(CIMultiDict({"private-token": TOKEN_A}), B)


def test_with_the_credential_every_token_place_is_the_proxys():
    headers = CIMultiDict(
        [
            ("Authorization", basic(f"x:{TOKEN_A}")),
            ("x-api-key", "the-clients-own"),
            ("Cookie", f"session=1; t={TOKEN_B}"),  # another gateway's token, elsewhere
            ("X-Other", basic(f"u:{TOKEN_B}")[6:]),  # base64 somewhere else: not seen
            ("Range", "bytes=0-1"),
            ("Expect", "100-continue"),
            ("Accept-Encoding", "br, gzip"),
            ("X-Keep", "yes"),
        ]
    )
    out = upstream_headers(headers, B, TOKENS, credential=True)
    assert out["Authorization"] == f"Bearer {SECRET_A}"
    assert "x-api-key" not in out and "cookie" not in out
    assert "range" not in out and "expect" not in out
    assert out["Accept-Encoding"] == " gzip"
    assert out["X-Keep"] == "yes"


def test_without_the_credential_the_clients_headers_stay_but_no_token_goes():
    headers = CIMultiDict(
        [
            ("Authorization", "Bearer the-clients-own"),
            ("x-api-key", "also-its-own"),
            ("X-Forwarded", f"via {TOKEN_B}"),
        ]
    )
    out = upstream_headers(headers, B, TOKENS, credential=False)
    assert out["Authorization"] == "Bearer the-clients-own"
    assert out["x-api-key"] == "also-its-own"
    assert "x-forwarded" not in out
    # a token base64'd inside Basic is a token too
    hidden = CIMultiDict({"Authorization": basic(f"u:{TOKEN_B}")})
    assert "authorization" not in upstream_headers(hidden, B, TOKENS, credential=False)


@pytest.mark.parametrize(
    ("query", "credential", "expected"),
    [
        (f"a=1&t={TOKEN_A}&b=2", False, "a=1&b=2"),
        (f"{TOKEN_B}=x&a=1", True, f"a=1&key={SECRET_A}"),
        ("key=mine&a=1", False, "key=mine&a=1"),  # no credential: the client's own key stays
        ("key=mine&a=1", True, f"a=1&key={SECRET_A}"),
        (f"a={TOKEN_A.replace('_', '%5F')}", False, ""),  # percent-encoded: still a token
    ],
)
def test_the_query(query, credential, expected):
    b = binding("https://api.example", auth=Auth("query", "key"))
    assert upstream_query(query, b, TOKENS, credential=credential) == expected


@pytest.mark.parametrize("path", [f"/v1/{TOKEN_A}/x", f"/v1/{TOKEN_A.replace('_', '%5f')}"])
def test_a_path_holding_a_token_is_refused(path):
    with pytest.raises(ProxyError) as refused:
        checked_path(path, TOKENS)
    assert refused.value.status == 400


def test_an_ordinary_path_comes_back_canonical():
    assert checked_path("/v1/%61bc", TOKENS) == "/v1/abc"
