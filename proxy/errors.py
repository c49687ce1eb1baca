"""The proxy's error responses: one exception, one status table, short text bodies.

Handlers raise `ProxyError(status, reason)`; proxy/app.py turns it (and upstream trouble)
into a response in one place. A reason is a fixed short phrase or names a rule; it never
carries a header value, a query string or a credential.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web


class ProxyError(Exception):
    """A request the proxy refuses or cannot complete; `reason` is safe to show the client."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason


# Said to the devbox while the proxy has no config: after its container restarted, the
# config must be handed over again from the host.
UNCONFIGURED = "proxy not configured; on the host, run `devbox repair <devbox>`"


def error_response(status: int, reason: str) -> web.Response:
    resp = web.Response(status=status, text=reason + "\n", content_type="text/plain")
    resp.headers["Cache-Control"] = "no-store"
    return resp


def classify(exc: BaseException) -> tuple[int, str]:
    """Map any exception a handler let through to (status, safe reason). The one table."""
    if isinstance(exc, ProxyError):
        return exc.status, exc.reason
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return 502, "upstream TLS verification failed"
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError | TimeoutError):
        return 504, "upstream timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return 502, "upstream unreachable"
    if isinstance(exc, aiohttp.ClientError):
        return 502, "upstream error"
    if isinstance(exc, web.HTTPException):
        return exc.status, exc.reason
    return 500, "internal error"
