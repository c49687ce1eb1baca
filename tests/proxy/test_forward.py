"""Absolute-form forwarding (HTTP_PROXY clients): routing, headers, streaming, refusals."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket

import pytest
from aiohttp import web

from proxy.config import PolicySpec
from proxy.context import Settings
from tests.proxy.conftest import make_config
from tests.proxy.forward_support import (
    ALLOWED_NAME,
    LOOPBACK_CIDR,
    FakeResolver,
    get_request,
    loopback_resolver,
    raw_exchange,
    read_response,
    unanswered_port,
)

MB = 1024 * 1024


@pytest.fixture
async def allowed_proxy(start_proxy):
    """A proxy whose policy admits loopback, with `api.allowed.test` resolving there."""
    return await start_proxy(make_config(policy=LOOPBACK_CIDR), resolver=loopback_resolver())


async def test_get_goes_upstream_with_clean_headers(allowed_proxy, http_upstream, client):
    url = f"http://{ALLOWED_NAME}:{http_upstream.port}/v1/items?page=2&token=abc"
    async with client.get(
        url,
        proxy=allowed_proxy.url,
        headers={
            "Proxy-Authorization": "Basic c2VjcmV0",
            "Proxy-Connection": "keep-alive",
            "Connection": "X-Hop",
            "X-Hop": "must not pass",
            "X-End": "passes",
        },
    ) as resp:
        assert resp.status == 200
        body = await resp.json()
    headers = {k.lower(): v for k, v in body["headers"]}
    assert body["path"] == "/v1/items"
    assert body["query"] == "page=2&token=abc"
    assert headers["host"] == f"{ALLOWED_NAME}:{http_upstream.port}"
    assert headers["x-end"] == "passes"
    for gone in ("proxy-authorization", "proxy-connection", "x-hop"):
        assert gone not in headers
    [record] = allowed_proxy.audit_records
    assert record["kind"] == "forward"
    assert record["host"] == ALLOWED_NAME
    assert record["port"] == http_upstream.port
    assert record["path"] == "/v1/items"
    assert (record["status"], record["decision"]) == (200, "allow")
    assert record["rule"] == f"allow:{ALLOWED_NAME}"
    assert "token=abc" not in "".join(allowed_proxy.app.audit_sink.lines)


async def test_10mb_bodies_stream_intact_both_ways(allowed_proxy, upstream, client):
    size = 10 * MB

    async def digest_and_reply(request: web.Request) -> web.StreamResponse:
        h = hashlib.sha256()
        received = 0
        async for chunk in request.content.iter_any():
            h.update(chunk)
            received += len(chunk)
        resp = web.StreamResponse(headers={"X-Received": str(received), "X-Sha": h.hexdigest()})
        resp.content_length = size
        await resp.prepare(request)
        for i in range(size // (64 * 1024)):
            await resp.write(bytes([i % 251]) * (64 * 1024))
        return resp

    up = await upstream({"/upload": digest_and_reply})

    async def body():
        for i in range(size // (64 * 1024)):
            yield bytes([i % 7]) * (64 * 1024)

    sent = hashlib.sha256()
    for i in range(size // (64 * 1024)):
        sent.update(bytes([i % 7]) * (64 * 1024))
    expected_back = hashlib.sha256()
    for i in range(size // (64 * 1024)):
        expected_back.update(bytes([i % 251]) * (64 * 1024))

    url = f"http://{ALLOWED_NAME}:{up.port}/upload"
    async with client.post(url, data=body(), proxy=allowed_proxy.url) as resp:
        assert resp.status == 200
        assert resp.headers["X-Received"] == str(size)
        assert resp.headers["X-Sha"] == sent.hexdigest()
        got = hashlib.sha256()
        async for chunk in resp.content.iter_any():
            got.update(chunk)
    assert got.hexdigest() == expected_back.hexdigest()
    [record] = allowed_proxy.audit_records
    assert (record["bytes_out"], record["bytes_in"]) == (size, size)


async def test_host_header_must_match_the_target(allowed_proxy, http_upstream):
    target = f"http://{ALLOWED_NAME}:{http_upstream.port}/"
    for host in ("evil.test", f"{ALLOWED_NAME}:1", "127.0.0.1", f"evil.test:{http_upstream.port}"):
        resp = await raw_exchange(allowed_proxy.port, get_request(target, host))
        assert resp.status == 403, host
        assert b"does not match the target" in resp.body
    assert http_upstream.requests == []
    # the same host in another spelling is the same host
    resp = await raw_exchange(
        allowed_proxy.port, get_request(target, f"API.Allowed.Test.:{http_upstream.port}")
    )
    assert resp.status == 200
    assert len(http_upstream.requests) == 1


async def test_two_host_headers_are_refused(allowed_proxy, http_upstream):
    target = f"http://{ALLOWED_NAME}:{http_upstream.port}/"
    head = (
        f"GET {target} HTTP/1.1\r\nHost: {ALLOWED_NAME}:{http_upstream.port}\r\n"
        f"Host: evil.test\r\nConnection: close\r\n\r\n"
    )
    resp = await raw_exchange(allowed_proxy.port, head.encode())
    assert resp.status == 400
    assert http_upstream.requests == []


@pytest.mark.parametrize("method", ["TRACE", "TRACK"])
async def test_trace_is_refused(allowed_proxy, http_upstream, method):
    authority = f"{ALLOWED_NAME}:{http_upstream.port}"
    head = f"{method} http://{authority}/ HTTP/1.1\r\nHost: {authority}\r\n\r\n"
    resp = await raw_exchange(allowed_proxy.port, head.encode())
    # llhttp does not know TRACK at all, so aiohttp's C parser refuses it first (400)
    assert resp.status in ((405,) if method == "TRACE" else (400, 405))
    assert http_upstream.requests == []


async def test_https_absolute_form_is_refused(allowed_proxy, https_upstream):
    target = f"https://{ALLOWED_NAME}:{https_upstream.port}/"
    resp = await raw_exchange(
        allowed_proxy.port, get_request(target, f"{ALLOWED_NAME}:{https_upstream.port}")
    )
    assert resp.status == 400
    assert b"CONNECT" in resp.body
    assert https_upstream.requests == []


@pytest.mark.parametrize(
    "target",
    [
        "http://user@api.allowed.test/",
        "http://user:pw@api.allowed.test/",
        "http:///path",
        "http://:80/",
        "http://api.allowed.test:0/",
        "http://api.allowed.test:65536/",
        "http://api.allowed.test:99999999/",
        "http://api.allowed.test:+80/",
        "http://api.allowed.test:8a/",
        "http://api.allowed.test:80:80/",
        "http://[::1/",
        "http://[127.0.0.1]/",
        "http://::1/",
        "http://a..b/",
        "http://-bad-.test/",
        "http://api%2eallowed.test/",
        "ftp://api.allowed.test/",
        "gopher://api.allowed.test/",
        "api.allowed.test/no-scheme",
        "http://" + "a" * 300 + ".test/",
    ],
)
async def test_malformed_targets_get_400(allowed_proxy, target):
    resp = await raw_exchange(allowed_proxy.port, get_request(target, None))
    assert resp.status == 400, resp.body
    assert len(resp.body) < 200
    assert b"Traceback" not in resp.body
    assert allowed_proxy.ctx.resolve.calls == []


async def test_hop_by_hop_response_headers_are_stripped(allowed_proxy, upstream, client):
    async def hoppy(request: web.Request) -> web.Response:
        return web.Response(
            text="ok",
            headers={
                "Connection": "X-Private-Hop",
                "X-Private-Hop": "internal",
                "Proxy-Authenticate": "Basic",
                "Keep-Alive": "timeout=5",
                "X-Kept": "yes",
            },
        )

    up = await upstream({"/hop": hoppy})
    async with client.get(f"http://{ALLOWED_NAME}:{up.port}/hop", proxy=allowed_proxy.url) as r:
        assert r.status == 200
        assert await r.text() == "ok"
        assert r.headers["X-Kept"] == "yes"
        for gone in ("X-Private-Hop", "Proxy-Authenticate", "Keep-Alive"):
            assert gone not in r.headers


async def test_compressed_bodies_pass_through_untouched(allowed_proxy, upstream, client):
    import gzip

    payload = gzip.compress(b"hello " * 1000)

    async def gz(request: web.Request) -> web.Response:
        # what arrived on the wire, before the upstream's own parser decompressed it
        return web.Response(
            body=payload,
            headers={
                "Content-Encoding": "gzip",
                "X-Req-Len": request.headers["Content-Length"],
                "X-Req-Enc": request.headers["Content-Encoding"],
            },
        )

    up = await upstream({"/gz": gz})
    req_body = gzip.compress(b"request " * 500)
    async with client.post(
        f"http://{ALLOWED_NAME}:{up.port}/gz",
        data=req_body,
        headers={"Content-Encoding": "gzip"},
        proxy=allowed_proxy.url,
    ) as r:
        assert r.headers["Content-Encoding"] == "gzip"
        assert r.headers["X-Req-Len"] == str(len(req_body))
        assert r.headers["X-Req-Enc"] == "gzip"
        assert await r.read() == payload


async def test_expect_100_continue_is_answered_after_the_decision(allowed_proxy, http_upstream):
    reader, writer = await asyncio.open_connection("127.0.0.1", allowed_proxy.port)
    try:
        writer.write(
            (
                f"POST http://{ALLOWED_NAME}:{http_upstream.port}/up HTTP/1.1\r\n"
                f"Host: {ALLOWED_NAME}:{http_upstream.port}\r\nContent-Length: 5\r\n"
                "Expect: 100-continue\r\nConnection: close\r\n\r\n"
            ).encode()
        )
        interim = await read_response(reader)
        assert interim.status == 100
        writer.write(b"hello")
        final = await read_response(reader)
    finally:
        writer.close()
    assert final.status == 200
    assert json.loads(final.body)["body"] == "hello"
    assert "expect" not in {k.lower() for k in http_upstream.requests[0]["headers"]}


async def test_expect_100_continue_denied_gets_403_without_100(start_proxy):
    proxy = await start_proxy(make_config(policy=None), resolver=loopback_resolver())
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(
            (
                f"POST http://{ALLOWED_NAME}:8080/up HTTP/1.1\r\nHost: {ALLOWED_NAME}:8080\r\n"
                "Content-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
            ).encode()
        )
        resp = await read_response(reader)
    finally:
        writer.close()
    assert resp.status == 403


async def test_head_keeps_content_length_without_body(allowed_proxy, upstream):
    async def sized(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 1234)

    up = await upstream({"/sized": sized})
    reader, writer = await asyncio.open_connection("127.0.0.1", allowed_proxy.port)
    try:
        writer.write(
            (
                f"HEAD http://{ALLOWED_NAME}:{up.port}/sized HTTP/1.1\r\n"
                f"Host: {ALLOWED_NAME}:{up.port}\r\n\r\n"
                f"GET http://{ALLOWED_NAME}:{up.port}/sized HTTP/1.1\r\n"
                f"Host: {ALLOWED_NAME}:{up.port}\r\nConnection: close\r\n\r\n"
            ).encode()
        )
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            assert b"Content-Length: 1234" in head
            # the next bytes are the second response, not a body for the HEAD
            second = await read_response(reader)
    finally:
        writer.close()
    assert second.status == 200
    assert second.body == b"x" * 1234


async def test_upstream_cut_mid_body_cuts_the_client(allowed_proxy, upstream, client):
    async def liar(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = 100_000
        await resp.prepare(request)
        await resp.write(b"x" * 1000)
        assert request.transport is not None
        request.transport.abort()
        return resp

    up = await upstream({"/liar": liar})
    async with client.get(f"http://{ALLOWED_NAME}:{up.port}/liar", proxy=allowed_proxy.url) as r:
        assert r.status == 200
        with pytest.raises(Exception) as info:
            await r.read()
    assert "Payload" in type(info.value).__name__ or isinstance(info.value, ConnectionError)
    [record] = allowed_proxy.audit_records
    assert record["status"] == 502


async def test_allowed_name_that_does_not_resolve_gets_502(start_proxy):
    resolver = FakeResolver({})
    spec = PolicySpec(name="p", allow=("nowhere.test",), allow_cidr=("127.0.0.0/8",))
    proxy = await start_proxy(make_config(policy=spec), resolver=resolver)
    resp = await raw_exchange(proxy.port, get_request("http://nowhere.test/", "nowhere.test"))
    assert resp.status == 502
    assert resp.body == b"cannot resolve nowhere.test\n"
    assert resolver.calls == ["nowhere.test"]
    assert proxy.audit_records[0]["rule"] == "dns"


async def test_unlisted_name_is_refused_without_a_lookup_despite_an_allow_cidr(start_proxy):
    # An allow-cidr admits addresses of admitted names only: an unlisted name is refused on
    # the name alone and never resolved (no DNS exfiltration).
    resolver = FakeResolver({"nowhere.test": ["127.0.0.1"]})
    proxy = await start_proxy(make_config(policy=LOOPBACK_CIDR), resolver=resolver)
    resp = await raw_exchange(proxy.port, get_request("http://nowhere.test/", "nowhere.test"))
    assert resp.status == 403
    assert b"no allow rule" in resp.body
    assert resolver.calls == []
    assert proxy.audit_records[0]["rule"] == "no-match"


async def test_connection_refused_gets_502(allowed_proxy):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    resp = await raw_exchange(
        allowed_proxy.port,
        get_request(f"http://{ALLOWED_NAME}:{closed_port}/", f"{ALLOWED_NAME}:{closed_port}"),
    )
    assert resp.status == 502
    assert b"Errno" not in resp.body and b"127.0.0.1" not in resp.body


async def test_unconfigured_proxy_fails_closed(start_proxy, http_upstream):
    proxy = await start_proxy(None, resolver=loopback_resolver())
    resp = await raw_exchange(
        proxy.port,
        get_request(f"http://{ALLOWED_NAME}:{http_upstream.port}/", ALLOWED_NAME),
    )
    assert resp.status == 503
    assert http_upstream.requests == []


async def test_keep_alive_client_sends_several_requests(allowed_proxy, http_upstream, client):
    for i in range(3):
        url = f"http://{ALLOWED_NAME}:{http_upstream.port}/n{i}"
        async with client.get(url, proxy=allowed_proxy.url) as resp:
            assert resp.status == 200
            assert (await resp.json())["path"] == f"/n{i}"
    assert [r["path"] for r in allowed_proxy.audit_records] == ["/n0", "/n1", "/n2"]


async def test_connect_timeout_gets_504(start_proxy):
    with unanswered_port() as port:
        proxy = await start_proxy(
            make_config(policy=LOOPBACK_CIDR),
            Settings(connect_timeout=0.3),
            resolver=loopback_resolver(),
        )
        resp = await raw_exchange(
            proxy.port, get_request(f"http://{ALLOWED_NAME}:{port}/", f"{ALLOWED_NAME}:{port}")
        )
    assert resp.status == 504
    assert proxy.audit_records[0]["status"] == 504
