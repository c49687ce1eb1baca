"""One HTTP request inside an intercepted TLS connection (proxy/intercept.py): checked, decided
by `decide_request`, its gateway token swapped for the real credential, sent to the real
host and answered through the gateway's redactor, with one audit record (kind intercept).

What a request must be here: origin-form (`GET /path`; an absolute-form target could name
another host), with at most one Host, naming the connection's host and port (else 421: a
Host naming another host never gets this host's credential, nor any other's), a path the
gateway's canonicalization accepts (proxy/paths.py) and no CONNECT. A request that carries
the gateway's token (proxy/swap.py: any Authorization scheme, Basic user or password,
x-api-key, the auth's own header) gets the credential where the gateway's auth says; one
without it goes upstream as it came, with no credential (git asks anonymously first and
sends its credentials after a 401). Either way no token of the devbox goes upstream.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from proxy import audit
from proxy.config import GatewayBinding
from proxy.context import ProxyContext, State
from proxy.egress import Target, make_target, parse_authority
from proxy.errors import ProxyError, respond
from proxy.policy import Decision
from proxy.server import check_head
from proxy.swap import checked_path, presented, upstream_headers, upstream_query
from proxy.upstream import exchange

TLS_PORT = 443


def decide_request(
    state: State, binding: GatewayBinding, method: str, host: str, port: int, path: str
) -> Decision:
    """Whether an intercepted request may go upstream: the one place an intercepted
    request's method, host, port and canonical path are decided.

    A host gateway's host is admitted as a gateway route's endpoint is, under any policy:
    the operator configured it (README: Host gateways)."""
    return Decision(
        True, f"host {host}:{port} is intercepted by gateway {binding.prefix}", "gateway"
    )


async def handle(
    request: web.BaseRequest, *, ctx: ProxyContext, target: Target
) -> web.StreamResponse:
    record = audit.Record(
        kind="intercept",
        method=request.method,
        started=time.monotonic(),
        host=target.host,
        port=target.port,
        path=request.raw_path.split("?", 1)[0],
    )
    try:
        with audit.recorded(ctx, record):
            return await _handle(request, ctx, target, record)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        close = isinstance(exc, ProxyError) and exc.status == 421
        return respond(request, exc, close=True if close else None)


async def _handle(
    request: web.BaseRequest, ctx: ProxyContext, target: Target, record: audit.Record
) -> web.StreamResponse:
    check_head(request, ctx.settings)
    state = ctx.state
    binding = state.intercepts.get((target.host, target.port)) if state is not None else None
    if state is None or binding is None:
        # a live update took the host off its gateway: a new CONNECT decides anew
        raise ProxyError(421, f"{target.authority} is no longer intercepted: connect again")
    record.prefix = binding.prefix
    raw = request.raw_path
    if request.method == "CONNECT":
        raise ProxyError(405, "CONNECT inside an intercepted connection is not allowed")
    if not raw.startswith("/"):
        raise ProxyError(400, "a request here names a path (origin-form), not another target")
    if "#" in raw:
        raise ProxyError(400, "'#' is not allowed in a request target")
    _check_host(request, target)
    path, _, query = raw.partition("?")
    canonical = checked_path(path, state.tokens)
    decision = decide_request(state, binding, request.method, target.host, target.port, canonical)
    record.rule = decision.rule
    if not decision.allowed:
        raise ProxyError(403, f"denied by policy: {decision.reason} (rule {decision.rule})")
    credential = presented(request.headers, binding)  # type: ignore[arg-type]
    record.decision, record.credential = "allow", credential
    headers = upstream_headers(request.headers, binding, state.tokens, credential=credential)  # type: ignore[arg-type]
    rewritten = upstream_query(query, binding, state.tokens, credential=credential)
    origin = f"https://{target.authority}"
    resp = await exchange(request, ctx, state, binding, origin, (path, rewritten), headers, record)
    record.status = resp.status
    return resp


def _check_host(request: web.BaseRequest, target: Target) -> None:
    values = request.headers.getall("Host", [])
    if len(values) > 1:
        raise ProxyError(400, "more than one Host header")
    if not values:
        if request.version >= (1, 1):
            raise ProxyError(400, "an HTTP/1.1 request needs a Host header")
        return  # HTTP/1.0: the connection's host (its TLS server name was checked)
    try:
        host, port = parse_authority(values[0], default_port=TLS_PORT)
        given = make_target(host, port)
    except ProxyError:
        raise ProxyError(400, "Host header is not a valid host[:port]") from None
    if (given.host, given.port) != (target.host, target.port):
        raise ProxyError(
            421, f"Host {given.authority} is not {target.authority}, this connection's host"
        )
