"""Helpers for the host-gateway tests: a client that trusts the devbox CA, and raw TLS inside
a CONNECT (where a client library would tidy a hostile request up before the proxy saw it).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from proxy.config import Authority
from tests.proxy.forward_support import RawResponse, connect_request, read_response


async def read_answer(reader: asyncio.StreamReader, *, timeout: float = 10.0) -> RawResponse:
    """One response of a keep-alive connection: its body framed by Content-Length or chunked
    (a 1xx, 204 or 304 has none), so the next response can be read after it."""
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = b""
        if status < 200 or status in (204, 304):
            pass
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                body += await reader.readexactly(size)
                await reader.readexactly(2)
            await reader.readuntil(b"\r\n")  # no trailers
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:
            body = await reader.read()
    return RawResponse(status=status, headers=headers, body=body, head=head)


def trusting(ca: Authority) -> ssl.SSLContext:
    """A client context that trusts the devbox CA alone (as the box's bundle does, minus the
    system CAs)."""
    return ssl.create_default_context(cadata=ca.cert)


@asynccontextmanager
async def tls_inside(
    proxy,
    authority: str,
    ca: Authority,
    *,
    sni: str | None = "localhost",
    early: bytes = b"",
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A CONNECT to `authority`, then TLS inside it naming `sni` (None: no server name)."""
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    try:
        writer.write(connect_request(authority) + early)
        await writer.drain()
        answer = await read_response(reader)
        assert answer.status == 200, answer
        ctx = trusting(ca)
        if sni is None:
            ctx.check_hostname = False
        await writer.start_tls(ctx, server_hostname=sni)
        yield reader, writer
    finally:
        writer.close()


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, answers: int = 1
) -> list[RawResponse]:
    writer.write(data)
    await writer.drain()
    return [await read_answer(reader) for _ in range(answers)]


def request(
    target: str, host: str | None, *lines: str, method: str = "GET", version: str = "1.1"
) -> bytes:
    head = [f"{method} {target} HTTP/{version}"]
    if host is not None:
        head.append(f"Host: {host}")
    head += lines
    return ("\r\n".join(head) + "\r\n\r\n").encode()


async def connection_record(proxy, host: str = "localhost", *, timeout: float = 10.0) -> dict:
    """The CONNECT's audit record, written when its connection has ended."""
    async with asyncio.timeout(timeout):
        while True:
            found = [r for r in proxy.audit_records if r["kind"] == "connect" and r["host"] == host]
            if found:
                return found[-1]
            await asyncio.sleep(0.01)
