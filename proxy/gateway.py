"""Gateway routes: `/gw/<PREFIX>/<rest>` -> `<endpoint>/<rest>` with the real credential.

The devbox proves itself with its worthless gateway token (Authorization: Bearer, x-api-key,
or the header the auth mechanism names; never the query string), compared in constant time.
The proxy removes the token wherever it appears, sets the real credential where the auth
mechanism says, adds the custom headers and streams both ways. The upstream is only ever
the configured endpoint: no policy check, no redirects followed (WebSocket included), TLS
always verified; the session itself can connect nowhere else (proxy/pinning.py). The path
must read the same to every upstream (proxy/paths.py). Whatever the upstream reflects back
is redacted (proxy/redact.py): a body is passed on only in a form the redactor has read,
else the answer is 502.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
from collections.abc import AsyncIterator
from urllib.parse import quote, unquote_plus

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from proxy import audit
from proxy.config import GATEWAY_ROUTE, ConfigError, GatewayBinding
from proxy.context import ProxyContext, State
from proxy.errors import ProxyError
from proxy.gateway_response import DECODABLE, coding, copy_headers, stream_back
from proxy.headers import HopByHop
from proxy.paths import PathError, canonical_path
from proxy.pinning import UpstreamRedirect, pinned_to
from proxy.redact import MIN_SECRET_LEN, Redactor

WS_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)
# Never sent upstream: a Range lets a client fetch a reflected secret in slices that each
# miss the redactor.
REQUEST_DROP = frozenset({"range", "if-range"})
# where a devbox may present its gateway token (besides the auth mechanism's own header)
TOKEN_HEADERS = ("authorization", "x-api-key")


def check_binding(binding: GatewayBinding) -> None:
    """Load-time checks a gateway must pass (raises ConfigError, never shows a value)."""
    url = URL(binding.endpoint)
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"gateway {binding.prefix}: endpoint must be an http(s) URL")
    if url.user or url.password or url.query_string or url.fragment:
        raise ConfigError(f"gateway {binding.prefix}: endpoint must not carry userinfo or query")
    if "/" in binding.prefix or binding.prefix in (".", ".."):
        raise ConfigError(f"gateway {binding.prefix!r}: prefix must not contain '/'")
    if len(binding.token) < 16:
        raise ConfigError(f"gateway {binding.prefix}: token is too short")
    if len(binding.credential) < MIN_SECRET_LEN:
        raise ConfigError(f"gateway {binding.prefix}: credential is too short")


def _credential_headers(binding: GatewayBinding) -> dict[str, str]:
    auth = binding.auth
    headers = {h.name: h.value for h in binding.headers}
    if auth.type == "bearer":
        headers["Authorization"] = f"Bearer {binding.credential}"
    elif auth.type == "basic":
        userpass = f"{auth.key}:{binding.credential}" if auth.key else binding.credential
        headers["Authorization"] = "Basic " + base64.b64encode(userpass.encode()).decode()
    elif auth.type == "header":
        assert auth.key is not None
        headers[auth.key] = binding.credential
    return headers


def redactor_for(binding: GatewayBinding) -> Redactor:
    secrets = list(binding.secret_values())
    if binding.auth.type == "basic":
        userpass = (
            f"{binding.auth.key}:{binding.credential}" if binding.auth.key else binding.credential
        )
        secrets.append(base64.b64encode(userpass.encode()).decode())
    return Redactor(secrets)


def _presented_tokens(headers: CIMultiDict[str] | web.BaseRequest, binding: GatewayBinding):
    names = list(TOKEN_HEADERS)
    if binding.auth.type == "header" and binding.auth.key:
        names.append(binding.auth.key)
    for name in names:
        for value in headers.getall(name, ()):  # type: ignore[union-attr]
            if name.lower() == "authorization":
                scheme, _, value = value.partition(" ")
                if scheme.lower() != "bearer":
                    continue
            yield value.strip()


def _authorized(request: web.BaseRequest, binding: GatewayBinding) -> bool:
    token = binding.token.encode()
    ok = False
    for value in _presented_tokens(request.headers, binding):  # type: ignore[arg-type]
        # no early exit: every presented value costs the same compare
        ok |= hmac.compare_digest(value.encode(errors="replace"), token)
    return ok


def _split_target(target: str) -> tuple[str, str, str]:
    """'/gw/P/rest?q' -> ('P', '/rest', 'q'), raw (still percent-encoded)."""
    path, _, query = target.partition("?")
    rest = path[len(GATEWAY_ROUTE) :]
    prefix, slash, tail = rest.partition("/")
    return unquote_plus(prefix), slash + tail, query


def _upstream_query(query: str, binding: GatewayBinding) -> str:
    parts = []
    key = binding.auth.key if binding.auth.type == "query" else None
    for part in query.split("&") if query else ():
        name, _, value = part.partition("=")
        decoded = unquote_plus(value)
        if binding.token in decoded or binding.token in unquote_plus(name):
            continue  # the token never goes upstream, wherever it was put
        if key is not None and unquote_plus(name) == key:
            continue  # the client does not choose the credential
        parts.append(part)
    if key is not None:
        parts.append(f"{quote(key, safe='')}={quote(binding.credential, safe='')}")
    return "&".join(parts)


def _upstream_headers(request: web.BaseRequest, binding: GatewayBinding) -> CIMultiDict[str]:
    hop = HopByHop(request.headers)  # type: ignore[arg-type]
    drop = set(TOKEN_HEADERS) | REQUEST_DROP
    if binding.auth.type == "header" and binding.auth.key:
        drop.add(binding.auth.key.lower())
    out: CIMultiDict[str] = CIMultiDict()
    accepted: list[str] = []
    for name, value in request.headers.items():
        lname = name.lower()
        if lname in hop or lname in drop or binding.token in value:
            continue
        if lname == "accept-encoding":
            # only encodings the proxy can decode, so a reflected secret can be redacted
            accepted += [e for e in value.split(",") if coding(e) in DECODABLE]
            continue
        out.add(name, value)
    # Always said: with no Accept-Encoding an upstream may pick any coding (br, zstd).
    out["Accept-Encoding"] = ",".join(accepted) if accepted else "identity"
    for name, value in _credential_headers(binding).items():
        out[name] = value
    return out


async def handle(request: web.BaseRequest, ctx: ProxyContext, started: float) -> web.StreamResponse:
    state = ctx.state
    assert state is not None
    prefix, rest, query = _split_target(request.raw_path)
    binding = state.gateways.get(prefix)
    record = audit.Record(kind="gateway", method=request.method, started=started)
    if binding is not None:
        endpoint = URL(binding.endpoint)
        record.host, record.port, record.path = endpoint.host, endpoint.port, rest
        record.rule, record.prefix = "gateway", prefix
    with audit.recorded(ctx, record):
        if binding is None:
            raise ProxyError(404, "no such gateway")
        if not _authorized(request, binding):
            raise ProxyError(401, "missing or wrong gateway token")
        if "#" in request.raw_path:
            raise ProxyError(400, "'#' is not allowed in a gateway request target")
        try:
            canonical_path(rest)
        except PathError as exc:
            raise ProxyError(400, str(exc)) from None
        # From here on the request is the proxy's to pass on: a 401 or 404 after this point
        # is the endpoint's own answer, not a refusal.
        record.decision = "allow"
        with pinned_to(binding.endpoint):
            resp = await _relay(request, ctx, state, binding, rest, query, record)
        record.status = resp.status
        return resp


def _upstream_url(binding: GatewayBinding, rest: str, query: str, *, ws: bool = False) -> URL:
    base = binding.endpoint.rstrip("/")
    if ws:
        base = "ws" + base[4:] if base.startswith("http") else base
    raw = base + (rest or "")
    if query:
        raw += "?" + query
    return URL(raw, encoded=True)


async def _relay(
    request: web.BaseRequest,
    ctx: ProxyContext,
    state: State,
    binding: GatewayBinding,
    rest: str,
    query: str,
    record: audit.Record,
) -> web.StreamResponse:
    session = ctx.session
    assert session is not None
    upstream_query = _upstream_query(query, binding)
    headers = _upstream_headers(request, binding)
    tls = state.upstream_ssl.get(binding.prefix)
    if request.headers.get("Upgrade", "").lower() == "websocket":
        try:
            return await _relay_websocket(
                request, ctx, binding, rest, upstream_query, headers, record
            )
        except UpstreamRedirect as redirect:
            # the 3xx goes back to the client, which may follow it itself (without the
            # credential); the proxy never does
            resp = web.StreamResponse(status=redirect.status)
            # its body is not relayed: body=True drops the framing headers
            copy_headers(redirect.headers, resp, state.redactors[binding.prefix], body=True)
            record.status = redirect.status
            await resp.prepare(request)
            await resp.write_eof()
            return resp

    chunk = ctx.settings.stream_chunk

    async def body() -> AsyncIterator[bytes]:
        async for data in request.content.iter_chunked(chunk):
            record.bytes_in += len(data)
            yield data

    data = body() if request.body_exists else None
    if data is None:
        headers.pop("Content-Length", None)
    url = _upstream_url(binding, rest, upstream_query)
    async with session.request(
        request.method,
        url,
        headers=headers,
        data=data,
        allow_redirects=False,
        ssl=tls if tls is not None else True,  # verification can never be turned off
        compress=None,
        auto_decompress=False,
    ) as upstream:
        return await stream_back(request, upstream, state.redactors[binding.prefix], chunk, record)


async def _relay_websocket(
    request: web.BaseRequest,
    ctx: ProxyContext,
    binding: GatewayBinding,
    rest: str,
    query: str,
    headers: CIMultiDict[str],
    record: audit.Record,
) -> web.StreamResponse:
    session = ctx.session
    assert session is not None and ctx.state is not None
    protocols = tuple(
        p.strip()
        for value in request.headers.getall("Sec-WebSocket-Protocol", ())
        for p in value.split(",")
        if p.strip()
    )
    for name in list(headers):
        if name.lower() in WS_HANDSHAKE or name.lower() == "content-length":
            del headers[name]
    url = _upstream_url(binding, rest, query, ws=True)
    redactor = ctx.state.redactors[binding.prefix]
    upstream = await session.ws_connect(
        url,
        headers=headers,
        protocols=protocols,
        ssl=ctx.state.upstream_ssl.get(binding.prefix, True),
        autoping=True,
        heartbeat=None,
    )
    async with upstream:
        ws = web.WebSocketResponse(protocols=(upstream.protocol,) if upstream.protocol else ())
        await ws.prepare(request)
        record.status = 101

        async def down() -> None:
            async for msg in upstream:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    text = redactor.text(msg.data)
                    record.bytes_out += len(text)
                    await ws.send_str(text)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    data = redactor.bytes(msg.data)
                    record.bytes_out += len(data)
                    await ws.send_bytes(data)
                else:
                    break
            await ws.close()

        async def up() -> None:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    record.bytes_in += len(msg.data)
                    await upstream.send_str(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    record.bytes_in += len(msg.data)
                    await upstream.send_bytes(msg.data)
                else:
                    break
            await upstream.close()

        tasks = [asyncio.ensure_future(down()), asyncio.ensure_future(up())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await ws.close()
    return ws
