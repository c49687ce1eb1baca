"""The proxy's HTTP server with the limits aiohttp's RequestHandler lacks for a hostile
client: a deadline for the request head (slowloris), a cap on the whole head, a connection
cap, and error pages that never echo the request or a traceback. The listener (proxy/app.py)
and every intercepted TLS connection (proxy/intercept.py) are served by it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler

from proxy.context import Settings
from proxy.errors import ProxyError, raw_response, respond

log = logging.getLogger("proxy")

REFUSED_METHODS = frozenset({"TRACE", "TRACK"})
_TOO_LARGE = raw_response(431, "request header fields too large")
_BUSY = raw_response(503, "too many connections")
_ERROR_REASONS = {400: "bad request", 431: "request header fields too large", 504: "timeout"}

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def check_head(request: web.BaseRequest, settings: Settings) -> None:
    """What every request must pass first, whatever it is for (raises ProxyError)."""
    if _head_size(request) > settings.max_head_bytes:
        raise ProxyError(431, "request header fields too large")
    if request.method in REFUSED_METHODS:
        raise ProxyError(405, f"method {request.method} not allowed")
    codings = [
        c.strip().lower()
        for value in request.headers.getall("Transfer-Encoding", ())
        for c in value.split(",")
    ]
    if codings and codings != ["chunked"]:
        # aiohttp undoes only the chunking: `gzip, chunked` would go on as a body that
        # no longer says what it is
        raise ProxyError(501, "a transfer-coding other than chunked is not supported")


def _head_size(request: web.BaseRequest) -> int:
    size = len(request.method) + len(request.raw_path) + 12
    for name, value in request.raw_headers:
        size += len(name) + len(value) + 4
    return size


class LimitedProtocol(RequestHandler):
    """One client connection, with the limits aiohttp's RequestHandler does not have."""

    def __init__(self, manager: LimitedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._settings = manager.settings
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._last_payload: Any = None
        # called once the connection is gone (an intercepted connection's owner waits on it)
        self.on_lost: Callable[[BaseException | None], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        manager = self._manager
        if manager is not None and len(manager.connections) >= self._settings.max_connections:
            self._manager = None  # never registered: connection_lost has nothing to undo
            transport.write(_BUSY)  # type: ignore[attr-defined]
            transport.close()
            return
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)
        if self.on_lost is not None:
            on_lost, self.on_lost = self.on_lost, None
            on_lost(exc)

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        # Bytes are part of a head unless the last request's body is still arriving (its
        # handler may not have started yet, so _current_request cannot tell).
        body = self._last_payload
        idle = (body is None or body.is_eof()) and not self._upgraded
        super().data_received(data)
        if self._request_count != before:
            self._cancel_head_timer()
            self._head_bytes = 0
            if self._messages:
                self._last_payload = self._messages[-1][1]
        elif idle and data and self._payload_parser is None:
            # bytes of a request head that is not complete yet
            self._head_bytes += len(data)
            if self._head_bytes > self._settings.max_head_bytes:
                if self.transport is not None:
                    self.transport.write(_TOO_LARGE)
                self.force_close()
                return
            if self._head_timer is None:
                self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self._loop.call_later(
            self._settings.header_timeout, self._head_timed_out
        )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        # Only an idle connection (waiting for a head) is cut; a request in flight is not.
        if self._current_request is None and not self._request_in_progress:
            self.force_close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own version logs the exception, whose text can quote a header value.
        if isinstance(exc, LineTooLong) or (
            isinstance(exc, BadHttpMessage) and "many headers" in str(exc.message)
        ):
            status = 431
        if status >= 500 and exc is not None:
            log.warning("error handling request: %s", type(exc).__name__)
        reason = _ERROR_REASONS.get(status, "internal error")
        return respond(request, ProxyError(status, reason), close=True)


class LimitedServer(web.Server):
    def __init__(self, handler: Any, *, settings: Settings, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.settings = settings

    def __call__(self) -> RequestHandler:
        return LimitedProtocol(self, loop=self._loop, **self._kwargs)


def make_server(handler: Handler, settings: Settings) -> LimitedServer:
    """A server for `handler` with the proxy's limits; `compat.check` holds it to the
    aiohttp internals LimitedProtocol relies on."""
    return LimitedServer(
        handler,
        settings=settings,
        handler_cancellation=True,
        access_log=None,
        auto_decompress=False,
        keepalive_timeout=75.0,
        max_line_size=min(8190, settings.max_head_bytes),
        max_field_size=min(8190, settings.max_head_bytes),
        max_headers=100,
        read_bufsize=settings.stream_chunk,
    )
