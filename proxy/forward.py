"""Absolute-form HTTP requests (`GET http://host/path`) under the policy: admit the target
(proxy/egress.py), then send the request only to an address that was checked, with the
hop-by-hop fields (proxy/headers.py) and Expect removed both ways: the proxy answers
`Expect: 100-continue` itself, once the policy has said yes.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Sequence

import aiohttp
from aiohttp import hdrs, web
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from proxy import audit
from proxy.context import IPAddress, ProxyContext
from proxy.egress import admit, answered, check_host_header, host_header, parse_absolute
from proxy.headers import end_to_end

_EXPECT = frozenset({"expect"})


class _PinnedResolver(AbstractResolver):
    """Answers aiohttp's lookup with the addresses already checked, never with DNS."""

    def __init__(self, addresses: Sequence[IPAddress]) -> None:
        self._addresses = tuple(addresses)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=str(ip),
                port=port,
                family=socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for ip in self._addresses
        ]

    async def close(self) -> None:
        return None


async def handle_forward(request: web.BaseRequest, ctx: ProxyContext) -> web.StreamResponse:
    record = audit.Record(kind="forward", method=request.method, started=time.monotonic())
    work = _forward(request, ctx, record)
    return await answered(work, request, ctx, record, close_on_refusal=False)


async def _forward(
    request: web.BaseRequest, ctx: ProxyContext, record: audit.Record
) -> web.StreamResponse:
    target = parse_absolute(request.raw_path)
    record.host, record.port, record.path = target.host, target.port, _path(target.path)
    check_host_header(request, target)
    addresses = await admit(ctx, target, record)

    settings = ctx.settings
    headers = end_to_end(request.headers, also=_EXPECT)
    headers[hdrs.HOST] = request.headers.get(hdrs.HOST) or host_header(target)
    if request.headers.get(hdrs.EXPECT, "").lower() == "100-continue":
        # the policy said yes: now the client may send the body
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    async def body() -> AsyncIterator[bytes]:
        async for chunk in request.content.iter_any():
            record.bytes_out += len(chunk)
            yield chunk

    connector = aiohttp.TCPConnector(
        resolver=_PinnedResolver(addresses), use_dns_cache=False, force_close=True
    )
    async with aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        trust_env=False,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout, sock_read=settings.idle_timeout
        ),
        read_bufsize=settings.stream_chunk,
    ) as session:
        url = f"http://{target.authority}{target.path}"
        async with session.request(
            request.method,
            URL(url, encoded=True),
            headers=headers,
            data=body() if request.body_exists else None,
            allow_redirects=False,
        ) as upstream:
            record.status = upstream.status
            return await _relay(request, upstream, record)


async def _relay(
    request: web.BaseRequest, upstream: aiohttp.ClientResponse, record: audit.Record
) -> web.StreamResponse:
    out = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    out.headers.extend(end_to_end(upstream.headers, also=_EXPECT))
    await out.prepare(request)
    try:
        async for chunk in upstream.content.iter_any():
            record.bytes_in += len(chunk)
            try:
                await out.write(chunk)
            except ConnectionError:
                return out  # the client left; aiohttp closes its connection
    except (aiohttp.ClientError, TimeoutError):
        # the upstream broke off mid-body: cut the client's connection too, so it sees a
        # truncated response instead of a complete-looking one
        record.status = 502
        if request.transport is not None:
            request.transport.close()
        return out
    await out.write_eof()
    return out


def _path(path: str) -> str:
    return audit.strip_query(path) or "/"
