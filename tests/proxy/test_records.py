"""One audit record type written one way (proxy/audit.py), and one shape of error answer
(proxy/errors.py), whichever route a request took."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from proxy.audit import FIELDS, Record, recorded
from proxy.context import ProxyContext, Settings
from proxy.errors import ProxyError, raw_response
from tests.proxy.conftest import TOKEN_A, binding, make_config
from tests.proxy.forward_support import (
    ALLOWED_NAME,
    LOOPBACK_CIDR,
    connect_request,
    get_request,
    loopback_resolver,
    raw_exchange,
)


def _written(body) -> dict:
    lines: list[dict] = []
    ctx = ProxyContext(state=None, settings=Settings(), audit=lines.append)
    record = Record(kind="forward", method="GET", started=time.monotonic())
    body(ctx, record)
    [line] = lines
    return line


def _raise(exc: BaseException, status: int = 0):
    def body(ctx, record):
        record.status = status
        with pytest.raises(type(exc)), recorded(ctx, record):
            raise exc

    return body


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (_raise(ProxyError(403, "denied")), 403),
        (_raise(TimeoutError()), 504),
        (_raise(RuntimeError("bug")), 500),
        (_raise(asyncio.CancelledError()), 499),  # the client went away
        (_raise(RuntimeError("cut mid-body"), status=200), 200),  # the 200 had gone out
    ],
)
def test_a_record_is_written_once_with_the_status_the_client_saw(body, status):
    line = _written(body)
    assert list(line) == list(FIELDS)
    assert (line["status"], line["devbox"]) == (status, None)


async def test_every_kind_writes_the_same_fields_in_order(start_proxy, http_upstream):
    config = make_config(binding(http_upstream.url), policy=LOOPBACK_CIDR)
    proxy = await start_proxy(config, resolver=loopback_resolver())
    authority = f"{ALLOWED_NAME}:{http_upstream.port}"
    gateway = (
        "GET /gw/ANTHROPIC_API_KEY/v1?q=secret HTTP/1.1\r\nHost: p\r\n"
        f"Authorization: Bearer {TOKEN_A}\r\nConnection: close\r\n\r\n"
    )
    assert (await raw_exchange(proxy.port, gateway.encode())).status == 200
    forward = get_request(f"http://{authority}/v1?q=secret", authority)
    assert (await raw_exchange(proxy.port, forward)).status == 200
    refused = connect_request("denied.example:443")
    assert (await raw_exchange(proxy.port, refused)).status == 403
    lines = proxy.app.audit_sink.lines
    records = [json.loads(line) for line in lines]
    assert [r["kind"] for r in records] == ["gateway", "forward", "connect"]
    assert all(list(r) == list(FIELDS) for r in records)
    assert all(line.endswith("\n") and ", " not in line for line in lines)  # compact JSON lines
    assert [r["path"] for r in records] == ["/v1", "/v1", None]
    assert "secret" not in "".join(lines)


@pytest.mark.parametrize(
    ("status", "reason"), [(431, "request header fields too large"), (503, "too many connections")]
)
def test_a_refusal_before_any_request_is_a_complete_framed_answer(status, reason):
    head, _, body = raw_response(status, reason).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {status} ")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    assert fields == {
        "Content-Type": "text/plain",
        "Cache-Control": "no-store",
        "Content-Length": str(len(body)),
        "Connection": "close",
    }
    assert body == reason.encode() + b"\n"
