"""Limits against a hostile client: head size, slowloris, connection cap, clean errors."""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy.context import Settings
from tests.proxy.conftest import TOKEN_A, binding, make_config

GW = "/gw/ANTHROPIC_API_KEY"


async def exchange(proxy, raw: bytes, *, timeout: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), timeout)
    except ConnectionError:
        return b""
    finally:
        writer.close()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def test_one_oversized_header_is_431(http_upstream, start_proxy):
    proxy = await start_proxy(make_config(binding(http_upstream.url)))
    big = "v" * 20000
    answer = await exchange(
        proxy, f"GET {GW}/x HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n".encode()
    )
    assert status_of(answer) == 431
    assert big[:100].encode() not in answer  # the error never echoes the request
    assert http_upstream.requests == []


async def test_many_headers_over_the_total_cap_are_431(http_upstream, start_proxy):
    proxy = await start_proxy(
        make_config(binding(http_upstream.url)), Settings(max_head_bytes=16 * 1024)
    )
    headers = "".join(f"X-H{i}: {'v' * 1000}\r\n" for i in range(20))  # 20 KB, each small
    raw = f"GET {GW}/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN_A}\r\n{headers}\r\n"
    answer = await exchange(proxy, raw.encode())
    assert status_of(answer) == 431
    assert http_upstream.requests == []


async def test_unfinished_head_past_the_cap_is_cut(start_proxy):
    proxy = await start_proxy(make_config(), Settings(max_head_bytes=8 * 1024))
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(b"GET /x HTTP/1.1\r\nHost: x\r\n")
    try:
        for i in range(40):  # 40 x 500 bytes of headers in separate writes, never finished
            writer.write(f"X-{i}: {'a' * 490}\r\n".encode())
            await writer.drain()
            await asyncio.sleep(0.005)
        answer = await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        answer = b""  # the proxy closed with our bytes unread: the kernel sends a reset
    finally:
        writer.close()
    # cut: either the 431 arrived before the close, or the reset came first
    assert answer == b"" or status_of(answer) == 431
    assert proxy.app._server.connections == []


async def test_slowloris_is_cut_after_header_timeout(start_proxy):
    """The deadline covers the whole head: a byte every 50 ms (each well inside the 0.5 s
    timeout) does not keep the connection, which is cut long before the 6 s trickle ends."""
    proxy = await start_proxy(make_config(), Settings(header_timeout=0.5))
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    head = b"GET /_devbox/health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    started = time.monotonic()
    closed_at = None
    for byte in head:  # one byte every 50 ms: would take 6 s to finish
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            closed_at = time.monotonic()
            break
        if reader.at_eof() or (await _closed(reader)):
            closed_at = time.monotonic()
            break
        await asyncio.sleep(0.05)
    writer.close()
    assert closed_at is not None, "the proxy kept a slowloris connection open"
    # not before the timeout (a timer never fires early; 0.1 s for connect/accept ordering)
    assert closed_at - started > 0.4


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(1), 0.001)
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return data == b""


async def test_connection_that_sends_nothing_is_closed(start_proxy):
    proxy = await start_proxy(make_config(), Settings(header_timeout=0.3))
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 60) == b""  # 60 s: a failure, not a bound
    assert time.monotonic() - started > 0.2  # cut by the timeout, not at once
    writer.close()


async def test_slow_but_complete_request_is_served(http_upstream, start_proxy):
    """The header timeout covers the head only: a slow body under way is not cut."""
    proxy = await start_proxy(make_config(binding(http_upstream.url)), Settings(header_timeout=0.3))
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(
        f"POST {GW}/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN_A}\r\n"
        "Content-Length: 4\r\nConnection: close\r\n\r\nab".encode()
    )
    await asyncio.sleep(0.6)  # longer than header_timeout, on purpose: the body is slow
    writer.write(b"cd")
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert status_of(answer) == 200
    assert b'"body": "abcd"' in answer


async def wait_for_connections(proxy, count: int) -> None:
    """Until the server has registered exactly `count` connections (or 30 s: a failure)."""
    async with asyncio.timeout(30):
        while len(proxy.app._server.connections) != count:
            await asyncio.sleep(0.01)


HEALTH = b"GET /_devbox/health HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_connection_cap_refuses_extra_connections(start_proxy):
    proxy = await start_proxy(make_config(), Settings(max_connections=3))
    held = [await asyncio.open_connection(proxy.host, proxy.port) for _ in range(3)]
    await wait_for_connections(proxy, 3)
    answer = await exchange(proxy, HEALTH)
    assert status_of(answer) == 503
    assert answer.endswith(b"too many connections")
    # the refused one was never counted, and the held ones are still served
    assert len(proxy.app._server.connections) == 3
    reader, writer = held[0]
    writer.write(HEALTH)
    assert status_of(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)) == 200
    for _, writer in held:
        writer.close()
    await wait_for_connections(proxy, 0)
    assert status_of(await exchange(proxy, HEALTH)) == 200


@pytest.mark.parametrize(
    "raw",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
        b"GET /x HTTP/9.9\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"GET /x HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET " + b"/a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
async def test_malformed_requests_get_short_errors_never_a_traceback(raw, start_proxy):
    proxy = await start_proxy(make_config(binding("http://127.0.0.1:9")))
    answer = await exchange(proxy, raw)
    assert 400 <= status_of(answer) < 500
    body = answer.split(b"\r\n\r\n", 1)[1]
    assert len(body) < 100
    assert b"Traceback" not in answer and b"aiohttp" not in body


async def test_unconfigured_proxy_fails_closed(start_proxy, client):
    proxy = await start_proxy()
    async with client.get(f"{proxy.url}{GW}/x", headers={"x-api-key": TOKEN_A}) as resp:
        assert resp.status == 503
        assert "devbox repair" in await resp.text()  # the way out, for whoever reads it
    answer = await exchange(proxy, b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert status_of(answer) == 503
    answer = await exchange(proxy, b"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(answer) == 503


@pytest.mark.parametrize("path", ["/admin", "/_devbox/config", "/gwx/ANTHROPIC_API_KEY/x"])
async def test_unknown_origin_form_path_is_404(http_upstream, start_proxy, client, path):
    proxy = await start_proxy(make_config(binding(http_upstream.url)))
    async with client.get(f"{proxy.url}{path}", headers={"x-api-key": TOKEN_A}) as resp:
        assert resp.status == 404
        assert await resp.text() == "not found\n"
    assert http_upstream.requests == []  # nothing reached the gateway's upstream
