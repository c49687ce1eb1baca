"""The gateway's token check and credential swap, against a client that tries to get around
them: where a token is accepted, where it never goes, what a client cannot choose, and what
a gateway must be to load at all."""

from __future__ import annotations

import asyncio

import pytest
from multidict import CIMultiDict

from proxy.app import build_state
from proxy.config import Auth, ConfigError
from tests.proxy.conftest import SECRET_A, TOKEN_A, binding, make_config

GW = "/gw/ANTHROPIC_API_KEY"
BEARER_A = {"Authorization": f"Bearer {TOKEN_A}"}


async def raw_status(proxy, target: str, *header_lines: bytes) -> int:
    """Send one request as raw bytes (headers no client library would send) -> status."""
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(
        f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
        + b"".join(line + b"\r\n" for line in header_lines)
        + b"\r\n"
    )
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    writer.close()
    return status


# -- where the token is accepted ---------------------------------------------------------


async def test_token_after_any_number_of_spaces_is_accepted(http_upstream, start_proxy, client):
    # RFC 9110: credentials = auth-scheme 1*SP token68
    proxy = await start_proxy(make_config(binding(http_upstream.url)))
    headers = {"Authorization": f"Bearer   {TOKEN_A}"}
    async with client.get(f"{proxy.url}{GW}/x", headers=headers) as resp:
        assert resp.status == 200
    assert http_upstream.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET_A}"


async def test_any_presented_value_may_carry_the_token(http_upstream, start_proxy, client):
    proxy = await start_proxy(make_config(binding(http_upstream.url)))
    for headers in (
        CIMultiDict([("Authorization", "Basic dXNlcjpwdw=="), *BEARER_A.items()]),
        CIMultiDict([*BEARER_A.items(), ("x-api-key", "not-the-token")]),
        CIMultiDict([("x-api-key", "not-the-token"), ("x-api-key", TOKEN_A)]),
    ):
        async with client.get(f"{proxy.url}{GW}/x", headers=headers) as resp:
            assert resp.status == 200, headers
    for seen in http_upstream.requests:
        assert seen["headers"]["Authorization"] == f"Bearer {SECRET_A}"
        assert "x-api-key" not in {k.lower() for k in seen["headers"]}  # nor the client's own


async def test_token_is_not_taken_from_a_header_named_like_the_query_key(
    http_upstream, start_proxy, client
):
    proxy = await start_proxy(make_config(binding(http_upstream.url, auth=Auth("query", "key"))))
    async with client.get(f"{proxy.url}{GW}/x", headers={"key": TOKEN_A}) as resp:
        assert resp.status == 401
    assert http_upstream.requests == []
    # an ordinary header of that name is the client's own business
    async with client.get(f"{proxy.url}{GW}/x", headers={**BEARER_A, "key": "mine"}) as resp:
        assert resp.status == 200
    assert http_upstream.requests[0]["headers"]["key"] == "mine"


async def test_token_bytes_that_are_not_utf8_are_401_not_an_error(http_upstream, start_proxy):
    proxy = await start_proxy(make_config(binding(http_upstream.url)))
    bad = TOKEN_A.encode()[:-2] + b"\xff\xfe"
    assert await raw_status(proxy, f"{GW}/x", b"x-api-key: " + bad) == 401
    assert await raw_status(proxy, f"{GW}/x", b"Authorization: Bearer " + bad) == 401
    assert await raw_status(proxy, f"{GW}/x", b"x-api-key: " + TOKEN_A.encode()) == 200
    assert len(http_upstream.requests) == 1


# -- where the token never goes -------------------------------------------------------------


async def test_token_in_any_request_header_never_goes_upstream(http_upstream, start_proxy, client):
    proxy = await start_proxy(make_config(binding(http_upstream.url)))
    headers = {**BEARER_A, "X-Echo": f"before {TOKEN_A} after", "X-Keep": "1"}
    async with client.get(f"{proxy.url}{GW}/x", headers=headers) as resp:
        assert resp.status == 200
    seen = http_upstream.requests[0]["headers"]
    assert TOKEN_A not in repr(seen)
    assert seen["X-Keep"] == "1"


async def test_token_after_a_second_question_mark_never_goes_upstream(
    http_upstream, start_proxy, client
):
    proxy = await start_proxy(make_config(binding(http_upstream.url)))
    url = f"{proxy.url}{GW}/v1?a=1&key={TOKEN_A}?x=1&b=2"
    async with client.get(url, headers=BEARER_A) as resp:
        assert resp.status == 200
    seen = http_upstream.requests[0]
    assert TOKEN_A not in seen["path"] + seen["query"]
    assert seen["query"] == "a=1&b=2"


# -- what the client cannot choose ----------------------------------------------------------


async def test_query_credential_is_the_only_value_of_its_key(http_upstream, start_proxy, client):
    proxy = await start_proxy(make_config(binding(http_upstream.url, auth=Auth("query", "key"))))
    for query, forwarded in [
        ("", f"key={SECRET_A}"),
        ("?key=client=x&a=b", f"a=b&key={SECRET_A}"),
        ("?a=b&key=1&key=2&c", f"a=b&c&key={SECRET_A}"),
    ]:
        async with client.get(f"{proxy.url}{GW}/x{query}", headers=BEARER_A) as resp:
            assert resp.status == 200
        assert http_upstream.requests[-1]["query"] == forwarded, query


async def test_connection_listed_headers_are_all_stripped(http_upstream, start_proxy, client):
    proxy = await start_proxy(make_config(binding(http_upstream.url)))
    headers = {**BEARER_A, "Connection": "X-One, x-two,x-three", "x-one": "1", "x-two": "2"}
    headers |= {"x-three": "3", "x-four": "4"}
    async with client.get(f"{proxy.url}{GW}/x", headers=headers) as resp:
        assert resp.status == 200
    seen = {k.lower() for k in http_upstream.requests[0]["headers"]}
    assert not seen & {"x-one", "x-two", "x-three"}
    assert "x-four" in seen


async def test_every_accept_encoding_header_is_read(http_upstream, start_proxy, client):
    proxy = await start_proxy(make_config(binding(http_upstream.url)))
    for sent, forwarded in [
        ([("Accept-Encoding", "gzip, br, deflate")], "gzip, deflate"),
        ([("Accept-Encoding", "gzip"), ("Accept-Encoding", "deflate")], "gzip,deflate"),
        ([("Accept-Encoding", "br"), ("Accept-Encoding", "zstd")], "identity"),
    ]:
        headers = CIMultiDict([*BEARER_A.items(), *sent])
        async with client.get(f"{proxy.url}{GW}/x", headers=headers) as resp:
            assert resp.status == 200
        assert http_upstream.requests[-1]["headers"]["Accept-Encoding"] == forwarded, sent


# -- what a gateway must be to load -------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"endpoint": "ftp://api.example.com"}, "endpoint must be an http(s) URL"),
        ({"endpoint": "api.example.com/v1"}, "endpoint must be an http(s) URL"),
        ({"endpoint": "https://"}, "endpoint must be an http(s) URL"),
        ({"endpoint": "https://user@api.example.com"}, "must not carry userinfo or query"),
        ({"endpoint": "https://:pw@api.example.com"}, "must not carry userinfo or query"),
        ({"endpoint": "https://api.example.com/?k=v"}, "must not carry userinfo or query"),
        ({"endpoint": "https://api.example.com/#f"}, "must not carry userinfo or query"),
        ({"prefix": "A/B"}, "prefix must not contain '/'"),
        ({"prefix": "."}, "prefix must not contain '/'"),
        ({"prefix": ".."}, "prefix must not contain '/'"),
        ({"token": "t" * 15}, "token is too short"),
        ({"credential": "sk3"}, "credential is too short"),
    ],
)
def test_a_gateway_that_cannot_be_held_to_its_endpoint_does_not_load(changes, reason):
    args = {"endpoint": "https://api.example.com/v1", "prefix": "P", **changes}
    endpoint = args.pop("endpoint")
    with pytest.raises(ConfigError) as err:
        build_state(make_config(binding(endpoint, **args)))
    assert reason in str(err.value)
    assert args.get("token", TOKEN_A) not in str(err.value)
    assert args.get("credential", SECRET_A) not in str(err.value)


def test_the_shortest_token_and_credential_allowed_load():
    for endpoint in ("http://127.0.0.1:1", "https://api.example.com/v1/"):
        state = build_state(
            make_config(binding(endpoint, prefix="..P", token="t" * 16, credential="sk-4"))
        )
        assert list(state.gateways) == ["..P"]
