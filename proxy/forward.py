"""The forward side: absolute-form HTTP requests and CONNECT tunnels, under the network policy.

Every request goes through the same admission: parse the target strictly, normalize the host
(an IP literal in any spelling becomes the address it means), refuse on the name alone when
the name rules already say no (so a denied name is never even looked up: no DNS
exfiltration), resolve the name exactly once, decide on the name and every address, and then
connect only to an address that was checked. The upstream connection never resolves again,
so a DNS answer that changes between check and use (rebinding) cannot slip through.

Refusals are short text bodies: 403 names the policy rule, 400 the malformed part, 502/504
say the upstream could not be reached without internal details. Each request or tunnel
leaves one audit record (never a query string).
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass

import aiohttp
from aiohttp import hdrs, web
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from proxy import audit
from proxy.context import IPAddress, ProxyContext
from proxy.errors import UNCONFIGURED, ProxyError, classify, error_response
from proxy.policy import Decision, PolicyError, decide, normalize_host, parse_ip_literal
from proxy.resolve import local_addresses, resolve
from proxy.tunnel import Detached, Tunnel
from proxy.tunnel_guard import Check, TunnelGuard

__all__ = ["handle_connect", "handle_forward", "local_addresses"]

REFUSED_METHODS = frozenset({"TRACE", "TRACK"})
# RFC 9110 7.6.1 hop-by-hop headers, plus the proxy's own: none of them go upstream or back.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Expect",
        "Host",
    )
)
_ABSOLUTE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^#]*)(#.*)?", re.DOTALL)
_PORT = re.compile(r"[0-9]{1,5}")
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


@dataclass
class _Record:
    """What the audit line of one request or tunnel will say."""

    kind: str
    method: str
    started: float
    host: str | None = None
    port: int | None = None
    path: str | None = None
    status: int = 0
    decision: str = "deny"
    rule: str | None = None
    bytes_in: int = 0
    bytes_out: int = 0

    def emit(self, ctx: ProxyContext) -> None:
        audit.emit(
            ctx,
            kind=self.kind,
            method=self.method,
            host=self.host,
            port=self.port,
            path=self.path,
            status=self.status,
            started=self.started,
            decision=self.decision,
            rule=self.rule,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
        )


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
    if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        raise ProxyError(400, "bad target: port must be 1-65535")
    return host, int(port_text)


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


def _check_host_header(request: web.BaseRequest, target: Target) -> None:
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


# --- admission -------------------------------------------------------------------------


def _refuse(decision: Decision) -> ProxyError:
    return ProxyError(403, f"denied by policy: {decision.reason} (rule {decision.rule})")


async def admit(ctx: ProxyContext, target: Target, record: _Record) -> list[IPAddress]:
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


# --- absolute-form HTTP ----------------------------------------------------------------


class _PinnedResolver(AbstractResolver):
    """Answers aiohttp's lookup with the addresses already checked, never with DNS."""

    def __init__(self, addresses: Sequence[IPAddress]) -> None:
        self._addresses = tuple(addresses)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=str(ip),
                port=port,
                family=socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for ip in self._addresses
        ]

    async def close(self) -> None:
        return None


Headers = CIMultiDict[str] | CIMultiDictProxy[str]


def _end_to_end(headers: Headers) -> CIMultiDict[str]:
    """`headers` without hop-by-hop ones, Proxy-* ones, and those Connection names."""
    named = {
        token.strip().lower()
        for value in headers.getall(hdrs.CONNECTION, [])
        for token in value.split(",")
        if token.strip()
    }
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in named or lower.startswith("proxy-"):
            continue
        out.add(name, value)
    return out


async def handle_forward(request: web.BaseRequest, ctx: ProxyContext) -> web.StreamResponse:
    record = _Record(kind="forward", method=request.method, started=time.monotonic())
    return await _audited(_forward(request, ctx, record), ctx, record, close_on_refusal=False)


async def _audited(
    work: Awaitable[web.StreamResponse],
    ctx: ProxyContext,
    record: _Record,
    *,
    close_on_refusal: bool,
) -> web.StreamResponse:
    """Run a forward or CONNECT handler: a refusal becomes its short error response, the
    status lands in the record, and the record is emitted exactly once."""
    try:
        return await work
    except ProxyError as exc:
        record.status = exc.status
        resp = error_response(exc.status, exc.reason)
        if close_on_refusal:
            resp.force_close()  # the client may already be sending tunnel bytes behind the head
        return resp
    except asyncio.CancelledError:
        record.status = record.status or 499  # the client went away
        raise
    except Exception as exc:
        # upstream trouble (502/504) or a bug (500): app.py maps it to the response, in the
        # one place that also knows how to cut a response that already started
        record.status = classify(exc)[0]
        raise
    finally:
        record.emit(ctx)


async def _forward(
    request: web.BaseRequest, ctx: ProxyContext, record: _Record
) -> web.StreamResponse:
    if request.method in REFUSED_METHODS:
        record.rule = "method"
        raise ProxyError(405, f"method {request.method} not allowed")
    target = parse_absolute(request.raw_path)
    record.host, record.port, record.path = target.host, target.port, _path(target.path)
    _check_host_header(request, target)
    addresses = await admit(ctx, target, record)

    settings = ctx.settings
    headers = _end_to_end(request.headers)
    headers[hdrs.HOST] = request.headers.get(hdrs.HOST) or _host_header(target)
    if request.headers.get(hdrs.EXPECT, "").lower() == "100-continue":
        # the policy said yes: now the client may send the body
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    async def body() -> AsyncIterator[bytes]:
        async for chunk in request.content.iter_any():
            record.bytes_out += len(chunk)
            yield chunk

    connector = aiohttp.TCPConnector(
        resolver=_PinnedResolver(addresses), use_dns_cache=False, force_close=True
    )
    async with aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        trust_env=False,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout, sock_read=settings.idle_timeout
        ),
        read_bufsize=settings.stream_chunk,
    ) as session:
        url = f"http://{target.authority}{target.path}"
        async with session.request(
            request.method,
            URL(url, encoded=True),
            headers=headers,
            data=body() if request.body_exists else None,
            allow_redirects=False,
        ) as upstream:
            record.status = upstream.status
            return await _relay(request, upstream, record)


async def _relay(
    request: web.BaseRequest, upstream: aiohttp.ClientResponse, record: _Record
) -> web.StreamResponse:
    out = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    out.headers.extend(_end_to_end(upstream.headers))
    await out.prepare(request)
    try:
        async for chunk in upstream.content.iter_any():
            record.bytes_in += len(chunk)
            try:
                await out.write(chunk)
            except ConnectionError:
                return out  # the client left; aiohttp closes its connection
    except (aiohttp.ClientError, TimeoutError):
        # the upstream broke off mid-body: cut the client's connection too, so it sees a
        # truncated response instead of a complete-looking one
        record.status = 502
        if request.transport is not None:
            request.transport.close()
        return out
    await out.write_eof()
    return out


def _path(path: str) -> str:
    return audit.strip_query(path) or "/"


def _host_header(target: Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    return host if target.port == 80 else f"{host}:{target.port}"


# --- CONNECT ---------------------------------------------------------------------------


async def handle_connect(request: web.BaseRequest, ctx: ProxyContext) -> web.StreamResponse:
    record = _Record(kind="connect", method="CONNECT", started=time.monotonic())
    return await _audited(_connect(request, ctx, record), ctx, record, close_on_refusal=True)


async def _connect(
    request: web.BaseRequest, ctx: ProxyContext, record: _Record
) -> web.StreamResponse:
    host, port = parse_authority(request.raw_path, default_port=None)
    target = make_target(host, port)
    record.host, record.port = target.host, target.port
    addresses = await admit(ctx, target, record)
    guard = TunnelGuard(*_inside_checks(ctx, target))
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


def _inside_checks(ctx: ProxyContext, target: Target) -> tuple[Check, Check]:
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
