"""Gateway routes: token check, credential swap, headers, redirects, TLS verification."""

from __future__ import annotations

from tests.proxy.conftest import SECRET_A, TOKEN_A, binding, make_config


async def test_bearer_swap_smoke(http_upstream, start_proxy, client):
    proxy = await start_proxy(make_config(binding(http_upstream.url)))
    async with client.get(
        f"{proxy.url}/gw/ANTHROPIC_API_KEY/v1/messages?x=1",
        headers={"Authorization": f"Bearer {TOKEN_A}"},
    ) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert dict(body["headers"])["Authorization"] == "Bearer [REDACTED]"
    assert http_upstream.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET_A}"
    assert body["path"] == "/v1/messages"
    assert body["query"] == "x=1"
