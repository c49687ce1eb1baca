"""Port-forward sessions in-process for the relay tests: an opener Mux (the CLI's end)
listening on 127.0.0.1 and an acceptor Mux (the relay's end) connecting to a real target
server, joined by a socketpair; or an opener alone, with the test playing the other end
byte by byte (`Peer`)."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

from proxy import relay_wire as w
from proxy.relay import Link
from proxy.relay_mux import Channel, Mux


@dataclass
class End:
    mux: Mux
    transport: asyncio.Transport
    ended: asyncio.Future
    reports: list[str] = field(default_factory=list)


async def end_on(sock: socket.socket, *, opener: bool, connect=None, **kw) -> End:
    loop = asyncio.get_running_loop()
    link = Link()
    transport, _ = await loop.create_connection(lambda: link, sock=sock)
    ended = loop.create_future()
    reports: list[str] = []

    def on_end(reason):
        if not ended.done():
            ended.set_result(reason)

    link.mux = Mux(
        opener=opener, send=transport.write, on_end=on_end, connect=connect,
        report=reports.append, **kw,
    )  # fmt: skip
    return End(link.mux, transport, ended, reports)


@dataclass
class Session:
    opener: End
    acceptor: End
    server: asyncio.AbstractServer
    port: int

    async def client(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def close(self) -> None:
        self.server.close()
        self.opener.mux.close()
        self.acceptor.mux.close()
        self.opener.transport.close()
        self.acceptor.transport.close()


async def session(target_port: int, gate: asyncio.Event | None = None, **opener_kw) -> Session:
    """An opener listening on a free port, relaying to 127.0.0.1:target_port (connecting only
    once `gate` is set, when given)."""
    loop = asyncio.get_running_loop()
    left, right = socket.socketpair()

    async def connect(channel: Channel) -> None:
        if gate is not None:
            await gate.wait()
        await loop.create_connection(lambda: channel, "127.0.0.1", target_port)

    acceptor = await end_on(right, opener=False, connect=connect)
    opener = await end_on(left, opener=True, **opener_kw)
    server = await loop.create_server(lambda: Channel(opener.mux), "127.0.0.1", 0)
    return Session(opener, acceptor, server, server.sockets[0].getsockname()[1])


class Peer:
    """The far end of an opener, played by the test: it reads the opener's frames and writes
    whatever bytes it likes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = w.Decoder()
        self.frames: list[w.Frame] = []

    async def expect(self, kind: int) -> w.Frame:
        while True:
            for i, frame in enumerate(self.frames):
                if frame.kind == kind:
                    del self.frames[i]
                    return frame
            data = await asyncio.wait_for(self.reader.read(65536), 30)
            assert data, f"the opener closed the link before sending {w.NAMES[kind]}"
            self.frames += self.decoder.feed(data)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


async def opener_with_peer(**kw) -> tuple[End, Peer, asyncio.AbstractServer, int]:
    """An opener whose link's other end is the test's; HELLO exchanged."""
    loop = asyncio.get_running_loop()
    left, right = socket.socketpair()
    opener = await end_on(left, opener=True, **kw)
    peer = Peer(*await asyncio.open_connection(sock=right))
    await peer.expect(w.HELLO)
    await peer.send(w.encode(w.HELLO, 0, w.PROTOCOL))
    server = await loop.create_server(lambda: Channel(opener.mux), "127.0.0.1", 0)
    return opener, peer, server, server.sockets[0].getsockname()[1]


async def until(condition, what: str, timeout: float = 30.0) -> None:
    """Wait for a condition of the session's state (an event, polled; never a fixed sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    """Everything until EOF; a reset counts as the end."""
    chunks = []
    try:
        while chunk := await reader.read(1 << 20):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)
