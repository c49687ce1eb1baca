"""An unconfigured proxy (a restarted proxy container: its tmpfs config is gone) fails
closed: every kind of request gets 503 or a 4xx, nothing is resolved, and nothing reaches
any upstream. The would-be upstream below is a raw TCP listener that counts every
connection, so a request that slipped through in any form would show."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from tests.proxy.forward_support import loopback_resolver, raw_exchange
from tests.proxy.test_runtime import ROOT, get, wait_for

TOKEN = "gwt_" + "t" * 43


@pytest.fixture
async def counting_upstream():
    """A TCP listener on 127.0.0.1: `.accepted` counts connections, `.data` what they sent."""
    accepted: list[bytes] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(await reader.read(65536))
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    server.accepted = accepted  # type: ignore[attr-defined]
    server.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    yield server
    server.close()
    await server.wait_closed()


def requests_to(port: int, proxy_port: int) -> list[tuple[str, bytes]]:
    up = f"api.allowed.test:{port}"
    own = f"proxy:{proxy_port}"
    return [
        ("forward GET", f"GET http://{up}/ HTTP/1.1\r\nHost: {up}\r\n\r\n".encode()),
        ("forward to an IP", f"GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode()),
        ("forward POST, chunked", f"POST http://{up}/ HTTP/1.1\r\nHost: {up}\r\n"
         "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".encode()),
        ("forward with Proxy-Authorization", f"GET http://{up}/ HTTP/1.1\r\nHost: {up}\r\n"
         "Proxy-Authorization: Basic dTpw\r\n\r\n".encode()),
        ("CONNECT a name", f"CONNECT {up} HTTP/1.1\r\nHost: {up}\r\n\r\n".encode()),
        ("CONNECT an IP", f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode()),
        ("gateway", f"POST /gw/KEY/v1/messages HTTP/1.1\r\nHost: proxy\r\n"
         f"Authorization: Bearer {TOKEN}\r\nContent-Length: 2\r\n\r\n{{}}".encode()),
        ("gateway, absolute form", f"GET http://{own}/gw/KEY/x HTTP/1.1\r\nHost: {own}\r\n"
         f"x-api-key: {TOKEN}\r\n\r\n".encode()),
        ("gateway WebSocket upgrade", f"GET /gw/KEY/ws HTTP/1.1\r\nHost: proxy\r\n"
         f"Authorization: Bearer {TOKEN}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
         "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
         .encode()),
    ]  # fmt: skip


async def test_no_request_of_any_kind_passes_an_unconfigured_proxy(start_proxy, counting_upstream):
    proxy = await start_proxy(None, resolver=loopback_resolver(), self_names=frozenset({"proxy"}))
    for what, raw in requests_to(counting_upstream.port, proxy.port):
        resp = await raw_exchange(proxy.port, raw)
        assert resp.status == 503, (what, resp.status, resp.body)
        assert b"devbox repair" in resp.body, what
    assert counting_upstream.accepted == []  # not one connection to the upstream
    assert proxy.ctx.resolve.calls == []  # nor a DNS lookup for it


async def test_pipelined_requests_after_a_refusal_are_refused_too(start_proxy, counting_upstream):
    proxy = await start_proxy(None, resolver=loopback_resolver())
    up = f"api.allowed.test:{counting_upstream.port}"
    one = f"GET http://{up}/a HTTP/1.1\r\nHost: {up}\r\n\r\n".encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(one + one + f"CONNECT {up} HTTP/1.1\r\nHost: {up}\r\n\r\n".encode())
        await writer.drain()
        statuses = []
        for _ in range(3):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            statuses.append(int(head.split(b" ", 2)[1]))
            length = [h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")]
            if length:
                await reader.readexactly(int(length[0].split(b":")[1]))
            if b"close" in head.lower():
                break
        assert statuses and set(statuses) == {503}
        rest = await asyncio.wait_for(reader.read(), 10)  # then the connection ends
        assert b"200" not in rest
    finally:
        writer.close()
    assert counting_upstream.accepted == []


async def test_health_says_unconfigured(start_proxy):
    proxy = await start_proxy(None)
    resp = await raw_exchange(proxy.port, b"GET /_devbox/health HTTP/1.1\r\nHost: p\r\n\r\n")
    assert (resp.status, resp.body) == (503, b'{"status": "unconfigured"}')


def test_a_proxy_started_on_a_damaged_config_file_fails_closed(tmp_path):
    """A torn or hostile file where the config should be: the server starts unconfigured
    (503, `devbox repair` or the next command pushes a good one), never half-configured."""
    import socket as _socket

    with _socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "config.json"
    config.write_text('{"version": 1, "devbox": "x", "gateways": [{"prefix": "K"')
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "--listen", f"127.0.0.1:{port}", "--config", str(config),
         "--admin-socket", str(tmp_path / "admin.sock")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        status, body = wait_for(lambda: get(f"http://127.0.0.1:{port}/_devbox/health"))
        assert (status, body) == (503, {"status": "unconfigured"})
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=20)
    assert b"config file not loaded" in err
