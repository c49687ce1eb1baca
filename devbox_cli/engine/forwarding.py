"""The host's end of `devbox port-forward` (services/ports.py drives it): an asyncio loop on a
thread of its own, the listener on 127.0.0.1, and the link, the hijacked stream of the
`docker exec` that runs proxy.relay in the proxy container. Our frames (proxy/relay_wire.py)
go raw on its stdin; the relay's come back inside the engine's stdout framing
(wire.Demuxer), its stderr beside them. No byte goes to a container's address from here:
everything travels over the Engine API, so a remote engine works as a local one does.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devbox_cli.engine import wire
from devbox_cli.engine.stream_bridge import bridge
from devbox_cli.errors import DevboxError
from proxy.relay_mux import Channel, Mux

HELLO_TIMEOUT = 30.0  # the relay's interpreter starting on a loaded machine
DRAIN_TIMEOUT = 5.0  # for the relay to see its stdin end and exit
STDERR_TAIL = 4096

# How a session ended: closed (by us), link (the exec's stream ended: the relay exited or
# its container stopped), protocol (the relay broke the protocol), stopped (a watcher said
# the devbox stopped).
CLOSED, LINK, PROTOCOL, STOPPED = "closed", "link", "protocol", "stopped"


@dataclass(frozen=True)
class Ending:
    kind: str
    detail: str = ""


class _Link(asyncio.Protocol):
    def __init__(self, session: Session) -> None:
        self.session = session
        self.demux = wire.Demuxer()
        self.mux: Mux | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.mux = self.session.new_mux(transport)

    def data_received(self, data: bytes) -> None:
        assert self.mux is not None
        try:
            parts = self.demux.feed(data)
        except DevboxError as exc:
            self.mux.fail(exc.message)
            return
        for stream, payload in parts:
            if stream == 1:
                self.mux.feed(payload)
            else:
                self.session.stderr = (self.session.stderr + payload)[-STDERR_TAIL:]

    def eof_received(self) -> bool:
        assert self.mux is not None
        self.mux.link_lost()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.mux is not None:
            self.mux.link_lost()
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        if self.mux is not None:
            self.mux.link_paused_changed(True)

    def resume_writing(self) -> None:
        if self.mux is not None:
            self.mux.link_paused_changed(False)


class Session:
    """One port-forward: `start` until the relay answered and the listener serves, then
    until `close`, or until it ends by itself (`ending` says how; `done` is set)."""

    def __init__(self, stream: Any, listener: socket.socket, report: Callable[[str], None]) -> None:
        self.stream = stream
        self.listener = listener
        self.report = report
        self.stderr = b""  # the relay's last words
        self.ending: Ending | None = None
        self.ready = threading.Event()
        self.done = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._wake: asyncio.Event | None = None
        self._hello: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="devbox-port-forward", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()[:2]
        return host, port

    def start(self) -> bool:
        """True once serving; False when the session ended first (see `ending`)."""
        self._thread.start()
        self.ready.wait()
        return not self.done.is_set() and self.ending is None

    def close(self) -> None:
        self._end_from_outside(Ending(CLOSED))
        self._thread.join()

    def stop(self, detail: str) -> None:
        """End it because the devbox stopped (from a watcher's thread)."""
        self._end_from_outside(Ending(STOPPED, detail))

    def _end_from_outside(self, ending: Ending) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: it ended already
            self._loop.call_soon_threadsafe(self._set_ending, ending)

    # -- on the loop's thread ------------------------------------------------------------

    def new_mux(self, transport: asyncio.Transport) -> Mux:
        assert self._hello is not None

        def on_end(reason: str | None) -> None:
            self._set_ending(Ending(LINK) if reason is None else Ending(PROTOCOL, reason))

        return Mux(
            opener=True,
            send=transport.write,
            on_end=on_end,
            report=self.report,
            on_hello=self._hello.set,
        )

    def _set_ending(self, ending: Ending) -> None:
        if self.ending is None:
            self.ending = ending
        if self._wake is not None:
            self._wake.set()

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._main())
        except Exception as exc:  # the stream was unusable: an end like any other, no traceback
            self._set_ending(Ending(LINK, f"{exc.__class__.__name__}: {exc}"))
        finally:
            self._loop.close()
            with contextlib.suppress(OSError):
                self.listener.close()
            self.done.set()
            self.ready.set()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self._wake, self._hello = asyncio.Event(), asyncio.Event()
        if self.ending is not None:
            return
        sock = self.stream if type(self.stream) is socket.socket else bridge(self.stream)
        transport, link = await loop.create_connection(lambda: _Link(self), sock=sock)
        assert link.mux is not None
        try:
            waits = [loop.create_task(e.wait()) for e in (self._hello, self._wake)]
            await asyncio.wait(waits, timeout=HELLO_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
            for task in waits:
                task.cancel()
            if not self._hello.is_set() or self.ending is not None:
                self._set_ending(Ending(LINK, "the relay did not answer"))
                return
            server = await loop.create_server(
                lambda: Channel(link.mux), sock=self.listener, backlog=128
            )
            self.ready.set()
            await self._wake.wait()
            server.close()
        finally:
            link.mux.close()
            await self._drain(transport, link)

    async def _drain(self, transport: asyncio.Transport, link: _Link) -> None:
        """Let the relay see its stdin end (and exit) before the stream is closed."""
        if not transport.is_closing() and transport.can_write_eof():
            with contextlib.suppress(OSError):
                transport.write_eof()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(link.lost), DRAIN_TIMEOUT)
        transport.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(link.lost, DRAIN_TIMEOUT)
