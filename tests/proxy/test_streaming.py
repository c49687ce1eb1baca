"""Streaming through gateway routes: backpressure, SSE timing, request streaming, WebSocket,
idle timeouts and live reload with a stream in flight."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp import web

from proxy.context import Settings
from tests.proxy.conftest import SECRET_A, TOKEN_A, TOKEN_B, binding, make_config

GW = "/gw/ANTHROPIC_API_KEY"
BEARER_A = {"Authorization": f"Bearer {TOKEN_A}"}


async def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(interval)


async def test_client_that_stops_reading_does_not_grow_proxy_memory(upstream, start_proxy):
    total = 200 * 1024 * 1024
    chunk = b"z" * (64 * 1024)
    sent = {"n": 0}

    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = total
        await resp.prepare(request)
        while sent["n"] < total:
            await resp.write(chunk)  # awaits drain: stalls when the proxy stops reading
            sent["n"] += len(chunk)
        return resp

    up = await upstream({"/big": big})
    proxy = await start_proxy(make_config(binding(up.url)))
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(
        f"GET {GW}/big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN_A}\r\n\r\n".encode()
    )
    got = len(await reader.readexactly(256 * 1024))  # read a little, then stop reading

    # wait for the upstream to stall: its byte count stops moving
    last, still_since = -1, time.monotonic()
    deadline = time.monotonic() + 30
    while time.monotonic() - still_since < 1.0:
        assert time.monotonic() < deadline, "upstream never stalled"
        if sent["n"] != last:
            last, still_since = sent["n"], time.monotonic()
        await asyncio.sleep(0.05)

    # what is in flight is bounded by socket buffers, nowhere near the 200 MB body
    assert sent["n"] - got < 32 * 1024 * 1024, sent["n"]
    # and the proxy's own user-space write buffer toward the client stays small
    buffers = [
        p.transport.get_write_buffer_size()
        for p in proxy.app._server.connections
        if p.transport is not None
    ]
    assert buffers and max(buffers) <= 1024 * 1024, buffers
    writer.close()


async def test_sse_events_pass_one_at_a_time(upstream, start_proxy, client):
    """Each event reaches the client before the upstream sends the next: the upstream waits
    for the client's acknowledgement, so a proxy that held events back (buffering, or
    waiting for more bytes to compress) would stall the stream and fail the test."""
    acked = [asyncio.Event() for _ in range(6)]
    finished = asyncio.Event()

    async def sse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i, ack in enumerate(acked):
            await resp.write(f'event: delta\ndata: {{"i": {i}}}\n\n'.encode())
            await asyncio.wait_for(ack.wait(), 30)  # the handshake
        finished.set()
        return resp

    up = await upstream({"/sse": sse})
    proxy = await start_proxy(make_config(binding(up.url)))
    arrived: list[bytes] = []
    headers = {**BEARER_A, "Accept": "text/event-stream"}
    async with client.get(
        f"{proxy.url}{GW}/sse", headers=headers, skip_auto_headers=("Accept-Encoding",)
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        assert "Content-Encoding" not in resp.headers
        buf = b""
        async for data in resp.content.iter_any():
            buf += data
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                arrived.append(event)
                acked[len(arrived) - 1].set()
    assert finished.is_set()
    assert arrived == [f'event: delta\ndata: {{"i": {i}}}'.encode() for i in range(6)]
    # none asked: identity is said, so the upstream cannot pick a coding (or buffer)
    assert up.requests[0]["headers"]["Accept-Encoding"] == "identity"


async def test_request_body_is_streamed_not_buffered(upstream, start_proxy, client):
    first_arrived = asyncio.Event()
    received: list[bytes] = []

    async def sink(request: web.Request) -> web.Response:
        async for data in request.content.iter_any():
            received.append(data)
            first_arrived.set()
        return web.Response(text=str(sum(map(len, received))))

    async def body():
        yield b"a" * 1000
        # the second part is only sent once the first reached the upstream: a proxy that
        # buffered the whole request body would deadlock here
        await asyncio.wait_for(first_arrived.wait(), 5)
        yield b"b" * 1000

    up = await upstream({"/up": sink})
    proxy = await start_proxy(make_config(binding(up.url)))
    async with client.post(f"{proxy.url}{GW}/up", headers=BEARER_A, data=body()) as resp:
        assert resp.status == 200
        assert await resp.text() == "2000"
    assert proxy.audit_records[-1]["bytes_in"] == 2000


async def test_websocket_echo_through_gateway(upstream, start_proxy, client):
    async def ws_echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("chat",))
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        return ws

    up = await upstream({"/ws": ws_echo})
    proxy = await start_proxy(make_config(binding(up.url)))
    async with client.ws_connect(
        f"{proxy.url}{GW}/ws", headers=BEARER_A, protocols=("chat",)
    ) as ws:
        assert ws.protocol == "chat"
        await ws.send_str("hello")
        assert (await ws.receive(timeout=5)).data == "echo:hello"
        await ws.send_bytes(b"abc")
        assert (await ws.receive(timeout=5)).data == b"cba"
        await ws.send_str(f"reflect {SECRET_A}")
        assert (await ws.receive(timeout=5)).data == "echo:reflect [REDACTED]"
    assert up.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET_A}"
    await wait_until(lambda: any(r["status"] == 101 for r in proxy.audit_records))


async def test_websocket_refused_without_token(upstream, start_proxy, client):
    up = await upstream()
    proxy = await start_proxy(make_config(binding(up.url)))
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect(f"{proxy.url}{GW}/ws")
    assert info.value.status == 401
    assert up.requests == []


def _quiet_stream(first_read: asyncio.Event, quiet: float | asyncio.Event):
    """An SSE handler: one event, then silence for `quiet` seconds (or until that event is
    set), counted from when the client has read the first event, then a second event."""

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: 1\n\n")
        await first_read.wait()
        if isinstance(quiet, asyncio.Event):
            await quiet.wait()
        else:
            await asyncio.sleep(quiet)
        await resp.write(b"data: 2\n\n")
        return resp

    return handler


async def test_a_quiet_stream_outlives_aiohttps_default_timeouts(
    upstream, start_proxy, client, monkeypatch
):
    """An LLM that thinks for minutes sends nothing meanwhile. aiohttp's defaults would cut
    such a stream (total=300 s); the proxy's session must not fall back on them. Here the
    defaults are shrunk to 0.1 s so that a session using them would cut this stream."""
    monkeypatch.setattr(
        aiohttp.client, "DEFAULT_TIMEOUT", aiohttp.ClientTimeout(total=0.1, sock_read=0.1)
    )
    first_read = asyncio.Event()
    up = await upstream({"/think": _quiet_stream(first_read, quiet=0.5)})
    proxy = await start_proxy(make_config(binding(up.url)), Settings(idle_timeout=60))
    async with client.get(f"{proxy.url}{GW}/think", headers=BEARER_A) as resp:
        assert resp.status == 200
        assert await resp.content.readuntil(b"\n\n") == b"data: 1\n\n"
        first_read.set()
        quiet_from = time.monotonic()
        assert await resp.content.readuntil(b"\n\n") == b"data: 2\n\n"
        assert time.monotonic() - quiet_from >= 0.5  # the silence outlasted the defaults


async def test_a_stream_quiet_past_the_idle_timeout_is_cut(upstream, start_proxy, client):
    """The other side of the same knob: silence longer than idle_timeout ends the stream."""
    first_read, test_over = asyncio.Event(), asyncio.Event()
    up = await upstream({"/think": _quiet_stream(first_read, quiet=test_over)})
    proxy = await start_proxy(make_config(binding(up.url)), Settings(idle_timeout=0.3))
    try:
        async with client.get(f"{proxy.url}{GW}/think", headers=BEARER_A) as resp:
            assert await resp.content.readuntil(b"\n\n") == b"data: 1\n\n"
            first_read.set()
            quiet_from = time.monotonic()
            with pytest.raises(aiohttp.ClientPayloadError):
                await asyncio.wait_for(resp.content.read(), 30)
            assert time.monotonic() - quiet_from >= 0.3
    finally:
        test_over.set()  # let the upstream's handler end, so its server shuts down at once


def test_the_production_idle_timeout_is_at_least_ten_minutes():
    assert Settings().idle_timeout >= 600


async def test_live_reload_keeps_a_stream_in_flight(upstream, start_proxy, client):
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"part1;")
        started.set()
        await release.wait()
        await resp.write(b"part2")
        return resp

    up = await upstream({"/slow": slow})
    proxy = await start_proxy(make_config(binding(up.url)))
    async with client.get(f"{proxy.url}{GW}/slow", headers=BEARER_A) as resp:
        await asyncio.wait_for(started.wait(), 5)
        proxy.reload(make_config(binding(up.url, token=TOKEN_B)))  # token rotated
        release.set()
        assert await resp.read() == b"part1;part2"
    async with client.get(f"{proxy.url}{GW}/x", headers=BEARER_A) as resp:
        assert resp.status == 401
    async with client.get(f"{proxy.url}{GW}/x", headers={"x-api-key": TOKEN_B}) as resp:
        assert resp.status == 200
