"""The header fields that stop at the proxy (proxy/headers.py): one set, checked on gateway
routes and on the forward side, in both directions. Raw sockets on the client side, so the
exact fields arrive as written."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from tests.proxy.conftest import TOKEN_A, binding, make_config
from tests.proxy.forward_support import (
    ALLOWED_NAME,
    LOOPBACK_CIDR,
    loopback_resolver,
    read_response,
)

# RFC 9110 §7.6.1, Trailer, the whole Proxy-* family, and a field Connection names
STOPPED = {
    "Keep-Alive": "timeout=5",
    "Proxy-Connection": "keep-alive",
    "TE": "trailers",
    "Trailer": "X-Checksum",
    "Upgrade": "h2c",
    "Proxy-Authorization": "Basic c2VjcmV0",
    "Proxy-Authenticate": "Basic",
    "Proxy-Status": "devbox; error=x",
    "Proxy-Anything": "x",
    "X-Listed": "named by Connection",
}
# end-to-end fields, some with names close to a stopped one
PASSED = {
    "Accept": "application/json",
    "Cache-Control": "no-cache",
    "If-None-Match": '"abc"',
    "Via": "1.1 somewhere",
    "X-Proxy-Id": "proxy- only counts as a prefix",
    "Proxyish": "kept",
    "X-Keep-Alive-Hint": "kept",
    "X-Custom": "kept",
}
# close: a re-framed (chunked) answer then ends at EOF, which read_response reads to
CONNECTION = "close, X-Listed"


async def _reply(request: web.Request) -> web.Response:
    return web.Response(text="ok", headers={**STOPPED, **PASSED, "Connection": "X-Listed"})


@pytest.fixture(params=["gateway", "forward"])
async def through(request, upstream, start_proxy):
    """(proxy, upstream, request head start) for one path through the proxy."""
    up = await upstream({"/h": _reply})
    if request.param == "gateway":
        proxy = await start_proxy(make_config(binding(up.url)))
        head = "GET /gw/ANTHROPIC_API_KEY/h HTTP/1.1\r\nHost: proxy\r\n"
        head += f"Authorization: Bearer {TOKEN_A}\r\n"
    else:
        proxy = await start_proxy(make_config(policy=LOOPBACK_CIDR), resolver=loopback_resolver())
        authority = f"{ALLOWED_NAME}:{up.port}"
        head = f"GET http://{authority}/h HTTP/1.1\r\nHost: {authority}\r\n"
    return proxy, up, head


async def _exchange(port: int, head: str):
    fields = {**STOPPED, **PASSED, "Connection": CONNECTION}
    data = head + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data.encode())
        await writer.drain()
        return await read_response(reader)
    finally:
        writer.close()


async def test_request_fields_that_stop_at_the_proxy(through):
    proxy, up, head = through
    resp = await _exchange(proxy.port, head)
    assert resp.status == 200, resp.body
    seen = {k.lower(): v for k, v in up.requests[0]["headers"].items()}
    assert sorted(n for n in STOPPED if n.lower() in seen) == []
    assert {n: seen.get(n.lower()) for n in PASSED} == PASSED


async def test_response_fields_that_stop_at_the_proxy(through):
    proxy, _, head = through
    resp = await _exchange(proxy.port, head)
    assert resp.status == 200 and b"ok" in resp.body
    assert sorted(n for n in STOPPED if n.lower() in resp.headers) == []
    assert {n: resp.headers.get(n.lower()) for n in PASSED} == PASSED
