"""Stub: the forward side (absolute-form requests and CONNECT tunnels). Filled in by its owner."""

from __future__ import annotations

from aiohttp import web

from proxy.context import ProxyContext


async def handle_forward(request: web.BaseRequest, ctx: ProxyContext) -> web.StreamResponse:
    return web.Response(status=501, text="forward proxy not implemented\n")


async def handle_connect(request: web.BaseRequest, ctx: ProxyContext) -> web.StreamResponse:
    return web.Response(status=501, text="CONNECT not implemented\n")
