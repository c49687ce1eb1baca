"""Gateway calls sent through HTTP_PROXY to the proxy itself are served, not refused.

SDKs that honour HTTP_PROXY but not NO_PROXY send `GET http://proxy:3128/gw/...` in absolute
form; the forward side would refuse that as a request to the proxy's own address.
"""

from __future__ import annotations

import ipaddress

from tests.proxy.conftest import SECRET_A, TOKEN_A, binding, make_config

GW = "/gw/ANTHROPIC_API_KEY"


async def test_absolute_form_to_self_name_reaches_gateway(http_upstream, start_proxy, client):
    proxy = await start_proxy(make_config(binding(http_upstream.url)), self_names={"proxy"})
    async with client.get(
        f"http://proxy:{proxy.port}{GW}/v1/models?x=1",
        proxy=proxy.url,
        headers={"Authorization": f"Bearer {TOKEN_A}"},
    ) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["raw_path"] == "/v1/models?x=1"
    assert http_upstream.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET_A}"
    assert proxy.audit_records[-1]["kind"] == "gateway"


async def test_absolute_form_to_own_address_reaches_gateway(http_upstream, start_proxy, client):
    proxy = await start_proxy(
        make_config(binding(http_upstream.url)),
        own_addresses=frozenset({ipaddress.ip_address("127.0.0.1")}),
    )
    async with client.get(f"http://127.0.0.1:{proxy.port}/_devbox/health", proxy=proxy.url) as resp:
        assert resp.status == 200
        assert (await resp.json())["status"] == "ok"


async def test_self_route_still_needs_the_token(http_upstream, start_proxy, client):
    proxy = await start_proxy(make_config(binding(http_upstream.url)), self_names={"proxy"})
    async with client.get(f"http://proxy:{proxy.port}{GW}/v1/models", proxy=proxy.url) as resp:
        assert resp.status == 401
    assert http_upstream.requests == []


async def test_other_port_on_self_name_is_not_self_routed(http_upstream, start_proxy, client):
    proxy = await start_proxy(make_config(binding(http_upstream.url)), self_names={"proxy"})
    async with client.get(
        f"http://proxy:{proxy.port + 1}{GW}/v1/models",
        proxy=proxy.url,
        headers={"Authorization": f"Bearer {TOKEN_A}"},
    ) as resp:
        assert resp.status in (403, 502)
    assert http_upstream.requests == []
