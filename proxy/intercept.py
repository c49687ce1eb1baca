"""A CONNECT to a host a gateway intercepts: the proxy answers 200, terminates the box's TLS
with a leaf certificate minted for that host by the devbox's CA (proxy/certs.py), and serves
the HTTP/1.1 requests inside with its own limited server (proxy/server.py: head deadline,
head cap, aiohttp's strict parser); each request is proxy/intercepted.py's. Nothing is
connected upstream here: every request goes out on the gateways' pinned session, which
verifies the real upstream's certificate.

The box's TLS must be for the CONNECT host: a ClientHello naming another server fails the
handshake (the leaf context's SNI check), one naming none is refused once the handshake is
done, before any request is read. Bytes the client sent before the 200 could not be handed
to TLS, so such a CONNECT is refused with 400. A refusal after the 200 is the closed
connection and the CONNECT's audit record (decision deny, rule intercept:tls-sni-mismatch,
intercept:tls-sni-missing, intercept:tls-handshake, intercept:tls-timeout); a connection
that served requests ends with decision allow, rule intercept.
"""

from __future__ import annotations

import asyncio
import functools
import ssl

from aiohttp import web

from proxy import audit, intercepted
from proxy.certs import SNI_SEEN, LeafCache
from proxy.config import GatewayBinding
from proxy.context import ProxyContext
from proxy.egress import Target
from proxy.errors import ProxyError
from proxy.server import make_server
from proxy.tunnel import ESTABLISHED, Detached, early_bytes

# the handshake's failure when the leaf context's SNI check refused the name (certs.py)
_SNI_REFUSED = "CALLBACK_FAILED"


async def serve(
    request: web.BaseRequest,
    ctx: ProxyContext,
    target: Target,
    binding: GatewayBinding,
    record: audit.Record,
) -> web.StreamResponse:
    """Serve an intercepted CONNECT until the box's connection ends."""
    state = ctx.state
    assert state is not None and state.leaves is not None
    record.rule, record.prefix = "intercept", binding.prefix
    tls_context = await _leaf(state.leaves, target.host)
    transport = request.transport
    if transport is None or transport.is_closing():
        record.status = 499  # the client left while the certificate was minted
        return Detached(status=200)
    if early_bytes(request):
        record.rule = "intercept:early-data"
        raise ProxyError(400, "data before the CONNECT's answer: wait for the 200, then TLS")
    outer = request.protocol
    server = make_server(
        functools.partial(intercepted.handle, ctx=ctx, target=target), ctx.settings
    )
    inner = server()
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()

    def lost(exc: BaseException | None) -> None:
        if not ended.done():
            ended.set_result(None)
        # aiohttp still tracks the CONNECT's connection: tell it the connection is over
        outer.connection_lost(exc)

    holding = _Holding()
    transport.write(ESTABLISHED)
    record.status = 200
    rule = None
    try:
        tls = await loop.start_tls(
            transport,
            holding,
            tls_context,
            server_side=True,
            ssl_handshake_timeout=ctx.settings.header_timeout,
        )
    except ssl.SSLError as exc:
        rule = (
            "intercept:tls-sni-mismatch"
            if exc.reason == _SNI_REFUSED
            else "intercept:tls-handshake"
        )
    except TimeoutError:
        rule = "intercept:tls-timeout"
    except (ConnectionError, OSError):
        rule = "intercept:tls-handshake"
    else:
        if getattr(tls.get_extra_info("ssl_object"), SNI_SEEN, None) is None:
            rule = "intercept:tls-sni-missing"
            tls.abort()
    if rule is not None:
        record.decision, record.rule = "deny", rule
        transport.close()  # after the TLS alert, if there is one
        # the transport is the SSL layer's now: aiohttp never hears of its end
        loop.call_soon(outer.connection_lost, None)
        return Detached(status=200)
    record.decision = "allow"
    inner.on_lost = lost
    holding.hand_over(tls, inner)
    await ended
    return Detached(status=200)


class _Holding(asyncio.Protocol):
    """The TLS layer's protocol during the handshake: it keeps whatever arrives right after
    it (a client may send its request in the same flight as its Finished) until the
    connection's HTTP server takes over, so aiohttp never sees a byte before its
    connection_made, nor a connection that failed its handshake."""

    def __init__(self) -> None:
        self._data: list[bytes] = []
        self._eof = False
        self._lost: tuple[BaseException | None] | None = None

    def data_received(self, data: bytes) -> None:
        self._data.append(data)

    def eof_received(self) -> bool:
        self._eof = True
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        self._lost = (exc,)

    def hand_over(self, transport: asyncio.Transport, protocol: asyncio.Protocol) -> None:
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        for data in self._data:
            protocol.data_received(data)
        if self._eof:
            protocol.eof_received()
        if self._lost is not None:
            protocol.connection_lost(self._lost[0])


async def _leaf(leaves: LeafCache, host: str) -> ssl.SSLContext:
    """The host's server context: cached, else minted on a worker thread (a key pair and a
    signature, ~2 ms: not on the loop that carries every other connection)."""
    cached = leaves.get(host)
    if cached is not None:
        return cached
    return await asyncio.to_thread(leaves.mint, host)
