"""Helpers for the forward-side tests: the DNS input, policies, and raw HTTP over a socket.

Raw sockets are used where a client library would tidy the request up (normalize an IP
spelling, fix a Host header, refuse a malformed target) before the proxy ever saw it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from proxy.config import PolicySpec

ALLOWED_NAME = "api.allowed.test"
# the test names, admitted by name; the allow-cidr lets their loopback addresses in (an
# allow-cidr alone admits no name)
LOOPBACK_CIDR = PolicySpec(
    name="loopback-ok", allow=(ALLOWED_NAME, "localhost"), allow_cidr=("127.0.0.0/8",)
)
DENY_ALL = PolicySpec(name="deny-all")


def policy(
    *,
    allow: Sequence[str] = (),
    deny: Sequence[str] = (),
    cidr: Sequence[str] = (),
    allow_all: bool = False,
    name: str = "test-policy",
) -> PolicySpec:
    return PolicySpec(
        name=name,
        allow=tuple(allow),
        deny=tuple(deny),
        allow_cidr=tuple(cidr),
        allow_all=allow_all,
    )


class NullStream:
    """An audit log stream that drops every line (for a ProxyApp built outside the fixture)."""

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


@dataclass
class FakeResolver:
    """The DNS answers a test controls. A name maps to one answer, or to successive answers
    (a rebinding resolver); unknown names do not resolve."""

    answers: dict[str, list[str] | list[list[str]]]
    calls: list[str] = field(default_factory=list)

    async def __call__(self, host: str, port: int) -> list[ipaddress._BaseAddress]:
        self.calls.append(host)
        answer = self.answers.get(host)
        if not answer:
            raise OSError(f"{host}: name does not resolve")
        if isinstance(answer[0], list):
            seen = self.calls.count(host)
            answer = answer[min(seen, len(answer)) - 1]
        return [ipaddress.ip_address(a) for a in answer]  # type: ignore[arg-type]


def loopback_resolver(*names: str) -> FakeResolver:
    return FakeResolver({name: ["127.0.0.1"] for name in (names or (ALLOWED_NAME,))})


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    head: bytes


async def read_response(reader: asyncio.StreamReader, *, timeout: float = 10.0) -> RawResponse:
    """One response: the head, then a Content-Length body (or everything up to EOF)."""
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif status in (100, 200) and not headers:
            body = b""  # an interim response or an established tunnel: no body
        else:
            body = await reader.read()
    return RawResponse(status=status, headers=headers, body=body, head=head)


async def raw_exchange(port: int, data: bytes, *, timeout: float = 10.0) -> RawResponse:
    """Send `data` to the proxy on a fresh connection and read one response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await read_response(reader, timeout=timeout)
    finally:
        writer.close()


def get_request(target: str, host: str | None) -> bytes:
    host_line = f"Host: {host}\r\n" if host is not None else ""
    return f"GET {target} HTTP/1.1\r\n{host_line}Connection: close\r\n\r\n".encode()


def connect_request(authority: str) -> bytes:
    return f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode()


@contextlib.contextmanager
def unanswered_port() -> Iterator[int]:
    """A loopback port whose connects never complete: a listener with a full accept queue
    drops further SYNs, so a connect times out without a packet leaving the machine."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    try:
        yield port
    finally:
        filler.close()
        listener.close()
