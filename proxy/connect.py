"""CONNECT tunnels under the policy: admit the target (proxy/egress.py), connect to a checked
address, answer 200 and pipe bytes (proxy/tunnel.py), reading first what the tunnel carries
(proxy/tunnel_guard.py): the TLS server name and every plain-HTTP Host must be the target.
A CONNECT to a host a gateway intercepts is no tunnel: proxy/intercept.py serves it.
"""

from __future__ import annotations

import time

from aiohttp import web

from proxy import audit, intercept
from proxy.context import ProxyContext
from proxy.egress import Target, admit, answered, make_target, parse_authority
from proxy.errors import ProxyError
from proxy.hosts import PolicyError, normalize_host, parse_ip_literal
from proxy.policy import decide
from proxy.tunnel import Detached, Tunnel
from proxy.tunnel_guard import Check, TunnelGuard


async def handle_connect(request: web.BaseRequest, ctx: ProxyContext) -> web.StreamResponse:
    record = audit.Record(kind="connect", method="CONNECT", started=time.monotonic())
    work = _connect(request, ctx, record)
    return await answered(work, request, ctx, record, close_on_refusal=True)


async def _connect(
    request: web.BaseRequest, ctx: ProxyContext, record: audit.Record
) -> web.StreamResponse:
    host, port = parse_authority(request.raw_path, default_port=None)
    target = make_target(host, port)
    record.host, record.port = target.host, target.port
    state = ctx.state
    binding = state.intercepts.get((target.host, target.port)) if state is not None else None
    if binding is not None:
        return await intercept.serve(request, ctx, target, binding, record)
    addresses = await admit(ctx, target, record)
    guard = TunnelGuard(*inside_checks(ctx, target))
    tunnel = Tunnel(ctx.settings.idle_timeout, guard, ctx.settings.header_timeout)
    try:
        await tunnel.connect(addresses, target.port, ctx.settings.connect_timeout)
    except TimeoutError:
        tunnel.abort()
        raise ProxyError(504, "upstream connect timed out") from None
    except OSError:
        tunnel.abort()
        raise ProxyError(502, "upstream unreachable") from None
    try:
        if not tunnel.attach(request):
            record.status = 499  # the client left while we were connecting
            return Detached(status=200)
        record.status = 200
        await tunnel.wait()
    finally:
        tunnel.abort()
        record.bytes_in, record.bytes_out = tunnel.bytes_in, tunnel.bytes_out
        if tunnel.refused is not None:
            # the 200 has gone out: the refusal is the closed connection and this record
            record.decision, record.rule = "deny", tunnel.refused.rule
    return Detached(status=200)


def inside_checks(ctx: ProxyContext, target: Target) -> tuple[Check, Check]:
    """check_sni and check_host for a tunnel to `target` (see proxy/tunnel_guard.py).

    A name target: the TLS server name and every plain-HTTP Host must be that name (after
    the same normalization as policy names: case, trailing dot, IDNA); a TLS hello without
    a server name is refused. An IP literal target: no server name is normal; one that is
    given (or a Host name) must be a name the policy admits at that address.
    """
    state = ctx.state
    policy = state.policy if state is not None else None

    def same_host(host: str, rule: str) -> str | None:
        try:
            name = normalize_host(host)
        except PolicyError:
            return f"{rule}-invalid"
        if name == target.host:
            return None
        if target.ip is None or parse_ip_literal(name) is not None:
            return f"{rule}-mismatch"
        decision = decide(policy, name, target.port, [target.ip], own_addresses=ctx.own_addresses)
        return None if decision.allowed else f"{rule}-not-allowed"

    def check_sni(name: str | None) -> str | None:
        if name is None:
            return None if target.ip is not None else "tunnel:tls-sni-missing"
        return same_host(name, "tunnel:tls-sni")

    def check_host(value: str | None) -> str | None:
        try:
            host, port = parse_authority(value or "", default_port=target.port)
        except ProxyError:
            return "tunnel:http-host-invalid"
        if port != target.port:
            return "tunnel:http-host-mismatch"
        return same_host(host, "tunnel:http-host")

    return check_sni, check_host
