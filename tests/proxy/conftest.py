"""Fixtures for the proxy: a test CA, real aiohttp upstreams (HTTP and HTTPS) and the proxy
itself, all in-process on 127.0.0.1 port 0, and all cleaned up at test end.

    up = await upstream()                 # echo server; up.url, up.requests, up.routes
    up.routes["/sse"] = handler           # per-path handler (any method)
    tls_up = await upstream(tls=True)     # HTTPS with a cert from the `ca` fixture
    proxy = await start_proxy(config)     # proxy.url, .host, .port, .ctx, .audit_records
    proxy.reload(new_config)              # live reload (same path as the admin socket)
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import trustme
from aiohttp import web

from proxy.app import ProxyApp
from proxy.audit import AuditLog
from proxy.config import Auth, GatewayBinding, Header, ProxyConfig
from proxy.context import ProxyContext, Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@dataclass
class Upstream:
    url: str = ""
    host: str = "127.0.0.1"
    port: int = 0
    tls: bool = False
    routes: dict[str, Handler] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)


async def echo(request: web.Request) -> web.Response:
    """Answer with what arrived: method, raw path, query, headers (all values), body."""
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.path,
            "raw_path": request.raw_path,
            "query": request.query_string,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body": body.decode("latin-1"),
        }
    )


@pytest_asyncio.fixture
async def upstream(ca):
    """Factory: `await upstream(routes=None, tls=False)` -> a running Upstream."""
    runners: list[web.AppRunner] = []

    async def make(routes: dict[str, Handler] | None = None, *, tls: bool = False) -> Upstream:
        up = Upstream(tls=tls, routes=dict(routes or {}))

        async def dispatch(request: web.Request) -> web.StreamResponse:
            up.requests.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "query": request.query_string,
                    "headers": dict(request.headers),
                }
            )
            handler = up.routes.get(request.path, echo)
            return await handler(request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", dispatch)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        ssl_ctx = None
        if tls:
            ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert("127.0.0.1", "localhost").configure_cert(ssl_ctx)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_ctx)
        await site.start()
        up.port = site._server.sockets[0].getsockname()[1]
        up.url = f"{'https' if tls else 'http'}://127.0.0.1:{up.port}"
        return up

    yield make
    for runner in runners:
        await runner.cleanup()


@pytest_asyncio.fixture
async def http_upstream(upstream) -> Upstream:
    return await upstream()


@pytest_asyncio.fixture
async def https_upstream(upstream) -> Upstream:
    return await upstream(tls=True)


@dataclass
class ProxyHandle:
    app: ProxyApp
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ctx(self) -> ProxyContext:
        return self.app.ctx

    @property
    def audit_records(self) -> list[dict[str, Any]]:
        assert self.app.audit_log.records is not None
        return self.app.audit_log.records

    def reload(self, config: ProxyConfig) -> None:
        self.app.apply(config)


class _Sink:
    """Audit lines land here instead of stdout, so tests can grep them."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.lines.append(text)

    def flush(self) -> None:
        pass


@pytest_asyncio.fixture
async def start_proxy(tmp_path):
    """Factory: `await start_proxy(config=None, settings=None, own_addresses=None,
    resolver=None, config_path=None)` -> a running ProxyHandle on 127.0.0.1:0."""
    apps: list[ProxyApp] = []

    async def make(
        config: ProxyConfig | None = None,
        settings: Settings | None = None,
        *,
        own_addresses=None,
        resolver=None,
        config_path=None,
        self_names=frozenset(),
    ) -> ProxyHandle:
        sink = _Sink()
        app = ProxyApp(
            settings or Settings(),
            config_path=config_path or tmp_path / f"config-{len(apps)}.json",
            own_addresses=own_addresses,
            resolve=resolver,
            audit_log=AuditLog(sink, keep=True),  # type: ignore[arg-type]
            self_names=self_names,
        )
        app.audit_sink = sink  # type: ignore[attr-defined]
        await app.start("127.0.0.1", 0)
        apps.append(app)
        if config is not None:
            app.apply(config)
        assert app.host is not None and app.port is not None
        return ProxyHandle(app=app, host=app.host, port=app.port)

    yield make
    for app in apps:
        await app.close()


# -- config builders ---------------------------------------------------------------------

TOKEN_A = "gwt_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
TOKEN_B = "gwt_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
SECRET_A = "sk-real-secret-AAAA-1234567890"
SECRET_B = "sk-real-secret-BBBB-0987654321"


def binding(
    endpoint: str | None,
    *,
    prefix: str = "ANTHROPIC_API_KEY",
    token: str = TOKEN_A,
    credential: str = SECRET_A,
    auth: Auth | None = None,
    headers: tuple[Header, ...] = (),
    ca_cert: str | None = None,
) -> GatewayBinding:
    return GatewayBinding(
        prefix=prefix,
        token=token,
        endpoint=endpoint,
        auth=auth or Auth("bearer"),
        credential=credential,
        headers=headers,
        ca_cert=ca_cert,
    )


def make_config(*gateways: GatewayBinding, policy=None, devbox: str = "box1") -> ProxyConfig:
    return ProxyConfig(devbox=devbox, gateways=tuple(gateways), policy=policy)


@pytest_asyncio.fixture
async def client():
    """A plain client session (no env proxies, no decompression) for talking to the proxy."""
    async with aiohttp.ClientSession(trust_env=False, auto_decompress=False) as session:
        yield session
