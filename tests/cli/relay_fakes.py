"""A stand-in for the far end of a port-forward's exec stream, for the host side's tests
without Docker: a real acceptor Mux (the relay's code) whose frames go out inside Docker's
stdout framing, as the engine would carry them, relaying to a real echo server. It runs on
an event loop of its own thread; the stream it hands out is plain (a socketpair) or TLS (a
real TLS connection, as a TLS engine's exec stream is an ssl.SSLSocket)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from proxy.relay import Link
from proxy.relay_mux import Channel, Mux


def docker_frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


class FakeRelay:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.ended: Future[str | None] = Future()
        self.mux: Mux | None = None
        self.target_port = self.call(self._start_target)

    def call(self, make: Callable[[], Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(30)

    async def _start_target(self) -> int:
        self.target = await asyncio.start_server(_echo, "127.0.0.1", 0)
        return self.target.sockets[0].getsockname()[1]

    def _link(self) -> Link:
        outer = self

        class EngineLink(Link):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                assert isinstance(transport, asyncio.Transport)

                def send(data: bytes | memoryview) -> None:
                    transport.write(docker_frame(1, bytes(data)))

                async def connect(channel: Channel) -> None:
                    await outer.loop.create_connection(
                        lambda: channel, "127.0.0.1", outer.target_port
                    )

                def on_end(reason: str | None) -> None:
                    if not outer.ended.done():
                        outer.ended.set_result(reason)

                self.mux = outer.mux = Mux(opener=False, send=send, on_end=on_end, connect=connect)

        return EngineLink()

    def plain(self) -> socket.socket:
        ours, theirs = socket.socketpair()

        async def attach() -> None:
            await self.loop.create_connection(self._link, sock=theirs)

        self.call(attach)
        return ours

    def tls(self, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> ssl.SSLSocket:
        async def listen() -> int:
            self.tls_server = await self.loop.create_server(
                self._link, "127.0.0.1", 0, ssl=server_ctx
            )
            return self.tls_server.sockets[0].getsockname()[1]

        port = self.call(listen)
        raw = socket.create_connection(("127.0.0.1", port))
        return client_ctx.wrap_socket(raw, server_hostname="engine.test")

    def close(self) -> None:
        async def stop() -> None:
            if self.mux is not None:
                self.mux.close()
            self.target.close()

        self.call(stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
