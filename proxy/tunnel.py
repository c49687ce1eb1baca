"""CONNECT tunnels: a byte pipe between the client's connection and an upstream socket.

Bytes pass untouched (TLS goes end to end). The pipe works at the protocol level: each end
writes what it reads straight into the other end's transport, and when a transport's write
buffer fills (its peer reads slowly) the other side stops reading, so memory stays bounded by
the transports' write-buffer limits. A half-close (EOF) is passed on with write_eof and the
tunnel ends when both directions are done, either side drops, or nothing moved for
`idle_timeout` seconds.

aiohttp's server has parsed the CONNECT head and owns the client connection; `Tunnel.attach`
takes it over: it moves the transport to our protocol (after collecting any bytes the client
sent behind the head), and the handler later returns `Detached()` so aiohttp writes nothing
more on that connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from aiohttp import web

from proxy.context import IPAddress
from proxy.tunnel_guard import Refused, TunnelGuard

ESTABLISHED = b"HTTP/1.1 200 Connection Established\r\n\r\n"
MAX_CONNECT_ATTEMPTS = 4


class _End(asyncio.Protocol):
    """One side of the tunnel; what it reads goes to its peer's transport."""

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel
        self.peer: _End | None = None
        self.transport: asyncio.Transport | None = None
        self.received = 0
        self.eof = False
        self.lost = False
        self.lost_exc: BaseException | None = None
        self.on_lost: Callable[[BaseException | None], None] | None = None
        self._pending: list[bytes] = []  # read before the peer was wired up

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, so no isinstance check
        self.transport = transport  # type: ignore[assignment]
        if self.peer is None:
            # server-speaks-first protocols: hold upstream bytes until the 200 has gone out
            transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        self.tunnel.touch()
        if self is self.tunnel.client and self.tunnel.guard is not None:
            screened = self.tunnel.screen(data)
            if screened is None:
                return
            data = screened
        if self.peer is None:
            self._pending.append(data)
        else:
            self.peer.send(data)

    def eof_received(self) -> bool:
        self.eof = True
        if self.peer is not None:
            self.peer.send_eof()
        self.tunnel.check()
        return True  # keep our writing half open: the other direction may still flow

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.resume_reading()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        self.lost_exc = exc
        self.tunnel.check()

    def report_lost(self) -> None:
        if self.on_lost is not None:
            on_lost, self.on_lost = self.on_lost, None
            on_lost(self.lost_exc)

    def wire(self, peer: _End) -> None:
        self.peer = peer
        pending, self._pending = self._pending, []
        for data in pending:
            peer.send(data)

    def send(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send_eof(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()  # flushes what is buffered, then closes

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class Tunnel:
    """A client connection piped to one upstream connection.

    With a `guard`, the client's bytes pass through it before they reach the upstream (see
    proxy/tunnel_guard.py); a refusal, or an incomplete hello or request head held longer
    than `inspect_timeout`, aborts both ends and is kept in `refused`."""

    def __init__(
        self,
        idle_timeout: float,
        guard: TunnelGuard | None = None,
        inspect_timeout: float = 10.0,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._idle_timeout = idle_timeout
        self._last = self._loop.time()
        self._idle_handle: asyncio.TimerHandle | None = None
        self._done: asyncio.Future[None] = self._loop.create_future()
        self.client = _End(self)
        self.upstream = _End(self)
        self.guard = guard
        self.refused: Refused | None = None
        self._inspect_timeout = inspect_timeout
        self._inspect_handle: asyncio.TimerHandle | None = None

    def screen(self, data: bytes) -> bytes | None:
        """The client bytes the guard lets through now; None once the tunnel is refused."""
        guard = self.guard
        if guard is None:
            return data
        try:
            out = guard.feed(data)
        except Refused as exc:
            self._refuse(exc)
            return None
        if guard.passing:
            self.guard = None  # checked: the rest is piped untouched
        if guard.waiting and not guard.passing:
            if self._inspect_handle is None:
                self._inspect_handle = self._loop.call_later(
                    self._inspect_timeout, self._refuse, Refused("tunnel:inspect-timeout")
                )
        elif self._inspect_handle is not None:
            self._inspect_handle.cancel()
            self._inspect_handle = None
        return out

    def _refuse(self, exc: Refused) -> None:
        self._inspect_handle = None
        if self.refused is None and not self._done.done():
            self.refused = exc
            self.guard = None
            self.abort()

    @property
    def bytes_out(self) -> int:
        """Bytes from the client toward the upstream."""
        return self.client.received

    @property
    def bytes_in(self) -> int:
        """Bytes from the upstream back to the client."""
        return self.upstream.received

    async def connect(self, addresses: Sequence[IPAddress], port: int, timeout: float) -> None:
        """Connect to the first of `addresses` that answers, within `timeout` overall.

        Raises TimeoutError if every attempt timed out, OSError if the last one failed.
        """
        deadline = self._loop.time() + timeout
        error: OSError | None = None
        for ip in addresses[:MAX_CONNECT_ATTEMPTS]:
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    await self._loop.create_connection(lambda: self.upstream, str(ip), port)
                return
            except TimeoutError:
                error = None
            except OSError as exc:
                error = exc
        if error is not None:
            raise error
        raise TimeoutError("connect timed out")

    def attach(self, request: web.BaseRequest) -> bool:
        """Take the client connection over from aiohttp and start piping.

        Returns False when the client is already gone.
        """
        transport = request.transport
        protocol = request.protocol
        if transport is None or transport.is_closing():
            return False
        early = early_bytes(request)
        self.client.transport = transport
        # aiohttp still tracks this connection: tell it when the tunnel is over (not when the
        # client closes: aiohttp would cancel this handler before the upstream got the last
        # bytes the client sent)
        self.client.on_lost = protocol.connection_lost
        transport.set_protocol(self.client)
        transport.write(ESTABLISHED)
        self.client.wire(self.upstream)
        self.upstream.wire(self.client)
        if early:
            self.client.data_received(early)
        transport.resume_reading()  # aiohttp may have paused it while it buffered
        self.upstream.resume_reading()
        self.touch()
        self._arm_idle()
        return True

    async def wait(self) -> None:
        try:
            await asyncio.shield(self._done)
        finally:
            self.abort()

    def touch(self) -> None:
        self._last = self._loop.time()

    def check(self) -> None:
        if self.client.eof and self.upstream.eof:
            self.client.close()
            self.upstream.close()
        elif self.client.lost or self.upstream.lost:
            # one side is gone: flush what the other side still has buffered, then close it
            self.client.close()
            self.upstream.close()
        if self.client.lost and (self.upstream.lost or self.upstream.transport is None):
            self._finish()

    def abort(self) -> None:
        self.client.abort()
        self.upstream.abort()
        self._finish()

    def _finish(self) -> None:
        if self._inspect_handle is not None:
            self._inspect_handle.cancel()
            self._inspect_handle = None
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        if not self._done.done():
            self._done.set_result(None)
        if self.client.lost:
            self.client.report_lost()

    def _arm_idle(self) -> None:
        self._idle_handle = self._loop.call_at(self._last + self._idle_timeout, self._on_idle)

    def _on_idle(self) -> None:
        self._idle_handle = None
        if self._done.done():
            return
        if self._loop.time() - self._last >= self._idle_timeout:
            self.abort()
        else:
            self._arm_idle()


class Detached(web.StreamResponse):
    """Returned for a taken-over connection: aiohttp must write nothing more on it."""

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def early_bytes(request: web.BaseRequest) -> bytes:
    """Bytes the client sent right behind the CONNECT head (e.g. an eager TLS ClientHello).

    Depending on the parser (C or pure Python) aiohttp keeps them in the request payload or in
    the protocol's buffer of an upgraded connection; take them from both.
    """
    data = b""
    with contextlib.suppress(Exception):
        data += request.content.read_nowait(-1)
    protocol = request.protocol
    tail = getattr(protocol, "_message_tail", b"")
    if isinstance(tail, bytes) and tail:
        data += tail
        protocol._message_tail = b""
    return data
