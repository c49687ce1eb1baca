"""Requests inside intercepted connections: the credential as each auth mechanism sends it,
a request without the token, tokens anywhere else, redaction on the way back (bodies,
gzip, WebSocket), redirects, the audit records, and the one place a request is decided."""

from __future__ import annotations

import base64
import dataclasses
import gzip

import aiohttp
import pytest
from aiohttp import web

from proxy import intercepted
from proxy.config import Auth, Header
from proxy.policy import Decision
from tests.proxy.conftest import SECRET_A, TOKEN_A, TOKEN_B, binding, make_config
from tests.proxy.intercept.conftest import host_binding
from tests.proxy.intercept.support import trusting


@pytest.fixture
def host_proxy(start_proxy, https_upstream, ca, devbox_ca):
    """`await host_proxy(**binding_fields)` -> a proxy intercepting the TLS upstream with a
    gateway of those fields (plus a second, endpoint-only gateway with TOKEN_B)."""

    async def make(**fields):
        host = host_binding(https_upstream, ca, **fields)
        other = binding("http://127.0.0.1:9", prefix="OTHER", token=TOKEN_B)
        proxy = await start_proxy(dataclasses.replace(make_config(host, other), ca=devbox_ca))
        proxy.upstream = https_upstream
        return proxy

    return make


async def fetch(proxy, devbox_ca, path="/x", *, method="GET", **kw):
    url = f"https://localhost:{proxy.upstream.port}{path}"
    async with (
        aiohttp.ClientSession(trust_env=False, auto_decompress=False) as session,
        session.request(method, url, proxy=proxy.url, ssl=trusting(devbox_ca), **kw) as resp,
    ):
        return resp.status, resp.headers, await resp.read()


def seen(proxy, i: int = -1) -> dict:
    return proxy.upstream.requests[i]["headers"]


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


async def test_basic_auth_as_git_sends_it(host_proxy, devbox_ca):
    proxy = await host_proxy(auth=Auth("basic"), credential="git:real-password")
    status, _, _ = await fetch(
        proxy, devbox_ca, headers={"Authorization": basic(f"x-access-token:{TOKEN_A}")}
    )
    assert status == 200
    assert seen(proxy)["Authorization"] == basic("git:real-password")


async def test_the_gateways_own_header_and_custom_headers(host_proxy, devbox_ca):
    proxy = await host_proxy(
        auth=Auth("header", "PRIVATE-TOKEN"),
        headers=(Header("x-team", "agents"), Header("x-org-key", "sk-org-secret", secret=True)),
    )
    await fetch(proxy, devbox_ca, headers={"PRIVATE-TOKEN": TOKEN_A})
    got = seen(proxy)
    assert got["PRIVATE-TOKEN"] == SECRET_A
    assert (got["x-team"], got["x-org-key"]) == ("agents", "sk-org-secret")
    # without the token: none of the gateway's headers
    await fetch(proxy, devbox_ca)
    assert not {"private-token", "x-team", "x-org-key"} & {k.lower() for k in seen(proxy)}


async def test_query_auth(host_proxy, devbox_ca):
    proxy = await host_proxy(auth=Auth("query", "key"))
    await fetch(proxy, devbox_ca, "/x?key=mine&a=1", headers={"x-api-key": TOKEN_A})
    assert proxy.upstream.requests[-1]["query"] == f"a=1&key={SECRET_A}"
    await fetch(proxy, devbox_ca, "/x?key=mine&a=1")
    assert proxy.upstream.requests[-1]["query"] == "key=mine&a=1"


async def test_without_the_token_the_request_goes_as_it_came(host_proxy, devbox_ca):
    proxy = await host_proxy()
    status, _, _ = await fetch(proxy, devbox_ca, headers={"Authorization": "Bearer my-own"})
    assert status == 200
    assert seen(proxy)["Authorization"] == "Bearer my-own"
    record = [r for r in proxy.audit_records if r["kind"] == "intercept"][-1]
    assert (record["credential"], record["decision"], record["rule"]) == (False, "allow", "gateway")


async def test_tokens_never_go_upstream_wherever_they_are_put(host_proxy, devbox_ca):
    proxy = await host_proxy()
    headers = {
        "Authorization": f"Bearer {TOKEN_A}",
        "Cookie": f"a={TOKEN_A}; b={TOKEN_B}",
        "X-Hidden": basic(f"u:{TOKEN_B}"),  # base64 outside Authorization: not looked into
        "Referer": f"https://x/?t={TOKEN_B}",
    }
    await fetch(proxy, devbox_ca, f"/x?a={TOKEN_A}&b={TOKEN_B}&c=1", headers=headers)
    request = proxy.upstream.requests[-1]
    assert request["query"] == "c=1"
    assert not {"cookie", "referer"} & {k.lower() for k in request["headers"]}
    assert TOKEN_A not in repr(request) and TOKEN_B not in repr(request)
    status, _, body = await fetch(proxy, devbox_ca, f"/v1/{TOKEN_B}")
    assert (status, body) == (400, b"a gateway token in the path is never sent upstream\n")


async def test_a_reflected_credential_is_redacted_also_gzipped(host_proxy, devbox_ca):
    proxy = await host_proxy()

    async def reflect(request: web.Request) -> web.Response:
        data = gzip.compress(f"you sent {request.headers['Authorization']}".encode())
        return web.Response(
            body=data,
            headers={"Content-Encoding": "gzip", "X-Echo": request.headers["Authorization"]},
        )

    proxy.upstream.routes["/reflect"] = reflect
    status, headers, body = await fetch(
        proxy, devbox_ca, "/reflect", headers={"Authorization": f"Bearer {TOKEN_A}"}
    )
    assert status == 200
    assert body == b"you sent Bearer [REDACTED]"  # decoded to redact, sent on as identity
    assert headers["X-Echo"] == "Bearer [REDACTED]"


async def test_a_redirect_comes_back_and_is_never_followed(host_proxy, devbox_ca, upstream):
    proxy = await host_proxy()
    elsewhere = await upstream()

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{elsewhere.url}/stolen")

    proxy.upstream.routes["/moved"] = moved
    status, headers, _ = await fetch(
        proxy, devbox_ca, "/moved", headers={"Authorization": f"Bearer {TOKEN_A}"},
        allow_redirects=False,
    )  # fmt: skip
    assert status == 302 and headers["Location"].endswith("/stolen")
    assert elsewhere.requests == []


async def test_a_websocket_through_the_intercepted_host_is_redacted(host_proxy, devbox_ca):
    proxy = await host_proxy()

    async def echo_ws(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(f"hello {request.headers.get('Authorization')}")
        async for msg in ws:
            await ws.send_str(f"echo {msg.data}")
        return ws

    proxy.upstream.routes["/ws"] = echo_ws
    url = f"wss://localhost:{proxy.upstream.port}/ws"
    async with (
        aiohttp.ClientSession(trust_env=False) as session,
        session.ws_connect(
            url, proxy=proxy.url, ssl=trusting(devbox_ca),
            headers={"Authorization": f"Bearer {TOKEN_A}"},
        ) as ws,
    ):  # fmt: skip
        assert (await ws.receive_str()) == "hello Bearer [REDACTED]"
        await ws.send_str("ping")
        assert (await ws.receive_str()) == "echo ping"


async def test_every_request_is_decided_in_one_place(host_proxy, devbox_ca, monkeypatch):
    # where request rules (methods, paths) come in: nothing goes upstream that it refuses
    proxy = await host_proxy()
    asked = []

    def decide(state, binding, method, host, port, path):
        asked.append((method, host, port, path))
        allowed = method == "GET"
        return Decision(allowed, "test rule", "allow:test" if allowed else "deny:test")

    monkeypatch.setattr(intercepted, "decide_request", decide)
    port = proxy.upstream.port
    assert (await fetch(proxy, devbox_ca, "/repo/%61bc?x=1"))[0] == 200
    status, _, body = await fetch(proxy, devbox_ca, "/repo/push", method="POST", data=b"x")
    assert status == 403 and b"deny:test" in body
    assert asked == [
        ("GET", "localhost", port, "/repo/abc"),
        ("POST", "localhost", port, "/repo/push"),
    ]
    assert [r["path"] for r in proxy.upstream.requests] == ["/repo/abc"]
    records = [r for r in proxy.audit_records if r["kind"] == "intercept"]
    assert [(r["status"], r["decision"], r["rule"]) for r in records] == [
        (200, "allow", "allow:test"), (403, "deny", "deny:test"),
    ]  # fmt: skip


async def test_the_route_of_a_host_only_gateway_is_404(host_proxy, client):
    proxy = await host_proxy()
    headers = {"Authorization": f"Bearer {TOKEN_A}"}
    async with client.get(f"{proxy.url}/gw/GH_TOKEN/x", headers=headers) as resp:
        assert resp.status == 404
        assert await resp.text() == "gateway GH_TOKEN has no endpoint: it only intercepts hosts\n"


async def test_audit_records_hold_no_query_token_or_credential(host_proxy, devbox_ca):
    proxy = await host_proxy()
    await fetch(proxy, devbox_ca, f"/p?secret=1&t={TOKEN_A}", headers={"x-api-key": TOKEN_A})
    lines = "".join(proxy.app.audit_sink.lines)
    assert TOKEN_A not in lines and SECRET_A not in lines and "secret=1" not in lines
    record = [r for r in proxy.audit_records if r["kind"] == "intercept"][-1]
    assert record["path"] == "/p" and record["bytes_out"] > 0
