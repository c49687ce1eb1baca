"""`python -m proxy.relay ADDRESS PORT` as a real process, on pipes as a `docker exec` gives
it: it relays to its one target, exits 0 when its stdin ends, 2 on a protocol error, 64 on
bad arguments."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from pathlib import Path

import pytest

from proxy import relay_wire as w
from proxy.relay import Link
from proxy.relay_mux import Channel, Mux
from tests.proxy.relay_support import read_to_end

REPO = Path(__file__).resolve().parents[2]


async def relay(*args: str, stdin: int | None = None, stdout: int | None = None):
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy.relay", *args,
        stdin=stdin, stdout=stdout, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip


async def relay_with_opener(*args: str):
    """The relay process and an opener Mux on the other ends of its stdin and stdout."""
    loop = asyncio.get_running_loop()
    to_relay_r, to_relay_w = os.pipe()
    from_relay_r, from_relay_w = os.pipe()
    proc = await relay(*args, stdin=to_relay_r, stdout=from_relay_w)
    os.close(to_relay_r)
    os.close(from_relay_w)
    link = Link()
    writer, _ = await loop.connect_write_pipe(lambda: link, os.fdopen(to_relay_w, "wb", 0))
    ended = loop.create_future()
    link.mux = Mux(opener=True, send=writer.write, on_end=ended.set_result)
    await loop.connect_read_pipe(lambda: link, os.fdopen(from_relay_r, "rb", 0))
    return proc, link.mux, writer, ended


async def echo_target():
    async def echo(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_the_relay_process_carries_connections_and_exits_when_its_stdin_ends():
    target, port = await echo_target()
    proc, mux, to_relay, _ = await relay_with_opener("127.0.0.1", str(port))
    server = await asyncio.get_running_loop().create_server(lambda: Channel(mux), "127.0.0.1", 0)
    listen = server.sockets[0].getsockname()[1]

    async def one(i: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", listen)
        data = os.urandom(200_000 + i)
        writer.write(data)
        writer.write_eof()
        assert hashlib.sha256(await read_to_end(reader)).digest() == hashlib.sha256(data).digest()

    await asyncio.gather(*(one(i) for i in range(10)))
    held_reader, _ = await asyncio.open_connection("127.0.0.1", listen)
    to_relay.close()  # the CLI's side of the session ends
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert await proc.stderr.read() == b""
    assert await read_to_end(held_reader) == b""
    server.close()
    target.close()


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["127.0.0.1"],
        ["localhost", "80"],  # no name is ever looked up
        ["10.0.0.1", "0"],
        ["10.0.0.1", "65536"],
        ["10.0.0.1", "-1"],
        ["10.0.0.1", "٣"],
        ["10.0.0.1", "80", "extra"],
        ["10.0.0.1/8", "80"],
    ],
)
async def test_bad_arguments_exit_64_with_the_usage(args):
    proc = await relay(*args)
    assert await asyncio.wait_for(proc.wait(), 30) == 64
    assert (await proc.stderr.read()).startswith(b"usage: python -m proxy.relay ADDRESS PORT")


async def test_a_protocol_error_exits_2_and_says_why():
    proc, _, to_relay, _ = await relay_with_opener("127.0.0.1", "9")
    to_relay.write(w.HEADER.pack(w.DATA, 1, 10**9))  # after the opener's HELLO
    assert await asyncio.wait_for(proc.wait(), 30) == 2
    assert await proc.stderr.read() == (
        b"relay: protocol error: DATA frame of 1000000000 bytes (allowed: 1..65536)\n"
    )
    to_relay.close()
