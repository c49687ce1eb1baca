"""Gateway routes: `/gw/<PREFIX>/<rest>` -> `<endpoint>/<rest>` with the real credential.

The devbox proves itself with its worthless gateway token (any Authorization scheme, Basic
included, x-api-key, or the header the auth mechanism names; never the query string),
compared in constant time; without it the answer is 401. The swap itself (every token out,
the credential and custom headers in) is proxy/swap.py's and the trip upstream and back
proxy/upstream.py's, shared with intercepted hosts. The upstream is only ever the configured
endpoint: no policy check, no redirects followed (WebSocket included), TLS always verified;
the session itself can connect nowhere else (proxy/pinning.py). The path must read the same
to every upstream (proxy/paths.py). Whatever the upstream reflects back is redacted
(proxy/redact.py): a body is passed on only in a form the redactor has read, else the
answer is 502.
"""

from __future__ import annotations

from urllib.parse import unquote_plus

from aiohttp import web
from yarl import URL

from proxy import audit
from proxy.config import GATEWAY_ROUTE, ConfigError, GatewayBinding
from proxy.context import ProxyContext
from proxy.errors import ProxyError
from proxy.redact import MIN_SECRET_LEN
from proxy.swap import checked_path, presented, upstream_headers, upstream_query
from proxy.upstream import exchange


def check_binding(binding: GatewayBinding) -> None:
    """Load-time checks a gateway must pass (raises ConfigError, never shows a value)."""
    if binding.endpoint is not None:
        url = URL(binding.endpoint)
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(f"gateway {binding.prefix}: endpoint must be an http(s) URL")
        if url.user or url.password or url.query_string or url.fragment:
            raise ConfigError(
                f"gateway {binding.prefix}: endpoint must not carry userinfo or query"
            )
    if "/" in binding.prefix or binding.prefix in (".", ".."):
        raise ConfigError(f"gateway {binding.prefix!r}: prefix must not contain '/'")
    if len(binding.token) < 16:
        raise ConfigError(f"gateway {binding.prefix}: token is too short")
    if len(binding.credential) < MIN_SECRET_LEN:
        raise ConfigError(f"gateway {binding.prefix}: credential is too short")


def _split_target(target: str) -> tuple[str, str, str]:
    """'/gw/P/rest?q' -> ('P', '/rest', 'q'), raw (still percent-encoded)."""
    path, _, query = target.partition("?")
    rest = path[len(GATEWAY_ROUTE) :]
    prefix, slash, tail = rest.partition("/")
    return unquote_plus(prefix), slash + tail, query


async def handle(request: web.BaseRequest, ctx: ProxyContext, started: float) -> web.StreamResponse:
    state = ctx.state
    assert state is not None
    prefix, rest, query = _split_target(request.raw_path)
    binding = state.gateways.get(prefix)
    record = audit.Record(kind="gateway", method=request.method, started=started)
    if binding is not None and binding.endpoint is not None:
        endpoint = URL(binding.endpoint)
        record.host, record.port, record.path = endpoint.host, endpoint.port, rest
        record.rule, record.prefix = "gateway", prefix
    with audit.recorded(ctx, record):
        if binding is None:
            raise ProxyError(404, "no such gateway")
        if binding.endpoint is None:
            raise ProxyError(404, f"gateway {prefix} has no endpoint: it only intercepts hosts")
        if not presented(request.headers, binding):  # type: ignore[arg-type]
            raise ProxyError(401, "missing or wrong gateway token")
        if "#" in request.raw_path:
            raise ProxyError(400, "'#' is not allowed in a gateway request target")
        checked_path(rest, state.tokens)
        # From here on the request is the proxy's to pass on: a 401 or 404 after this point
        # is the endpoint's own answer, not a refusal.
        record.decision, record.credential = "allow", True
        headers = upstream_headers(request.headers, binding, state.tokens, credential=True)  # type: ignore[arg-type]
        target = (rest, upstream_query(query, binding, state.tokens, credential=True))
        resp = await exchange(
            request, ctx, state, binding, binding.endpoint, target, headers, record
        )
        record.status = resp.status
        return resp
