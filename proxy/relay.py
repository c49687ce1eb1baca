"""`python -m proxy.relay ADDRESS PORT`: the proxy container's end of `devbox port-forward`.

    docker exec -i devbox-NAME-proxy /opt/proxy/bin/python -m proxy.relay 10.0.3.2 8080

The CLI runs this once per port-forward session, over an exec whose stdin and stdout carry
the frames of relay_wire.py: every connection the CLI accepted on the host is one channel,
and the relay connects each to ADDRESS:PORT, the box's address on the devbox's network as
the CLI read it from `docker inspect`. The target is fixed here, on the command line: no
frame names an address or a port, so neither the box nor anything it sends can point the
relay anywhere else, and the box gets no new route (the proxy could always reach it).

One process, one thread, standard library only: the proxy's pids and memory limits hold.
It ends when its stdin does (the CLI closed the session, or went away), exit 0; after a
protocol error or a silent link, exit 2 with the reason on stderr; bad arguments, exit 64.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import sys

from proxy.relay_mux import Channel, Mux

USAGE = "usage: python -m proxy.relay ADDRESS PORT (an IP literal and 1-65535)"


class Link(asyncio.Protocol):
    """The protocol of a link that carries frames as they are (a socket, the relay's pipes):
    what it reads goes to `mux`, and so do its end and its backpressure."""

    mux: Mux | None = None

    def data_received(self, data: bytes) -> None:
        if self.mux is not None:
            self.mux.feed(data)

    def eof_received(self) -> bool:
        if self.mux is not None:
            self.mux.link_lost()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.mux is not None:
            self.mux.link_lost()

    def pause_writing(self) -> None:
        if self.mux is not None:
            self.mux.link_paused_changed(True)

    def resume_writing(self) -> None:
        if self.mux is not None:
            self.mux.link_paused_changed(False)


async def serve(address: str, port: int, stdin: int = 0, stdout: int = 1) -> str | None:
    """Relay until the link ends; returns None when it simply closed, else the reason."""
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[str | None] = loop.create_future()
    pipes = Link()  # both pipes: stdin's data and end, stdout's backpressure
    out_file = open(stdout, "wb", buffering=0, closefd=False)  # noqa: SIM115
    in_file = open(stdin, "rb", buffering=0, closefd=False)  # noqa: SIM115
    writer, _ = await loop.connect_write_pipe(lambda: pipes, out_file)

    async def connect(channel: Channel) -> None:
        await loop.create_connection(lambda: channel, address, port)

    def on_end(reason: str | None) -> None:
        if not ended.done():
            ended.set_result(reason)

    pipes.mux = Mux(opener=False, send=writer.write, on_end=on_end, connect=connect)
    reader, _ = await loop.connect_read_pipe(lambda: pipes, in_file)
    try:
        return await ended
    finally:
        reader.close()
        writer.close()


def parse(argv: list[str]) -> tuple[str, int] | None:
    if len(argv) != 2 or not (argv[1].isascii() and argv[1].isdigit()):
        return None
    try:
        address = str(ipaddress.ip_address(argv[0]))
    except ValueError:
        return None
    port = int(argv[1])
    return (address, port) if 0 < port < 65536 else None


def main(argv: list[str] | None = None) -> int:
    target = parse(sys.argv[1:] if argv is None else argv)
    if target is None:
        print(USAGE, file=sys.stderr)
        return 64
    reason = asyncio.run(serve(*target))
    if reason is not None:
        os.write(2, f"relay: {reason}\n".encode())
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
