"""A credentialed request on its way to a gateway's upstream and back, one implementation for
gateway routes (proxy/gateway.py) and intercepted hosts (proxy/intercepted.py).

The request goes out on the gateways' session pinned to one origin (proxy/pinning.py: it
can connect nowhere else and never follows a redirect, WebSocket included), with TLS always
verified against the system CAs plus the gateway's own CA bundle; the body streams up and
the answer streams back through the binding's redactor (proxy/gateway_response.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from proxy import audit
from proxy.config import GatewayBinding
from proxy.context import ProxyContext, State
from proxy.gateway_response import copy_headers, stream_back
from proxy.pinning import UpstreamRedirect, pinned_to

WS_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)


def upstream_url(origin: str, path: str, query: str, *, ws: bool = False) -> URL:
    """`origin` (a base URL, maybe with a path prefix) + the raw `path` and `query`."""
    base = origin.rstrip("/")
    if ws:
        base = "ws" + base[4:] if base.startswith("http") else base
    raw = base + (path or "")
    if query:
        raw += "?" + query
    return URL(raw, encoded=True)


async def exchange(
    request: web.BaseRequest,
    ctx: ProxyContext,
    state: State,
    binding: GatewayBinding,
    origin: str,
    target: tuple[str, str],
    headers: CIMultiDict[str],
    record: audit.Record,
) -> web.StreamResponse:
    """Send `request` to `origin` + `target` (raw path, raw query, both already checked and
    rewritten) with `headers` (already swapped: proxy/swap.py) and stream the answer back.
    Every connection of it is pinned to `origin`."""
    path, query = target
    with pinned_to(origin):
        if request.headers.get("Upgrade", "").lower() == "websocket":
            try:
                url = upstream_url(origin, path, query, ws=True)
                return await _relay_websocket(request, ctx, state, binding, url, headers, record)
            except UpstreamRedirect as redirect:
                # the 3xx goes back to the client, which may follow it itself (without the
                # credential); the proxy never does
                resp = web.StreamResponse(status=redirect.status)
                # its body is not relayed: body=True drops the framing headers
                copy_headers(redirect.headers, resp, state.redactors[binding.prefix], body=True)
                record.status = redirect.status
                await resp.prepare(request)
                await resp.write_eof()
                return resp
        return await _relay_http(
            request, ctx, state, binding, upstream_url(origin, path, query), headers, record
        )


async def _relay_http(
    request: web.BaseRequest,
    ctx: ProxyContext,
    state: State,
    binding: GatewayBinding,
    url: URL,
    headers: CIMultiDict[str],
    record: audit.Record,
) -> web.StreamResponse:
    session = ctx.session
    assert session is not None
    chunk = ctx.settings.stream_chunk

    async def body() -> AsyncIterator[bytes]:
        async for data in request.content.iter_chunked(chunk):
            record.bytes_in += len(data)
            yield data

    data = body() if request.body_exists else None
    if data is None:
        headers.pop("Content-Length", None)
    elif request.version >= (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
        # the proxy answers it (the Expect never goes upstream): the body may come now
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    tls = state.upstream_ssl.get(binding.prefix)
    async with session.request(
        request.method,
        url,
        headers=headers,
        data=data,
        allow_redirects=False,
        ssl=tls if tls is not None else True,  # verification can never be turned off
        compress=None,
        auto_decompress=False,
    ) as upstream:
        return await stream_back(request, upstream, state.redactors[binding.prefix], chunk, record)


async def _relay_websocket(
    request: web.BaseRequest,
    ctx: ProxyContext,
    state: State,
    binding: GatewayBinding,
    url: URL,
    headers: CIMultiDict[str],
    record: audit.Record,
) -> web.StreamResponse:
    session = ctx.session
    assert session is not None
    protocols = tuple(
        p.strip()
        for value in request.headers.getall("Sec-WebSocket-Protocol", ())
        for p in value.split(",")
        if p.strip()
    )
    for name in list(headers):
        if name.lower() in WS_HANDSHAKE or name.lower() == "content-length":
            del headers[name]
    redactor = state.redactors[binding.prefix]
    upstream = await session.ws_connect(
        url,
        headers=headers,
        protocols=protocols,
        ssl=state.upstream_ssl.get(binding.prefix, True),
        autoping=True,
        heartbeat=None,
    )
    async with upstream:
        ws = web.WebSocketResponse(protocols=(upstream.protocol,) if upstream.protocol else ())
        await ws.prepare(request)
        record.status = 101

        async def down() -> None:
            async for msg in upstream:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    text = redactor.text(msg.data)
                    record.bytes_out += len(text)
                    await ws.send_str(text)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    data = redactor.bytes(msg.data)
                    record.bytes_out += len(data)
                    await ws.send_bytes(data)
                else:
                    break
            await ws.close()

        async def up() -> None:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    record.bytes_in += len(msg.data)
                    await upstream.send_str(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    record.bytes_in += len(msg.data)
                    await upstream.send_bytes(msg.data)
                else:
                    break
            await upstream.close()

        tasks = [asyncio.ensure_future(down()), asyncio.ensure_future(up())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await ws.close()
    return ws
