"""The gateways' upstream session: it can reach only the endpoint of the gateway being
served, and it never follows a redirect.

The real credential rides on every request of this session, so both rules are enforced
below any one request's options: a request made with default options (ws_connect follows
redirects and has no switch for it) still cannot carry the credential anywhere else.

    with pinned_to(endpoint):      # in the gateway handler, around each upstream request
        await session.request(...)  # a connect to any other scheme/host/port is refused

The pin is a ContextVar, so it follows the handler's task (and any task it spawns) and
nothing else; with no pin set, the session connects nowhere.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from proxy.context import Settings
from proxy.errors import ProxyError

Origin = tuple[bool, str, int]  # (tls, host, port)

_PIN: contextvars.ContextVar[Origin | None] = contextvars.ContextVar("gateway_pin", default=None)


def origin_of(url: URL) -> Origin:
    tls = url.scheme in ("https", "wss")
    return tls, (url.host or "").lower().rstrip("."), url.port or (443 if tls else 80)


@contextlib.contextmanager
def pinned_to(endpoint: str) -> Iterator[None]:
    token = _PIN.set(origin_of(URL(endpoint)))
    try:
        yield
    finally:
        _PIN.reset(token)


class UpstreamRedirect(Exception):
    """The upstream answered 3xx to a request whose client would have followed it."""

    def __init__(self, status: int, headers: CIMultiDictProxy[str]) -> None:
        super().__init__(status)
        self.status = status
        self.headers = headers


class PinnedConnector(aiohttp.TCPConnector):
    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
        pin = _PIN.get()
        if pin is None or origin_of(req.url) != pin:
            raise ProxyError(502, "upstream outside the gateway endpoint refused")
        return await super().connect(req, traces, timeout)


async def _refuse_redirect(session: Any, trace_ctx: Any, params: Any) -> None:
    resp = params.response
    headers = resp.headers
    resp.close()
    raise UpstreamRedirect(resp.status, headers)


def gateway_session(settings: Settings) -> aiohttp.ClientSession:
    trace = aiohttp.TraceConfig()
    trace.on_request_redirect.append(_refuse_redirect)
    return aiohttp.ClientSession(
        connector=PinnedConnector(limit=settings.max_connections, enable_cleanup_closed=True),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        trust_env=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
        trace_configs=[trace],
        timeout=aiohttp.ClientTimeout(
            total=None, connect=settings.connect_timeout, sock_read=settings.idle_timeout
        ),
    )
