"""One end of a port-forward session (relay_wire.py is the format): local TCP connections,
each a channel, carried over one link. The opener (the CLI) accepts connections on the
host and announces them; the acceptor (proxy/relay.py) connects each to its one target.
Both ends run this code on asyncio, standard library only.

Each end holds the other to the protocol (the CLI treats the relay as untrusted, the relay
the CLI): a frame that breaks it fails the whole session, never one more byte buffered.
Memory is bounded by flow control: a channel reads its local socket only while it has
credit (WINDOW bytes, returned by ACKs once the far end's socket took them) and while the
link is not backed up, so a side that never reads stalls its own connection and nothing
else.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Awaitable, Callable

from proxy import relay_wire as w

Send = Callable[[bytes | memoryview], None]
Connect = Callable[["Channel"], Awaitable[object]]
Report = Callable[[str], None]
End = Callable[[str | None], None]

CONNECT_TIMEOUT = 10.0
PING_EVERY = 15.0
SILENCE_LIMIT = 60.0  # no frame at all for this long: the other end is gone


class Channel(asyncio.BufferedProtocol):
    """One connection: its local socket and its state on the link."""

    def __init__(self, mux: Mux) -> None:
        self.mux = mux
        self.id = 0
        self.transport: asyncio.Transport | None = None
        self.opened = False  # the acceptor is connected (opener: its OPENED came)
        self.credit = w.WINDOW  # bytes this end may still send
        self.unacked = 0  # bytes received and not yet acknowledged
        self.write_paused = False
        self.sent_eof = False
        self.got_eof = False
        self.closed = False
        self.connecting: asyncio.Task[None] | None = None
        self.early: list[bytes] = []  # acceptor: what came while connecting (in the window)
        self._buf = bytearray()

    # -- the local socket ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        # Paused as soon as anything is buffered: an ACK then means the kernel took it.
        transport.set_write_buffer_limits(high=0)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # A response's head and body are two frames: never hold the second for an ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.mux.connected(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        # Reading happens only with credit, so one read is one DATA frame within the window.
        self._buf = bytearray(w.HEADER.size + min(self.credit, w.MAX_DATA))
        return memoryview(self._buf)[w.HEADER.size :]

    def buffer_updated(self, nbytes: int) -> None:
        w.HEADER.pack_into(self._buf, 0, w.DATA, self.id, nbytes)
        self.credit -= nbytes
        self.mux.send(memoryview(self._buf)[: w.HEADER.size + nbytes])
        self.update_reading()

    def eof_received(self) -> bool:
        self.sent_eof = True
        self.mux.send(w.encode(w.EOF, self.id))
        self.finish_if_done()
        return True  # keep writing: the other direction may still carry data

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.mux.lost(self)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.ack_if_due()

    # -- frames from the link ------------------------------------------------------------

    def on_data(self, payload: bytes) -> None:
        if self.got_eof or (self.mux.opener and not self.opened):
            raise w.ProtocolError(f"DATA on connection {self.id} {self._state()}")
        if self.unacked + len(payload) > w.WINDOW:
            raise w.ProtocolError(f"connection {self.id} sent beyond its window")
        self.unacked += len(payload)
        if self.transport is None:  # the opener does not wait for OPENED: one round trip less
            self.early.append(payload)
            return
        self.transport.write(payload)
        self.ack_if_due()

    def on_ack(self, payload: bytes) -> None:
        (count,) = w.COUNT.unpack(payload)
        if not self.opened or count < 1 or self.credit + count > w.WINDOW:
            raise w.ProtocolError(f"ACK of {count} bytes on connection {self.id}")
        self.credit += count
        self.update_reading()

    def on_eof(self) -> None:
        if self.got_eof or (self.mux.opener and not self.opened):
            raise w.ProtocolError(f"EOF on connection {self.id} {self._state()}")
        self.got_eof = True
        if self.transport is not None:
            self.pass_eof_on()

    def pass_eof_on(self) -> None:
        assert self.transport is not None
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.finish_if_done()

    def flush_early(self) -> None:
        """Acceptor, once connected: what the opener sent meanwhile, then its EOF."""
        assert self.transport is not None
        for payload in self.early:
            self.transport.write(payload)
        self.early.clear()
        self.ack_if_due()
        if self.got_eof:
            self.pass_eof_on()

    def _state(self) -> str:
        return "after its EOF" if self.got_eof else "before it was opened"

    # -- state ---------------------------------------------------------------------------

    def update_reading(self) -> None:
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            return
        # The opener reads from the start (the acceptor holds what comes before it connects).
        want = (
            (self.opened or self.mux.opener)
            and not self.sent_eof
            and self.credit > 0
            and not self.mux.link_paused
        )
        if want and not transport.is_reading():
            transport.resume_reading()
        elif not want and transport.is_reading():
            transport.pause_reading()

    def ack_if_due(self) -> None:
        if self.unacked >= w.ACK_AT and not self.write_paused and not self.closed:
            self.mux.send(w.ack(self.id, self.unacked))
            self.unacked = 0

    def finish_if_done(self) -> None:
        if self.sent_eof and self.got_eof and not self.closed:
            self.mux.forget(self)
            assert self.transport is not None
            self.transport.close()  # after what is still buffered

    def drop(self, *, reset: bool) -> None:
        """End it here without telling the other end (it told us, or the session is over)."""
        self.closed = True
        if self.connecting is not None:
            self.connecting.cancel()
        if self.transport is not None:
            self.transport.abort() if reset else self.transport.close()


class Mux:
    """The channels of one session and the link they share. `send` writes to the link; the
    link's owner calls feed, link_paused_changed and link_lost. `on_end` is called
    once, with None when the link closed and a reason when the session failed."""

    def __init__(
        self,
        *,
        opener: bool,
        send: Send,
        on_end: End,
        connect: Connect | None = None,
        report: Report | None = None,
        on_hello: Callable[[], None] | None = None,
        ping_every: float = PING_EVERY,
        silence_limit: float = SILENCE_LIMIT,
    ) -> None:
        self.opener = opener
        self.send = send
        self.on_end = on_end
        self._connect = connect
        self.report = report or (lambda _text: None)
        self.on_hello = on_hello or (lambda: None)
        self.channels: dict[int, Channel] = {}
        self.last_id = 0  # the newest channel id (opener: handed out; acceptor: opened)
        self.link_paused = False
        self.hello: bytes | None = None  # the other end's HELLO, once it came
        self.ended = False
        self._decoder = w.Decoder()
        self._loop = asyncio.get_running_loop()
        self._heard = self._loop.time()
        self._ping_every = ping_every
        self._silence_limit = silence_limit
        self._timer = self._loop.call_later(ping_every, self._tick)
        if opener:
            self.send(w.encode(w.HELLO, 0, w.PROTOCOL))

    # -- the link ------------------------------------------------------------------------

    def feed(self, data: bytes | memoryview) -> None:
        if self.ended:
            return
        self._heard = self._loop.time()
        try:
            for frame in self._decoder.feed(data):
                self._dispatch(frame)
                if self.ended:
                    return
        except w.ProtocolError as exc:
            self.fail(f"protocol error: {exc}")

    def link_paused_changed(self, paused: bool) -> None:
        self.link_paused = paused
        for channel in list(self.channels.values()):
            channel.update_reading()

    def link_lost(self) -> None:
        self._end(None)

    def fail(self, reason: str) -> None:
        self._end(reason)

    def close(self) -> None:
        """End the session from this side: every connection is cut."""
        self._end(None)

    def _end(self, reason: str | None) -> None:
        if self.ended:
            return
        self.ended = True
        self._timer.cancel()
        for channel in list(self.channels.values()):
            channel.drop(reset=True)
        self.channels.clear()
        self.on_end(reason)

    def _tick(self) -> None:
        if self._loop.time() - self._heard > self._silence_limit:
            self.fail(f"no word from the other end for {self._silence_limit:.0f} s")
            return
        if self.opener:
            self.send(w.encode(w.PING))
        self._timer = self._loop.call_later(self._ping_every, self._tick)

    # -- frames --------------------------------------------------------------------------

    def _dispatch(self, frame: w.Frame) -> None:
        kind, cid, payload = frame
        if kind == w.HELLO:
            self._on_hello(payload)
            return
        if self.hello is None:
            raise w.ProtocolError(f"{w.NAMES[kind]} before HELLO")
        if kind == w.PING:
            self.send(w.encode(w.PONG, 0, payload))
        elif kind == w.PONG:
            pass
        elif kind == w.OPEN:
            self._on_open(cid)
        else:
            channel = self.channels.get(cid)
            if channel is None:
                if cid > self.last_id:
                    raise w.ProtocolError(f"{w.NAMES[kind]} for connection {cid}, never opened")
                return  # one this end closed already; the other end had not heard yet
            if kind == w.DATA:
                channel.on_data(payload)
            elif kind == w.ACK:
                channel.on_ack(payload)
            elif kind == w.EOF:
                channel.on_eof()
            elif kind == w.OPENED:
                self._on_opened(channel)
            else:  # CLOSE
                self._on_close(channel, payload[0])

    def _on_hello(self, payload: bytes) -> None:
        if self.hello is not None:
            raise w.ProtocolError("a second HELLO")
        if payload != w.PROTOCOL:
            raise w.ProtocolError(f"the other end speaks {payload[:64]!r}, not {w.PROTOCOL!r}")
        self.hello = payload
        if not self.opener:
            self.send(w.encode(w.HELLO, 0, w.PROTOCOL))
        self.on_hello()

    def _on_open(self, cid: int) -> None:
        if self.opener or self._connect is None:
            raise w.ProtocolError("OPEN sent to the opening end")
        if cid <= self.last_id:
            raise w.ProtocolError(f"OPEN of connection {cid} after {self.last_id}")
        self.last_id = cid
        if len(self.channels) >= w.MAX_CHANNELS:
            self.send(w.close(cid, w.BUSY))
            return
        channel = Channel(self)
        channel.id = cid
        self.channels[cid] = channel
        channel.connecting = self._loop.create_task(self._connect_channel(channel))

    async def _connect_channel(self, channel: Channel) -> None:
        assert self._connect is not None
        try:
            await asyncio.wait_for(self._connect(channel), CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            if self.channels.pop(channel.id, None) is not None:
                channel.closed = True
                self.send(w.close(channel.id, reason_of(exc)))
        finally:
            channel.connecting = None

    def _on_opened(self, channel: Channel) -> None:
        if not self.opener or channel.opened:
            raise w.ProtocolError(f"OPENED for connection {channel.id} twice or from the opener")
        channel.opened = True
        channel.update_reading()

    def _on_close(self, channel: Channel, reason: int) -> None:
        if reason not in w.REASONS:
            raise w.ProtocolError(f"CLOSE of connection {channel.id} for reason {reason}")
        del self.channels[channel.id]
        never_opened = not channel.opened
        channel.drop(reset=never_opened)
        if self.opener:
            self.report(f"connection {channel.id}: {w.REASONS[reason]}")

    # -- channels ------------------------------------------------------------------------

    def connected(self, channel: Channel) -> None:
        """A channel's local socket is connected: announce it (opener) or confirm it."""
        assert channel.transport is not None
        if self.ended or channel.closed:
            channel.transport.abort()
            return
        if self.opener:
            if len(self.channels) >= w.MAX_CHANNELS or self.last_id >= w.MAX_CHANNEL_ID:
                self.report(f"refused a connection: {w.REASONS[w.BUSY]} ({w.MAX_CHANNELS})")
                channel.closed = True
                channel.transport.abort()
                return
            self.last_id += 1
            channel.id = self.last_id
            self.channels[channel.id] = channel
            self.send(w.encode(w.OPEN, channel.id))
        else:
            channel.opened = True
            self.send(w.encode(w.OPENED, channel.id))
            channel.flush_early()
        channel.update_reading()

    def lost(self, channel: Channel) -> None:
        """Its local socket went away before both sides finished: tell the other end."""
        channel.closed = True
        if self.channels.pop(channel.id, None) is not None and not self.ended:
            self.send(w.close(channel.id, w.RESET))

    def forget(self, channel: Channel) -> None:
        channel.closed = True
        self.channels.pop(channel.id, None)


def reason_of(exc: BaseException) -> int:
    if isinstance(exc, TimeoutError):
        return w.TIMEOUT
    code = getattr(exc, "errno", None)
    if code == errno.ECONNREFUSED:
        return w.REFUSED
    if code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return w.UNREACHABLE
    if code in (errno.ECONNRESET, errno.EPIPE):
        return w.RESET
    return w.FAILED
