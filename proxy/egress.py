"""The forward side's common part: where an absolute-form request or a CONNECT tunnel goes,
whether the policy lets it, and how its handler is run.

Every request goes through the same admission: parse the target strictly, normalize the host
(an IP literal in any spelling becomes the address it means), refuse on the name alone when
the name rules already say no (so a denied name is never even looked up: no DNS
exfiltration), resolve the name exactly once, decide on the name and every address, and then
connect only to an address that was checked (proxy/forward.py, proxy/connect.py). The
upstream connection never resolves again, so a DNS answer that changes between check and use
(rebinding) cannot slip through.

Refusals are short text bodies: 403 names the policy rule, 400 the malformed part, 502/504
say the upstream could not be reached without internal details. Each request or tunnel
leaves one audit record (never a query string).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from dataclasses import dataclass

from aiohttp import hdrs, web

from proxy import audit
from proxy.context import IPAddress, ProxyContext
from proxy.errors import UNCONFIGURED, ProxyError, respond
from proxy.hosts import PolicyError, normalize_host, parse_ip_literal, parse_port
from proxy.policy import Decision, decide
from proxy.resolve import resolve

_ABSOLUTE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^#]*)(#.*)?", re.DOTALL)
_BAD_HOST_CHARS = re.compile(r"[\x00-\x20\x7f%\\]")


@dataclass(frozen=True)
class Target:
    host: str  # normalized name, or the canonical text of an IP literal
    port: int
    ip: IPAddress | None  # set when the host is an IP literal
    path: str = "/"  # origin-form path and query (absolute-form only)

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


# --- targets ---------------------------------------------------------------------------


def parse_authority(authority: str, *, default_port: int | None) -> tuple[str, int]:
    """(host, port) of `host[:port]` or `[v6][:port]`; raises ProxyError(400)."""
    if not authority:
        raise ProxyError(400, "bad target: empty host")
    if "@" in authority:
        raise ProxyError(400, "bad target: user info in the authority is not allowed")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise ProxyError(400, "bad target: unclosed '[' in the host")
        host, rest = authority[1:end], authority[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ProxyError(400, "bad target: text after ']' that is not :PORT")
        port_text = rest[1:] if rest else None
        if ":" not in host:
            raise ProxyError(400, "bad target: brackets hold only an IPv6 address")
    else:
        if authority.count(":") > 1:
            raise ProxyError(400, "bad target: an IPv6 address must be in brackets")
        host, sep, port_text_raw = authority.partition(":")
        port_text = port_text_raw if sep else None
    if not host:
        raise ProxyError(400, "bad target: empty host")
    if _BAD_HOST_CHARS.search(host):
        raise ProxyError(400, "bad target: invalid character in the host")
    if not port_text:
        if default_port is None:
            raise ProxyError(400, "bad target: CONNECT needs host:port")
        return host, default_port
    port = parse_port(port_text)
    if port is None:
        raise ProxyError(400, "bad target: port must be 1-65535")
    return host, port


def make_target(host: str, port: int, path: str = "/") -> Target:
    ip = parse_ip_literal(host)
    if ip is not None:
        return Target(host=str(ip), port=port, ip=ip, path=path)
    try:
        name = normalize_host(host)
    except PolicyError:
        raise ProxyError(400, "bad target: invalid host name") from None
    return Target(host=name, port=port, ip=None, path=path)


def parse_absolute(target: str) -> Target:
    match = _ABSOLUTE.fullmatch(target)
    if match is None:
        raise ProxyError(400, "bad target: expected http://host[:port]/path")
    scheme, authority, rest = match.group(1).lower(), match.group(2), match.group(3)
    if scheme == "https":
        raise ProxyError(400, "https:// targets go through CONNECT (set HTTPS_PROXY)")
    if scheme != "http":
        raise ProxyError(400, f"bad target: scheme {scheme!r} is not supported")
    host, port = parse_authority(authority, default_port=80)
    if not rest:
        rest = "/"
    elif not rest.startswith("/"):
        rest = "/" + rest  # "http://h?q" means path "/" with query "q"
    return make_target(host, port, rest)


def check_host_header(request: web.BaseRequest, target: Target) -> None:
    values = request.headers.getall(hdrs.HOST, [])
    if not values:
        return
    if len(values) > 1:
        raise ProxyError(400, "more than one Host header")
    try:
        host, port = parse_authority(values[0], default_port=80)
        given = make_target(host, port)
    except ProxyError:
        raise ProxyError(400, "Host header is not a valid host[:port]") from None
    if (given.host, given.port) != (target.host, target.port):
        raise ProxyError(
            403, f"Host header {given.authority} does not match the target {target.authority}"
        )


def host_header(target: Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    return host if target.port == 80 else f"{host}:{target.port}"


# --- admission -------------------------------------------------------------------------


def _refuse(decision: Decision) -> ProxyError:
    return ProxyError(403, f"denied by policy: {decision.reason} (rule {decision.rule})")


async def admit(ctx: ProxyContext, target: Target, record: audit.Record) -> list[IPAddress]:
    """The checked addresses to connect to, or ProxyError (403, 502, 503)."""
    state = ctx.state
    if state is None:
        raise ProxyError(503, UNCONFIGURED)
    policy = state.policy
    own = ctx.own_addresses
    if target.ip is not None:
        addresses: list[IPAddress] = [target.ip]
    else:
        # A name no rule admits is refused here, unresolved: an allow-cidr admits only the
        # addresses of admitted names, so a refused name never leaves through DNS.
        first = decide(policy, target.host, target.port, (), own_addresses=own)
        if not first.allowed:
            record.rule = first.rule
            raise _refuse(first)
        resolver = ctx.resolve or resolve
        try:
            addresses = list(await resolver(target.host, target.port))
        except OSError:
            addresses = []
        if not addresses:
            record.rule = "dns"
            raise ProxyError(502, f"cannot resolve {target.host}")
    decision = decide(policy, target.host, target.port, addresses, own_addresses=own)
    record.rule = decision.rule
    if not decision.allowed:
        raise _refuse(decision)
    record.decision = "allow"
    return addresses


# --- running a handler -----------------------------------------------------------------


async def answered(
    work: Awaitable[web.StreamResponse],
    request: web.BaseRequest,
    ctx: ProxyContext,
    record: audit.Record,
    *,
    close_on_refusal: bool,
) -> web.StreamResponse:
    """Run a forward or CONNECT handler: a refusal is answered here (so its status lands in
    the record), anything else goes on to app.py's `respond`; the record is written once."""
    with audit.recorded(ctx, record):
        try:
            return await work
        except ProxyError as exc:
            record.status = exc.status
            return respond(request, exc, close=close_on_refusal)
