"""A port-forward session in-process (proxy/relay_mux.py): an opener and an acceptor over a
socketpair, real TCP clients and target servers on 127.0.0.1. Many connections at once,
each byte-for-byte; half-close both ways; a refused connection ends only itself; flow
control holds memory to the window when either side stops reading."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket

import pytest

from proxy import relay_mux
from proxy import relay_wire as w
from proxy.relay_mux import Channel
from tests.proxy.relay_support import read_to_end, session, until


@pytest.fixture(autouse=True)
async def no_loop_errors():
    """Nothing may escape into asyncio's exception handler (a callback that raised)."""
    errors: list[dict] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield errors
    assert errors == []


async def start_target(handler) -> tuple[asyncio.AbstractServer, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def test_many_connections_at_once_each_carry_their_own_bytes():
    target, port = await start_target(echo)
    s = await session(port)

    async def one(i: int) -> None:
        data = os.urandom(300_000 + i * 997)  # more than a window, so credit must come back
        reader, writer = await s.client()
        writer.write(data)
        writer.write_eof()
        got = await read_to_end(reader)
        writer.close()
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), i

    await asyncio.gather(*(one(i) for i in range(30)))
    await until(lambda: not s.opener.mux.channels and not s.acceptor.mux.channels, "channels")
    assert not s.opener.ended.done() and s.opener.reports == []
    await s.close()
    target.close()


async def test_half_close_from_the_client_reaches_the_server_and_the_reply_comes_back():
    async def digest(reader, writer):
        data = await reader.read()  # until the client's EOF
        writer.write(hashlib.sha256(data).hexdigest().encode())
        writer.close()

    target, port = await start_target(digest)
    s = await session(port)
    reader, writer = await s.client()
    data = os.urandom(1_000_000)
    writer.write(data)
    writer.write_eof()
    assert await read_to_end(reader) == hashlib.sha256(data).hexdigest().encode()
    await s.close()
    target.close()


async def test_half_close_from_the_server_leaves_the_client_writing():
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def greet_then_listen(reader, writer):
        writer.write(b"hello")
        writer.write_eof()  # the server is done talking, not listening
        received.set_result(await reader.read())
        writer.close()

    target, port = await start_target(greet_then_listen)
    s = await session(port)
    reader, writer = await s.client()
    assert await reader.read() == b"hello"  # and then EOF
    assert reader.at_eof()
    data = os.urandom(500_000)
    writer.write(data)
    writer.write_eof()
    assert await asyncio.wait_for(received, 30) == data
    assert await reader.read() == b""
    await until(lambda: not s.opener.mux.channels, "the connection to finish")
    await s.close()
    target.close()


async def test_what_the_client_sends_before_the_relay_connected_arrives_in_order():
    # The host does not wait for OPENED (one round trip less per connection): the relay's
    # end holds what comes meanwhile, within the window, and passes it on once connected.
    gate = asyncio.Event()
    target, port = await start_target(echo)
    s = await session(port, gate)
    reader, writer = await s.client()
    data = os.urandom(w.WINDOW // 2)
    writer.write(data)
    writer.write_eof()
    await until(lambda: s.acceptor.mux.channels, "the connection")
    (relay_side,) = s.acceptor.mux.channels.values()
    await until(lambda: relay_side.got_eof, "the data and EOF to reach the relay's end")
    assert relay_side.unacked == len(data) and relay_side.transport is None
    gate.set()
    assert await read_to_end(reader) == data
    await s.close()
    target.close()


async def test_a_refused_connection_closes_only_itself():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    s = await session(port)
    reader, writer = await s.client()
    assert await read_to_end(reader) == b""
    writer.close()
    await until(lambda: s.opener.reports, "the refusal to be reported")
    assert s.opener.reports == ["connection 1: connection refused"]
    assert not s.opener.ended.done()
    # the same session serves the next connection once something listens
    target = await asyncio.start_server(echo, "127.0.0.1", port)
    reader, writer = await s.client()
    writer.write(b"again")
    writer.write_eof()
    assert await read_to_end(reader) == b"again"
    await s.close()
    target.close()


async def test_a_client_that_never_reads_stalls_only_its_own_connection():
    body = os.urandom(32 << 20)

    async def flood(reader, writer):  # fmt: skip
        writer.write(body)
        await writer.drain()
        writer.close()

    target, port = await start_target(flood)
    s = await session(port)
    reader, _ = await s.client()
    await until(lambda: s.acceptor.mux.channels, "the connection")
    (relay_side,) = s.acceptor.mux.channels.values()
    await until(lambda: relay_side.credit == 0, "the window to fill")
    (host_side,) = s.opener.mux.channels.values()
    # What the host holds for this client is one window at most, however much the box sent.
    assert host_side.transport.get_write_buffer_size() <= w.WINDOW
    assert host_side.unacked <= w.WINDOW
    # Another connection is served meanwhile.
    other_target, other_port = await start_target(echo)
    other = await session(other_port)
    r2, w2 = await other.client()
    w2.write(b"ping")
    w2.write_eof()
    assert await read_to_end(r2) == b"ping"
    # And the stalled one gets every byte once its client reads.
    got = await read_to_end(reader)
    assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
    for x in (s, other):
        await x.close()
    target.close()
    other_target.close()


async def test_a_server_that_never_reads_stalls_the_client_at_the_window():
    async def deaf(reader, writer):
        await asyncio.sleep(3600)

    target, port = await start_target(deaf)
    s = await session(port)
    _, writer = await s.client()
    chunk = b"x" * (1 << 20)
    await until(lambda: s.opener.mux.channels, "the connection")
    (host_side,) = s.opener.mux.channels.values()

    async def push() -> None:
        while True:
            writer.write(chunk)
            await writer.drain()

    pusher = asyncio.ensure_future(push())
    await until(lambda: host_side.credit == 0, "the window to fill")
    (relay_side,) = s.acceptor.mux.channels.values()
    assert relay_side.transport.get_write_buffer_size() <= w.WINDOW
    assert relay_side.unacked <= w.WINDOW
    pusher.cancel()
    writer.close()
    await s.close()
    target.close()


async def test_a_connect_that_never_completes_times_out_that_connection_only(monkeypatch):
    monkeypatch.setattr(relay_mux, "CONNECT_TIMEOUT", 0.2)
    s = await session(9, asyncio.Event())  # the gate never opens: a box that never answers
    reader, _ = await s.client()
    assert await read_to_end(reader) == b""
    assert s.opener.reports == ["connection 1: connection timed out"]
    assert not s.opener.ended.done()
    await s.close()


async def test_past_the_channel_limit_a_connection_is_refused_and_reported():
    held: list[asyncio.StreamWriter] = []

    async def hold(reader, writer):
        held.append(writer)
        await reader.read()

    target, port = await start_target(hold)
    s = await session(port)
    clients = [await s.client() for _ in range(w.MAX_CHANNELS)]
    await until(lambda: len(held) == w.MAX_CHANNELS, "every connection to reach the target")
    reader, _ = await s.client()
    assert await read_to_end(reader) == b""
    assert s.opener.reports == ["refused a connection: too many connections at once (128)"]
    for _, writer in clients:
        writer.close()
    await s.close()
    target.close()


async def test_the_end_of_the_link_cuts_every_connection():
    target, port = await start_target(echo)
    s = await session(port)
    reader, writer = await s.client()
    writer.write(b"a")
    assert await reader.read(1) == b"a"
    s.acceptor.transport.close()  # the relay's side of the link goes away
    assert await asyncio.wait_for(s.opener.ended, 30) is None
    assert await read_to_end(reader) == b""
    await s.close()
    target.close()


async def test_every_local_connection_sends_without_nagle_whatever_its_listener():
    # A listener made by hand (proto 0, as the CLI's) gets no TCP_NODELAY from asyncio; a
    # response's head and body would then wait out the client's delayed ACK (40 ms).
    target, port = await start_target(echo)
    s = await session(port)
    bare = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    bare.bind(("127.0.0.1", 0))
    server = await asyncio.get_running_loop().create_server(
        lambda: Channel(s.opener.mux), sock=bare
    )
    _, writer = await asyncio.open_connection(*bare.getsockname())
    await until(lambda: s.acceptor.mux.channels, "the connection")
    for mux in (s.opener.mux, s.acceptor.mux):
        (channel,) = mux.channels.values()
        sock = channel.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    writer.close()
    server.close()
    await s.close()
    target.close()
