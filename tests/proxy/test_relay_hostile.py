"""A port-forward end facing a hostile other end, over a socketpair: the test writes the
frames. The CLI's end (the opener) assumes the relay may be compromised, and the relay's
end (the acceptor) holds the CLI to the protocol too: every malformed, oversized or
out-of-place frame fails the session cleanly (its reason, every connection cut, nothing
raised into the event loop), and frames of a connection already closed are ignored."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from proxy import relay_wire as w
from proxy.relay_mux import Channel
from tests.proxy.relay_support import Peer, end_on, opener_with_peer, read_to_end, until


@pytest.fixture(autouse=True)
async def no_loop_errors():
    errors: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    yield errors
    assert errors == []


def data(channel: int, payload: bytes) -> bytes:
    return w.encode(w.DATA, channel, payload)


OPENED_1 = w.encode(w.OPENED, 1)

# (what the relay sends once connection 1 is announced, what the session fails with)
HOSTILE = [
    (data(2, b"x"), "DATA for connection 2, never opened"),
    (data(1, b"x"), "DATA on connection 1 before it was opened"),
    (OPENED_1 + w.ack(1, 1), "ACK of 1 bytes on connection 1"),
    (OPENED_1 + w.HEADER.pack(w.ACK, 1, 4) + b"\0\0\0\0", "ACK of 0 bytes"),
    (OPENED_1 + w.encode(w.EOF, 1) + w.encode(w.EOF, 1), "EOF on connection 1 after its EOF"),
    (OPENED_1 + w.encode(w.EOF, 1) + data(1, b"late"), "DATA on connection 1 after its EOF"),
    (OPENED_1 + OPENED_1, "OPENED for connection 1 twice"),
    (w.encode(w.OPEN, 5), "OPEN sent to the opening end"),
    (w.close(1, 99), "CLOSE of connection 1 for reason 99"),
    (w.encode(w.HELLO, 0, w.PROTOCOL), "a second HELLO"),
    (w.HEADER.pack(42, 1, 0), "unknown frame kind 42"),
    (w.HEADER.pack(w.DATA, 1, 2**32 - 1), "DATA frame of 4294967295 bytes"),
    (w.HEADER.pack(w.DATA, 1, w.MAX_DATA + 1), "DATA frame of 65537 bytes"),
    (w.HEADER.pack(w.PONG, 1, 0), "PONG frame on channel 1"),
    (w.encode(w.EOF, 3), "EOF for connection 3, never opened"),
]


@pytest.mark.parametrize(("frames", "reason"), HOSTILE, ids=[r for _, r in HOSTILE])
async def test_a_bad_frame_from_the_relay_fails_the_session_cleanly(frames, reason):
    opener, peer, server, port = await opener_with_peer()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await peer.expect(w.OPEN)).channel == 1
    await peer.send(frames)
    assert reason in await asyncio.wait_for(opener.ended, 30)
    assert await read_to_end(reader) == b""  # the client's connection is cut too
    assert opener.mux.channels == {}
    writer.close()
    server.close()


@pytest.mark.parametrize(
    ("first", "reason"),
    [
        (data(1, b"x"), "DATA before HELLO"),
        (w.encode(w.PING), "PING before HELLO"),
        (w.encode(w.HELLO, 0, b"devbox-relay/0"), "speaks b'devbox-relay/0'"),
        (b"HTTP/1.1 200 OK\r\n\r\n", "unknown frame kind 72"),
    ],
)
async def test_before_its_hello_the_relay_may_send_nothing_else(first, reason):
    left, right = socket.socketpair()
    opener = await end_on(left, opener=True)
    peer = Peer(*await asyncio.open_connection(sock=right))
    assert (await peer.expect(w.HELLO)).payload == w.PROTOCOL
    await peer.send(first)
    assert reason in await asyncio.wait_for(opener.ended, 30)


async def test_a_flood_past_the_window_of_a_stalled_client_fails_the_session():
    opener, peer, server, port = await opener_with_peer()
    client = socket.create_connection(("127.0.0.1", port))  # it never reads
    assert (await peer.expect(w.OPEN)).channel == 1
    await peer.send(OPENED_1)
    chunk = data(1, b"f" * w.MAX_DATA)
    sent = 0
    # The relay ignores every ACK; once the client's socket is full, the window ends it.
    while not opener.ended.done() and sent < 256 << 20:
        await peer.send(chunk * 16)
        sent += 16 * w.MAX_DATA
    reason = await asyncio.wait_for(opener.ended, 30)
    assert "connection 1 sent beyond its window" in reason
    client.close()
    server.close()


async def test_frames_for_a_connection_this_end_closed_are_ignored():
    opener, peer, server, port = await opener_with_peer()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await peer.expect(w.OPEN)).channel == 1
    await peer.send(OPENED_1)
    sock = writer.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()  # a reset, not a FIN: the opener closes connection 1
    assert await peer.expect(w.CLOSE) == w.Frame(w.CLOSE, 1, bytes([w.RESET]))
    # the relay had not heard yet
    await peer.send(data(1, b"late") + w.ack(1, 100) + w.encode(w.EOF, 1) + w.close(1, w.RESET))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await peer.expect(w.OPEN)).channel == 2  # still serving
    await peer.send(w.encode(w.OPENED, 2) + data(2, b"fresh") + w.encode(w.EOF, 2))
    assert await reader.read() == b"fresh"
    assert not opener.ended.done()
    writer.close()
    server.close()


async def test_a_relay_that_sends_nothing_at_all_is_given_up_on():
    opener, peer, server, _ = await opener_with_peer(ping_every=0.05, silence_limit=0.2)
    assert (await peer.expect(w.PING)).channel == 0  # asked, and never answered
    assert "no word from the other end" in await asyncio.wait_for(opener.ended, 30)
    server.close()


async def test_the_relay_end_answers_pings_and_holds_the_cli_to_increasing_ids():
    target = await asyncio.start_server(lambda r, w_: None, "127.0.0.1", 0)
    port = target.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()

    async def connect(channel: Channel) -> None:
        await loop.create_connection(lambda: channel, "127.0.0.1", port)

    left, right = socket.socketpair()
    acceptor = await end_on(right, opener=False, connect=connect)
    cli = Peer(*await asyncio.open_connection(sock=left))
    await cli.send(w.encode(w.HELLO, 0, w.PROTOCOL))
    assert (await cli.expect(w.HELLO)).payload == w.PROTOCOL
    await cli.send(w.encode(w.PING, 0, b"abc"))
    assert await cli.expect(w.PONG) == w.Frame(w.PONG, 0, b"abc")
    await cli.send(w.encode(w.OPEN, 5))
    assert (await cli.expect(w.OPENED)).channel == 5
    await cli.send(w.encode(w.OPEN, 5))
    assert "OPEN of connection 5 after 5" in await asyncio.wait_for(acceptor.ended, 30)
    target.close()


async def test_the_relay_end_refuses_channels_past_the_limit():
    held = []
    target = await asyncio.start_server(lambda r, w_: held.append(w_), "127.0.0.1", 0)
    port = target.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()

    async def connect(channel: Channel) -> None:
        await loop.create_connection(lambda: channel, "127.0.0.1", port)

    left, right = socket.socketpair()
    acceptor = await end_on(right, opener=False, connect=connect)
    cli = Peer(*await asyncio.open_connection(sock=left))
    await cli.send(w.encode(w.HELLO, 0, w.PROTOCOL))
    await cli.send(b"".join(w.encode(w.OPEN, i) for i in range(1, w.MAX_CHANNELS + 2)))
    assert await cli.expect(w.CLOSE) == w.Frame(w.CLOSE, w.MAX_CHANNELS + 1, bytes([w.BUSY]))
    await until(lambda: len(held) == w.MAX_CHANNELS, "the connections to arrive")
    assert len(acceptor.mux.channels) == w.MAX_CHANNELS
    acceptor.mux.close()
    target.close()
