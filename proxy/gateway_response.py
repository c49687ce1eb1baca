"""A gateway's answer on its way back to the devbox: every byte the upstream sends is read by
the redactor (proxy/redact.py) before it is passed on.

A body is decoded exactly as declared (gzip/deflate) and redacted; a body the redactor could
not read (two content-codings, an unknown one, a transfer-coding other than chunked) is a
502. The status line carries the standard phrase, never the upstream's. Headers: hop-by-hop
ones (proxy/headers.py) dropped, a header whose name holds a secret dropped, every value
redacted, and headers a secret is spread over dropped.
"""

from __future__ import annotations

from http import HTTPStatus

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy

from proxy import audit
from proxy.errors import ProxyError
from proxy.headers import HopByHop
from proxy.redact import DecodeError, Decoder, Redactor

# the codings the proxy can undo, so the only ones it asks an upstream for
DECODABLE = frozenset({"gzip", "x-gzip", "deflate"})
# a body the proxy re-frames (decoded, redacted) loses the upstream's framing
_FRAMING = frozenset({"content-length", "content-encoding"})


async def stream_back(
    request: web.BaseRequest,
    upstream: aiohttp.ClientResponse,
    redactor: Redactor,
    chunk: int,
    record: audit.Record,
) -> web.StreamResponse:
    no_body = request.method == "HEAD" or upstream.status in (204, 304) or upstream.status < 200
    encoding = None if no_body else _body_coding(upstream.headers)
    # the standard phrase: the upstream's own reason phrase could quote the request
    resp = web.StreamResponse(status=upstream.status, reason=_phrase(upstream.status))
    copy_headers(upstream.headers, resp, redactor, body=not no_body)
    record.status = upstream.status
    await resp.prepare(request)
    if no_body:
        await resp.write_eof()
        return resp
    decoder = Decoder(encoding, chunk) if encoding else None
    body = redactor.body()

    async def send(data: bytes) -> None:
        if data:
            record.bytes_out += len(data)
            await resp.write(data)

    try:
        async for data in upstream.content.iter_any():
            if decoder is None:
                await send(body.feed(data))
            else:
                for piece in decoder.feed(data):
                    await send(body.feed(piece))
        if decoder is not None:
            await send(body.feed(decoder.finish()))
        await send(body.flush())
    except DecodeError:
        raise ProxyError(502, "upstream sent a bad compressed body") from None
    await resp.write_eof()
    return resp


def coding(token: str) -> str:
    return token.split(";")[0].strip().lower()


def _codings(headers: CIMultiDictProxy[str], name: str) -> list[str]:
    """Every coding named in every `name` header, in order (empty tokens dropped)."""
    return [c for value in headers.getall(name, ()) for t in value.split(",") if (c := coding(t))]


def _body_coding(headers: CIMultiDictProxy[str]) -> str | None:
    """The one coding to undo before redaction (None: identity); ProxyError 502 for any
    body the redactor could not read once decoded that way."""
    if any(c != "chunked" for c in _codings(headers, "Transfer-Encoding")):
        # e.g. `gzip, chunked`: aiohttp undoes only the chunking
        raise ProxyError(502, "upstream used an unsupported transfer-encoding")
    codings = [c for c in _codings(headers, "Content-Encoding") if c != "identity"]
    if len(codings) > 1:
        raise ProxyError(502, "upstream used more than one content-encoding")
    if codings and codings[0] not in DECODABLE:
        raise ProxyError(502, "upstream used an unsupported content-encoding")
    return codings[0] if codings else None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def copy_headers(
    headers: CIMultiDictProxy[str], resp: web.StreamResponse, redactor: Redactor, *, body: bool
) -> None:
    """Upstream response headers toward the client: hop-by-hop and Connection-listed ones
    dropped, the body's framing too when the proxy re-frames it, a header whose name holds
    a secret dropped whole, every value redacted, and the headers a secret is spread over
    (`X-A: sk-real-` then `X-A: secret`, which a client may join) dropped."""
    hop = HopByHop(headers)
    framing = _FRAMING if body else frozenset()
    kept = [
        (name, redactor.text(value))
        for name, value in headers.items()
        if (lname := name.lower()) not in hop
        and lname not in framing
        and not redactor.holds_secret(name)
    ]
    # read in order, and per name (as a client merges repeated fields)
    groups = [list(range(len(kept)))]
    for lname in {n.lower() for n, _ in kept}:
        groups.append([i for i, (n, _) in enumerate(kept) if n.lower() == lname])
    spread = {i for group in groups for i in _spread_over(group, kept, redactor)}
    for i, (name, value) in enumerate(kept):
        if i not in spread:
            resp.headers.add(name, value)


def _spread_over(group: list[int], kept: list[tuple[str, str]], redactor: Redactor) -> set[int]:
    """The headers in `group` (read one after another) that a secret form runs across."""
    starts, joined = [], ""
    for i in group:
        starts.append(len(joined))
        joined += kept[i][1]
    return {
        group[k]
        for start, end in redactor.spans(joined)
        for k, at in enumerate(starts)
        if at < end and at + len(kept[group[k]][1]) > start
    }
