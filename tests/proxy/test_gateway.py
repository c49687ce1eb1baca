"""Gateway routes: token check, credential swap, headers, redirects, TLS, redaction."""

from __future__ import annotations

import base64
import gzip

import pytest
from aiohttp import web
from yarl import URL

from proxy.config import Auth, Header
from tests.proxy.conftest import (
    SECRET_A,
    SECRET_B,
    TOKEN_A,
    TOKEN_B,
    binding,
    make_config,
)

GW = "/gw/ANTHROPIC_API_KEY"
BEARER_A = {"Authorization": f"Bearer {TOKEN_A}"}


async def test_path_query_method_body_pass_and_bearer_is_swapped(
    http_upstream, start_proxy, client
):
    proxy = await start_proxy(make_config(binding(http_upstream.url + "/base")))
    async with client.post(
        URL(f"{proxy.url}{GW}/v1/messages?x=1&y=%2Fz", encoded=True),
        headers={**BEARER_A, "anthropic-version": "2023-06-01", "Content-Type": "text/plain"},
        data=b"hello body",
    ) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["method"] == "POST"
    assert body["raw_path"] == "/base/v1/messages?x=1&y=%2Fz"
    assert body["body"] == "hello body"
    seen = http_upstream.requests[0]["headers"]
    assert seen["Authorization"] == f"Bearer {SECRET_A}"
    assert seen["anthropic-version"] == "2023-06-01"
    assert seen["Host"] == f"127.0.0.1:{http_upstream.port}"
    assert TOKEN_A not in repr(seen)


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {TOKEN_A}"},
        {"authorization": f"bearer {TOKEN_A}"},
        {"x-api-key": TOKEN_A},
    ],
)
async def test_token_accepted_in_standard_places(headers, http_upstream, start_proxy, client):
    proxy = await start_proxy(make_config(binding(http_upstream.url)))
    async with client.get(f"{proxy.url}{GW}/v1/models", headers=headers) as resp:
        assert resp.status == 200
    seen = http_upstream.requests[0]["headers"]
    assert "x-api-key" not in {k.lower() for k in seen}
    assert seen["Authorization"] == f"Bearer {SECRET_A}"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-wrong-token"},
        {"Authorization": f"Basic {TOKEN_A}"},
        {"x-api-key": TOKEN_A[:-1]},
        {"x-api-key": TOKEN_B},  # binding B's token on binding A's route
    ],
)
async def test_missing_or_wrong_token_is_401_and_nothing_goes_upstream(
    headers, http_upstream, start_proxy, client
):
    proxy = await start_proxy(
        make_config(
            binding(http_upstream.url),
            binding(http_upstream.url, prefix="OTHER", token=TOKEN_B, credential=SECRET_B),
        )
    )
    async with client.get(f"{proxy.url}{GW}/v1/models", headers=headers) as resp:
        assert resp.status == 401
        text = await resp.text()
    assert http_upstream.requests == []
    assert SECRET_A not in text and TOKEN_A not in text
    assert proxy.audit_records[-1]["status"] == 401
    assert proxy.audit_records[-1]["decision"] == "deny"


async def test_token_of_b_opens_only_b(http_upstream, start_proxy, client):
    proxy = await start_proxy(
        make_config(
            binding(http_upstream.url),
            binding(http_upstream.url, prefix="OTHER", token=TOKEN_B, credential=SECRET_B),
        )
    )
    async with client.get(f"{proxy.url}/gw/OTHER/x", headers={"x-api-key": TOKEN_B}) as resp:
        assert resp.status == 200
    assert http_upstream.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET_B}"
    async with client.get(f"{proxy.url}/gw/OTHER/x", headers=BEARER_A) as resp:
        assert resp.status == 401
    assert len(http_upstream.requests) == 1


async def test_token_in_query_is_not_accepted_and_never_forwarded(
    http_upstream, start_proxy, client
):
    proxy = await start_proxy(make_config(binding(http_upstream.url)))
    async with client.get(f"{proxy.url}{GW}/v1?key={TOKEN_A}") as resp:
        assert resp.status == 401
    assert http_upstream.requests == []
    async with client.get(f"{proxy.url}{GW}/v1?key={TOKEN_A}&keep=1", headers=BEARER_A) as resp:
        assert resp.status == 200
    assert http_upstream.requests[0]["query"] == "keep=1"


async def test_unknown_prefix_is_404(http_upstream, start_proxy, client):
    proxy = await start_proxy(make_config(binding(http_upstream.url)))
    async with client.get(f"{proxy.url}/gw/NOPE/x", headers=BEARER_A) as resp:
        assert resp.status == 404
    async with client.get(f"{proxy.url}/gw/ANTHROPIC_API_KEYX/x", headers=BEARER_A) as resp:
        assert resp.status == 404
    assert http_upstream.requests == []


@pytest.mark.parametrize("path", ["/v1/../../admin", "/v1/%2e%2e/admin", "/./x"])
async def test_dot_segments_cannot_escape_the_endpoint_path(path, http_upstream, start_proxy):
    import asyncio

    proxy = await start_proxy(make_config(binding(http_upstream.url + "/base")))
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(
        f"GET {GW}{path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN_A}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    status = (await reader.readline()).split()[1]
    writer.close()
    assert status == b"400"
    assert http_upstream.requests == []


async def test_client_authorization_is_overwritten(http_upstream, start_proxy, client):
    proxy = await start_proxy(
        make_config(binding(http_upstream.url, auth=Auth("header", "x-api-key")))
    )
    async with client.get(
        f"{proxy.url}{GW}/v1",
        headers={"x-api-key": TOKEN_A, "Authorization": "Bearer client-chosen-value"},
    ) as resp:
        assert resp.status == 200
    seen = http_upstream.requests[0]["headers"]
    assert seen["x-api-key"] == SECRET_A
    assert "Authorization" not in seen


async def test_each_auth_type(upstream, start_proxy, client):
    up = await upstream()
    proxy = await start_proxy(
        make_config(
            binding(up.url, prefix="BEARER"),
            binding(up.url, prefix="HDR", auth=Auth("header", "x-goog-api-key")),
            binding(up.url, prefix="BASIC", auth=Auth("basic"), credential="user:pa55word"),
            binding(up.url, prefix="BASICK", auth=Auth("basic", "alice"), credential="pa55word"),
            binding(up.url, prefix="QUERY", auth=Auth("query", "key")),
        )
    )
    for prefix, headers in [
        ("BEARER", BEARER_A),
        ("HDR", {"x-goog-api-key": TOKEN_A}),
        ("BASIC", BEARER_A),
        ("BASICK", BEARER_A),
        ("QUERY", {"x-api-key": TOKEN_A}),
    ]:
        async with client.get(f"{proxy.url}/gw/{prefix}/p?key=client&a=b", headers=headers) as r:
            assert r.status == 200, prefix
    bearer, hdr, basic, basick, query = up.requests
    assert bearer["headers"]["Authorization"] == f"Bearer {SECRET_A}"
    assert hdr["headers"]["x-goog-api-key"] == SECRET_A
    assert "Authorization" not in hdr["headers"]
    assert (
        basic["headers"]["Authorization"] == "Basic " + base64.b64encode(b"user:pa55word").decode()
    )
    assert (
        basick["headers"]["Authorization"]
        == "Basic " + base64.b64encode(b"alice:pa55word").decode()
    )
    assert query["query"] == f"a=b&key={SECRET_A}"
    assert "Authorization" not in query["headers"]
    assert bearer["query"] == "key=client&a=b"


async def test_custom_headers_are_added_and_override(http_upstream, start_proxy, client):
    headers = (Header("x-org", "acme"), Header("x-secret-hdr", "hdr-secret-value", secret=True))
    proxy = await start_proxy(make_config(binding(http_upstream.url, headers=headers)))
    async with client.get(f"{proxy.url}{GW}/", headers={**BEARER_A, "x-org": "evil"}) as resp:
        assert resp.status == 200
        body = await resp.text()
    seen = http_upstream.requests[0]["headers"]
    assert seen["x-org"] == "acme"
    assert seen["x-secret-hdr"] == "hdr-secret-value"
    assert "hdr-secret-value" not in body  # the echo of a secret header is redacted too


async def test_hop_by_hop_and_connection_listed_headers_are_stripped(
    http_upstream, start_proxy, client
):
    proxy = await start_proxy(make_config(binding(http_upstream.url)))
    headers = {**BEARER_A, "Connection": "x-private", "x-private": "1", "Proxy-Authorization": "x"}
    async with client.get(f"{proxy.url}{GW}/", headers=headers) as resp:
        assert resp.status == 200
    seen = {k.lower() for k in http_upstream.requests[0]["headers"]}
    assert "x-private" not in seen and "proxy-authorization" not in seen


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_the_endpoints_own_refusal_is_logged_as_allowed_by_the_proxy(
    status, upstream, start_proxy, client
):
    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=status, text="the endpoint says no")

    up = await upstream({"/v1/no": refuse})
    proxy = await start_proxy(make_config(binding(up.url)))
    async with client.get(f"{proxy.url}{GW}/v1/no", headers=BEARER_A) as resp:
        assert resp.status == status
    assert len(up.requests) == 1
    record = proxy.audit_records[-1]
    assert (record["status"], record["decision"]) == (status, "allow")
    async with client.get(f"{proxy.url}/gw/NOPE/v1/no", headers=BEARER_A) as resp:
        assert resp.status == 404
    record = proxy.audit_records[-1]
    assert (record["status"], record["decision"]) == (404, "deny")


async def test_redirect_to_another_host_is_returned_not_followed(upstream, start_proxy, client):
    other = await upstream()

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{other.url}/stolen")

    up = await upstream({"/r": redirect})
    proxy = await start_proxy(make_config(binding(up.url)))
    async with client.get(f"{proxy.url}{GW}/r", headers=BEARER_A, allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == f"{other.url}/stolen"
    assert other.requests == []


async def test_upstream_echoing_secret_in_header_is_redacted(upstream, start_proxy, client):
    async def reflect(request: web.Request) -> web.Response:
        return web.Response(
            text="ok",
            headers={"x-echo": request.headers["Authorization"], "Location": f"/x?k={SECRET_A}"},
        )

    up = await upstream({"/h": reflect})
    proxy = await start_proxy(make_config(binding(up.url)))
    async with client.get(f"{proxy.url}{GW}/h", headers=BEARER_A) as resp:
        assert resp.status == 200
        assert resp.headers["x-echo"] == "Bearer [REDACTED]"
        assert resp.headers["Location"] == "/x?k=[REDACTED]"
        assert SECRET_A not in repr(resp.headers)


async def test_secret_split_across_chunks_in_plain_body_is_redacted(upstream, start_proxy, client):
    import asyncio

    secret = SECRET_A.encode()

    async def split(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"before " + secret[:7])
        await asyncio.sleep(0.05)  # separate TCP segments, so the secret is split for real
        await resp.write(secret[7:] + b" middle " + secret + b" end")
        return resp

    up = await upstream({"/s": split})
    proxy = await start_proxy(make_config(binding(up.url)))
    async with client.get(f"{proxy.url}{GW}/s", headers=BEARER_A) as resp:
        body = await resp.read()
    assert body == b"before [REDACTED] middle [REDACTED] end"


async def test_secret_in_gzip_body_is_redacted_and_sent_identity(upstream, start_proxy, client):
    payload = (b"x" * 70000 + SECRET_A.encode() + b"y" * 10) * 3

    async def gz(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(payload), headers={"Content-Encoding": "gzip"})

    up = await upstream({"/gz": gz})
    proxy = await start_proxy(make_config(binding(up.url)))
    headers = {**BEARER_A, "Accept-Encoding": "gzip, br"}
    async with client.get(f"{proxy.url}{GW}/gz", headers=headers) as resp:
        body = await resp.read()
        assert "Content-Encoding" not in resp.headers
    assert body == payload.replace(SECRET_A.encode(), b"[REDACTED]")
    assert up.requests[0]["headers"]["Accept-Encoding"] == "gzip"  # br dropped: undecodable


async def test_unreachable_upstream_is_502(start_proxy, client):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proxy = await start_proxy(make_config(binding(f"http://127.0.0.1:{port}")))
    async with client.get(f"{proxy.url}{GW}/x", headers=BEARER_A) as resp:
        assert resp.status == 502
        text = await resp.text()
    assert text == "upstream unreachable\n"
    assert proxy.audit_records[-1]["status"] == 502


async def test_https_upstream_verified_with_gateway_ca(ca, https_upstream, start_proxy, client):
    pem = ca.cert_pem.bytes().decode()
    proxy = await start_proxy(make_config(binding(https_upstream.url, ca_cert=pem)))
    async with client.get(f"{proxy.url}{GW}/tls", headers=BEARER_A) as resp:
        assert resp.status == 200
    assert https_upstream.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET_A}"


async def test_https_upstream_without_ca_cert_fails_verification(
    https_upstream, start_proxy, client
):
    proxy = await start_proxy(make_config(binding(https_upstream.url)))
    async with client.get(f"{proxy.url}{GW}/tls", headers=BEARER_A) as resp:
        assert resp.status == 502
        assert await resp.text() == "upstream TLS verification failed\n"
    assert https_upstream.requests == []


async def test_gateway_works_under_deny_all_policy(http_upstream, start_proxy, client):
    from proxy.config import PolicySpec

    proxy = await start_proxy(
        make_config(binding(http_upstream.url), policy=PolicySpec(name="deny-all"))
    )
    async with client.get(f"{proxy.url}{GW}/x", headers=BEARER_A) as resp:
        assert resp.status == 200


async def test_trace_is_refused(http_upstream, start_proxy, client):
    proxy = await start_proxy(make_config(binding(http_upstream.url)))
    async with client.request("TRACE", f"{proxy.url}{GW}/x", headers=BEARER_A) as resp:
        assert resp.status == 405
    # TRACK is not even a method aiohttp's parser knows: refused before dispatch
    async with client.request("TRACK", f"{proxy.url}{GW}/x", headers=BEARER_A) as resp:
        assert resp.status in (400, 405)
    assert http_upstream.requests == []
