"""The proxy server: a low-level aiohttp server with one dispatch function.

aiohttp's router cannot route CONNECT (its target is host:port) nor absolute-form requests,
so the proxy runs `web.Server` with `dispatch`:

    CONNECT host:port            -> connect.handle_connect
    GET http://host/path         -> forward.handle_forward
    GET /_devbox/health          -> health
    ANY /gw/<PREFIX>/...         -> gateway.handle
    anything else                -> 404

A CONNECT to a host a gateway intercepts is served by proxy/intercept.py. The connection
protocol (proxy/server.py) adds what aiohttp lacks for a hostile client: a deadline for the
request head (slowloris), a cap on the whole head, a connection cap, and error pages that
never echo the request or a traceback.

`ProxyApp` owns the context: the live `State` (swapped whole by `apply`), the one upstream
ClientSession, and the admin socket (proxy/admin.py).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from yarl import URL

from proxy import audit, compat, connect, forward, gateway, pinning
from proxy.config import GATEWAY_ROUTE, HEALTH_PATH, ProxyConfig
from proxy.context import IPAddress, ProxyContext, Resolver, Settings, State
from proxy.errors import UNCONFIGURED, ProxyError, respond
from proxy.policy import parse_ip_literal
from proxy.server import LimitedServer, check_head, make_server
from proxy.state import build_state

__all__ = ["ProxyApp", "build_state", "write_private"]


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
        self._server: LimitedServer | None = None
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
        self._server = make_server(self.dispatch, s)
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
            check_head(request, self.ctx.settings)
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
