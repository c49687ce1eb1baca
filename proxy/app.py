"""The proxy server: a low-level aiohttp server with one dispatch function.

aiohttp's router cannot route CONNECT (its target is host:port) nor absolute-form requests,
so the proxy runs `web.Server` with `dispatch`:

    CONNECT host:port            -> connect.handle_connect
    GET http://host/path         -> forward.handle_forward
    GET /_devbox/health          -> health
    ANY /gw/<PREFIX>/...         -> gateway.handle
    anything else                -> 404

The connection protocol (`_Protocol`) adds what aiohttp lacks for a hostile client: a
deadline for the request head (slowloris), a cap on the whole head, a connection cap, and
error pages that never echo the request or a traceback.

`ProxyApp` owns the context: the live `State` (swapped whole by `apply`), the one upstream
ClientSession, and the admin socket (proxy/admin.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler
from yarl import URL

from proxy import audit, compat, connect, forward, gateway, pinning
from proxy.config import GATEWAY_ROUTE, HEALTH_PATH, ConfigError, ProxyConfig
from proxy.context import IPAddress, ProxyContext, Resolver, Settings, State
from proxy.errors import UNCONFIGURED, ProxyError, raw_response, respond
from proxy.policy import parse_ip_literal

log = logging.getLogger("proxy")

REFUSED_METHODS = frozenset({"TRACE", "TRACK"})
_TOO_LARGE = raw_response(431, "request header fields too large")
_BUSY = raw_response(503, "too many connections")
_ERROR_REASONS = {400: "bad request", 431: "request header fields too large", 504: "timeout"}


def build_state(config: ProxyConfig) -> State:
    """Validate and compile a config into a State; raises ConfigError (never shows a value)."""
    policy = None
    if config.policy is not None:
        from proxy.policy import Policy, PolicyError

        try:
            policy = Policy.compile(config.policy)
        except PolicyError as exc:
            raise ConfigError(f"invalid policy: {exc}") from None
    contexts: dict[str, ssl.SSLContext] = {}
    for binding in config.gateways:
        gateway.check_binding(binding)
        ctx = ssl.create_default_context()
        if binding.ca_cert:
            try:
                ctx.load_verify_locations(cadata=binding.ca_cert)
            except (ssl.SSLError, ValueError):
                raise ConfigError(
                    f"gateway {binding.prefix}: ca_cert is not a PEM certificate"
                ) from None
        contexts[binding.prefix] = ctx
    return State(
        config=config,
        policy=policy,
        gateways={g.prefix: g for g in config.gateways},
        upstream_ssl=contexts,
        redactors={g.prefix: gateway.redactor_for(g) for g in config.gateways},
    )


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically, readable by the owner only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class _Protocol(RequestHandler):
    """One client connection, with the limits aiohttp's RequestHandler does not have."""

    def __init__(self, manager: _Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._settings = manager.settings
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._last_payload: Any = None

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


class _Server(web.Server):
    def __init__(self, handler: Any, *, settings: Settings, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.settings = settings

    def __call__(self) -> RequestHandler:
        return _Protocol(self, loop=self._loop, **self._kwargs)


class ProxyApp:
    """The running proxy: context, HTTP listener, upstream session, admin socket."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        config_path: str | os.PathLike[str] | None = None,
        own_addresses: frozenset[IPAddress] | None = None,
        resolve: Resolver | None = None,
        audit_log: audit.AuditLog | None = None,
        self_names: frozenset[str] = frozenset(),
    ) -> None:
        self.self_names = frozenset(n.lower() for n in self_names)
        self.audit_log = audit_log or audit.AuditLog()
        self.ctx = ProxyContext(
            state=None,
            settings=settings or Settings(),
            audit=self.audit_log,
            resolve=resolve,
            own_addresses=own_addresses if own_addresses is not None else frozenset(),
        )
        self.config_path = Path(config_path) if config_path else None
        self._runner: web.ServerRunner | None = None
        self._server: _Server | None = None
        self.host: str | None = None
        self.port: int | None = None

    # -- configuration -------------------------------------------------------------------

    def apply(self, config: ProxyConfig, *, persist: bool = True) -> State:
        """Validate, persist (0600) and swap in a config. Requests in flight keep their State."""
        state = build_state(config)
        if persist and self.config_path is not None:
            write_private(self.config_path, config.dumps())
        self.ctx.state = state
        return state

    def load_file(self) -> bool:
        """Load the config file if it exists (a restarted server picks up the last config)."""
        if self.config_path is None or not self.config_path.exists():
            return False
        self.apply(ProxyConfig.loads(self.config_path.read_bytes()), persist=False)
        return True

    def health(self) -> tuple[int, dict[str, Any]]:
        state = self.ctx.state
        if state is None:
            return 503, {"status": "unconfigured"}
        return 200, {
            "status": "ok",
            "devbox": state.config.devbox,
            "gateways": len(state.gateways),
            "policy": state.config.policy.name if state.config.policy else None,
        }

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        s = self.ctx.settings
        self.ctx.session = pinning.gateway_session(s)
        self._server = _Server(
            self.dispatch,
            settings=s,
            handler_cancellation=True,
            access_log=None,
            auto_decompress=False,
            keepalive_timeout=75.0,
            max_line_size=min(8190, s.max_head_bytes),
            max_field_size=min(8190, s.max_head_bytes),
            max_headers=100,
            read_bufsize=s.stream_chunk,
        )
        compat.check(self._server)
        self._runner = web.ServerRunner(self._server, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=1024, reuse_address=True)
        await site.start()
        self.host, self.port = self._runner.addresses[0][:2]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.ctx.session is not None:
            await self.ctx.session.close()
            self.ctx.session = None

    # -- requests ------------------------------------------------------------------------

    async def dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.monotonic()
        method = request.method
        target = request.raw_path
        try:
            if _head_size(request) > self.ctx.settings.max_head_bytes:
                raise ProxyError(431, "request header fields too large")
            if method in REFUSED_METHODS:
                raise ProxyError(405, f"method {method} not allowed")
            if method == "CONNECT":
                self._require_config()
                return await connect.handle_connect(request, self.ctx)
            if not target.startswith("/"):
                own_path = self._own_path(target)
                if own_path is None:
                    self._require_config()
                    return await forward.handle_forward(request, self.ctx)
                if "#" in target:
                    # yarl drops a fragment; the gateway's path check must see what was sent
                    raise ProxyError(400, "'#' is not allowed in a request target")
                request = request.clone(rel_url=URL(own_path, encoded=True))
                target = own_path
            path = target.split("?", 1)[0]
            if path == HEALTH_PATH:
                return self._health_response(method)
            if path.startswith(GATEWAY_ROUTE):
                self._require_config()
                return await gateway.handle(request, self.ctx, started)
            raise ProxyError(404, "not found")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return respond(request, exc)

    def _own_path(self, target: str) -> str | None:
        """The origin-form path of an absolute-form target that names this proxy, else None.

        A client that honours HTTP_PROXY but not NO_PROXY sends its gateway calls as
        `GET http://proxy:3128/gw/...`; those are served here rather than refused as a
        request to the proxy's own address.
        """
        try:
            url = URL(target, encoded=True)
        except ValueError:
            return None
        if url.scheme != "http" or not url.host or url.port != self.port:
            return None
        host = url.host.lower().rstrip(".")
        ip = parse_ip_literal(host)
        if host in self.self_names or (ip is not None and ip in self.ctx.own_addresses):
            return url.raw_path_qs
        return None

    def _require_config(self) -> None:
        if self.ctx.state is None:
            raise ProxyError(503, UNCONFIGURED)

    def _health_response(self, method: str) -> web.Response:
        if method not in ("GET", "HEAD"):
            raise ProxyError(405, "method not allowed")
        status, body = self.health()
        return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


def _head_size(request: web.BaseRequest) -> int:
    size = len(request.method) + len(request.raw_path) + 12
    for name, value in request.raw_headers:
        size += len(name) + len(value) + 4
    return size
