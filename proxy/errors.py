"""The proxy's error responses: one exception, one status table, one way to answer.

Handlers raise `ProxyError(status, reason)`; `respond` turns it, upstream trouble, a bug or
a malformed request into the response, for gateway routes and the forward side alike (as
fly.io tokenizer's errorResponse does). A reason is a fixed short phrase or names a rule; it
never carries a header value, a query string or a credential.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus

import aiohttp
from aiohttp import web

log = logging.getLogger("proxy")


class ProxyError(Exception):
    """A request the proxy refuses or cannot complete; `reason` is safe to show the client."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason


# Said to the devbox while the proxy has no config: after its container restarted, the
# config must be handed over again from the host.
UNCONFIGURED = "proxy not configured; on the host, run `devbox repair <devbox>`"


def respond(
    request: web.BaseRequest, exc: BaseException, *, close: bool | None = None
) -> web.Response:
    """The response for `exc`: its status and reason as a short text body.

    `close` None: a 400, a 431 or a 5xx closes the connection (what follows on it may not be
    where the client thinks). When the response is already under way, all that is left is
    to cut it, so the client sees a truncated body rather than a complete-looking one: the
    connection is closed and ConnectionResetError raised.
    """
    status, reason = classify(exc)
    if status == 500 and not isinstance(exc, ProxyError):
        log.warning("error handling request: %s", type(exc).__name__)
    if request.writer.output_size > 0:
        if request.transport is not None:
            request.transport.close()
        raise ConnectionResetError("response already started")
    resp = web.Response(status=status, text=reason + "\n", content_type="text/plain")
    resp.headers["Cache-Control"] = "no-store"
    if close if close is not None else status in (400, 431) or status >= 500:
        resp.force_close()
    return resp


def raw_response(status: int, reason: str) -> bytes:
    """The same answer as bytes, for a connection refused before aiohttp reads a request."""
    body = reason.encode() + b"\n"
    return (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: text/plain\r\n"
        f"Cache-Control: no-store\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


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
