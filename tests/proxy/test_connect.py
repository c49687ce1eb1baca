"""CONNECT tunnels (HTTPS_PROXY clients): real TLS end to end, half-close, backpressure,
idle timeout, and the refusals."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest

from proxy.context import Settings
from tests.proxy.conftest import make_config
from tests.proxy.forward_support import (
    LOOPBACK_CIDR,
    NullStream,
    connect_request,
    loopback_resolver,
    raw_exchange,
    read_response,
    unanswered_port,
)

MB = 1024 * 1024


@pytest.fixture
async def tunnel_proxy(start_proxy):
    """Loopback admitted; `localhost` (a name the test CA's certificate carries) resolves there."""
    return await start_proxy(
        make_config(policy=LOOPBACK_CIDR), resolver=loopback_resolver("localhost")
    )


@pytest.fixture
async def tcp_upstream():
    """Factory for raw TCP servers on 127.0.0.1: `await tcp_upstream(handler) -> port`."""
    servers: list[asyncio.Server] = []

    async def make(handler) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return server.sockets[0].getsockname()[1]

    yield make
    for server in servers:
        server.close()
        await server.wait_closed()


async def open_tunnel(proxy_port: int, authority: str, early: bytes = b""):
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    writer.write(connect_request(authority) + early)
    await writer.drain()
    resp = await read_response(reader)
    return resp, reader, writer


async def test_curl_through_the_tunnel_verifies_the_upstream_tls(
    tunnel_proxy, https_upstream, ca, tmp_path
):
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    proc = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "--noproxy",
        "",
        "-x",
        tunnel_proxy.url,
        "--cacert",
        str(ca_file),
        f"https://localhost:{https_upstream.port}/over/tls?secret=1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    assert b'"path": "/over/tls"' in out
    [record] = tunnel_proxy.audit_records
    assert record["kind"] == "connect"
    assert (record["host"], record["port"]) == ("localhost", https_upstream.port)
    assert (record["status"], record["decision"]) == (200, "allow")
    assert record["bytes_in"] > 500 and record["bytes_out"] > 200  # a TLS handshake each way
    assert record["path"] is None


async def test_aiohttp_https_through_the_tunnel(tunnel_proxy, https_upstream, ca, client):
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    url = f"https://localhost:{https_upstream.port}/x"
    for _ in range(2):
        async with client.post(url, data=b"y" * 100_000, proxy=tunnel_proxy.url, ssl=ctx) as r:
            assert r.status == 200
            body = await r.json()
        assert body["body"] == "y" * 100_000
    assert all(r["status"] == 200 for r in tunnel_proxy.audit_records)


async def test_tls_to_the_wrong_name_fails_in_the_client_not_the_proxy(
    start_proxy, https_upstream, ca, client
):
    # The tunnel carries TLS untouched: the client sees the upstream's real certificate.
    proxy = await start_proxy(make_config(policy=LOOPBACK_CIDR), resolver=loopback_resolver())
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    url = f"https://api.allowed.test:{https_upstream.port}/x"
    with pytest.raises(Exception) as info:
        async with client.get(url, proxy=proxy.url, ssl=ctx):
            pass
    assert "certificate" in str(info.value).lower() or "SSL" in type(info.value).__name__


async def test_half_close_lets_the_answer_come_back(tunnel_proxy, tcp_upstream):
    async def count_then_answer(reader, writer):
        data = await reader.read()  # until the client's EOF
        writer.write(b"got %d bytes" % len(data))
        await writer.drain()
        writer.close()

    port = await tcp_upstream(count_then_answer)
    resp, reader, writer = await open_tunnel(tunnel_proxy.port, f"localhost:{port}")
    assert resp.status == 200
    # binary, not text: a text first line is held until its line end (tunnel_guard.py)
    writer.write(b"\x00" + b"z" * 299_999)
    writer.write_eof()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer == b"got 300000 bytes"


async def test_a_client_that_sends_and_closes_delivers_every_byte(tunnel_proxy, tcp_upstream):
    received = asyncio.get_running_loop().create_future()

    async def count(reader, writer):
        total = 0
        while chunk := await reader.read(1 << 16):
            total += len(chunk)
        received.set_result(total)
        writer.close()

    port = await tcp_upstream(count)
    resp, _reader, writer = await open_tunnel(tunnel_proxy.port, f"localhost:{port}")
    assert resp.status == 200
    writer.write(b"\x00" + b"q" * (8 * MB - 1))  # binary: passes the tunnel guard at once
    writer.close()  # a full close right behind the data, no half-close
    assert await asyncio.wait_for(received, 20) == 8 * MB

    async def until_audited():
        while not tunnel_proxy.audit_records:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(until_audited(), 10)
    assert tunnel_proxy.audit_records[0]["bytes_out"] == 8 * MB


async def test_bytes_sent_with_the_connect_head_are_not_lost(tunnel_proxy, tcp_upstream):
    got = asyncio.get_running_loop().create_future()

    async def first_bytes(reader, writer):
        got.set_result(await reader.readexactly(11))
        writer.close()

    port = await tcp_upstream(first_bytes)
    resp, _reader, writer = await open_tunnel(
        tunnel_proxy.port, f"localhost:{port}", early=b"early\nhello"
    )
    assert resp.status == 200
    assert await asyncio.wait_for(got, 10) == b"early\nhello"
    writer.close()


async def test_server_speaks_first_after_the_200(tunnel_proxy, tcp_upstream):
    async def banner(reader, writer):
        writer.write(b"SSH-2.0-banner\r\n")
        await writer.drain()
        await reader.read()
        writer.close()

    port = await tcp_upstream(banner)
    reader, writer = await asyncio.open_connection("127.0.0.1", tunnel_proxy.port)
    writer.write(connect_request(f"localhost:{port}"))
    data = b""
    async with asyncio.timeout(10):
        while b"banner\r\n" not in data:
            chunk = await reader.read(4096)
            assert chunk
            data += chunk
    writer.close()
    assert data == b"HTTP/1.1 200 Connection Established\r\n\r\nSSH-2.0-banner\r\n"


async def test_a_client_that_stops_reading_stalls_the_upstream(tunnel_proxy, tcp_upstream):
    written = 0
    stalled = asyncio.get_running_loop().create_future()

    async def firehose(reader, writer):
        nonlocal written
        chunk = b"f" * (256 * 1024)
        try:
            while written < 256 * MB:
                writer.write(chunk)
                try:
                    await asyncio.wait_for(writer.drain(), 1.0)
                except TimeoutError:
                    stalled.set_result(written)
                    break
                written += len(chunk)
        finally:
            writer.close()

    port = await tcp_upstream(firehose)
    resp, _reader, writer = await open_tunnel(tunnel_proxy.port, f"localhost:{port}")
    assert resp.status == 200
    # read nothing: the kernel buffers and the proxy's bounded write buffer fill, then the
    # proxy stops reading the upstream, whose own writes stall
    total = await asyncio.wait_for(stalled, 60)
    assert total < 64 * MB
    writer.close()


async def test_idle_tunnel_is_closed(start_proxy, tcp_upstream):
    upstream_saw_eof = asyncio.get_running_loop().create_future()

    async def silent(reader, writer):
        await reader.read()
        upstream_saw_eof.set_result(True)
        writer.close()

    proxy = await start_proxy(
        make_config(policy=LOOPBACK_CIDR),
        Settings(idle_timeout=0.3),
        resolver=loopback_resolver("localhost"),
    )
    port = await tcp_upstream(silent)
    resp, reader, writer = await open_tunnel(proxy.port, f"localhost:{port}")
    assert resp.status == 200
    assert await asyncio.wait_for(reader.read(), 10) == b""
    assert await asyncio.wait_for(upstream_saw_eof, 10)
    writer.close()
    [record] = proxy.audit_records
    assert record["status"] == 200


async def test_client_disconnect_closes_the_upstream(tunnel_proxy, tcp_upstream):
    upstream_saw_eof = asyncio.get_running_loop().create_future()

    async def wait_eof(reader, writer):
        await reader.read()
        upstream_saw_eof.set_result(True)
        writer.close()

    port = await tcp_upstream(wait_eof)
    resp, _reader, writer = await open_tunnel(tunnel_proxy.port, f"localhost:{port}")
    assert resp.status == 200
    writer.transport.abort()
    assert await asyncio.wait_for(upstream_saw_eof, 10)

    async def until_audited():
        while not tunnel_proxy.audit_records:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(until_audited(), 10)
    assert tunnel_proxy.audit_records[0]["kind"] == "connect"


async def test_connect_refused_gets_502(tunnel_proxy):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    resp = await raw_exchange(tunnel_proxy.port, connect_request(f"localhost:{closed_port}"))
    assert resp.status == 502
    assert resp.headers.get("connection", "").lower() == "close"
    assert tunnel_proxy.audit_records[0]["status"] == 502


async def test_connect_timeout_gets_504(start_proxy):
    with unanswered_port() as port:
        proxy = await start_proxy(
            make_config(policy=LOOPBACK_CIDR),
            Settings(connect_timeout=0.3),
            resolver=loopback_resolver("localhost"),
        )
        resp = await raw_exchange(proxy.port, connect_request(f"localhost:{port}"))
    assert resp.status == 504
    assert proxy.audit_records[0]["status"] == 504


@pytest.mark.parametrize(
    "authority",
    [
        "localhost",
        "localhost:",
        "localhost:0",
        "localhost:65536",
        "localhost:-1",
        ":443",
        "user@localhost:443",
        "[::1:443",
        "local host:443",
        "a..b:443",
    ],
)
async def test_malformed_connect_targets_get_400(tunnel_proxy, authority):
    resp = await raw_exchange(tunnel_proxy.port, connect_request(authority))
    assert resp.status == 400, resp.body
    assert b"Traceback" not in resp.body
    assert tunnel_proxy.ctx.resolve.calls == []


async def test_unconfigured_proxy_refuses_connect(start_proxy):
    proxy = await start_proxy(None, resolver=loopback_resolver("localhost"))
    resp = await raw_exchange(proxy.port, connect_request("localhost:443"))
    assert resp.status == 503
    assert proxy.ctx.resolve.calls == []


def test_tunnel_under_uvloop():
    """The proxy image runs on uvloop, whose transports differ from asyncio's (no
    asyncio.Transport subclass, their own set_protocol): run a tunnel on one."""
    uvloop = pytest.importorskip("uvloop")
    from proxy.app import ProxyApp
    from proxy.audit import AuditLog

    async def scenario() -> bytes:
        async def count_then_answer(reader, writer):
            data = await reader.read()
            writer.write(b"got %d bytes" % len(data))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(count_then_answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        app = ProxyApp(resolve=loopback_resolver("localhost"), audit_log=AuditLog(NullStream()))
        app.apply(make_config(policy=LOOPBACK_CIDR), persist=False)
        await app.start("127.0.0.1", 0)
        try:
            assert app.port is not None
            resp, reader, writer = await open_tunnel(app.port, f"localhost:{port}", b"\x00arly")
            assert resp.status == 200
            writer.write(b"z" * 200_000)
            writer.write_eof()
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return answer
        finally:
            await app.close()
            server.close()
            await server.wait_closed()

    assert uvloop.run(scenario()) == b"got 200005 bytes"
