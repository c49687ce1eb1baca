"""Fixtures for the host-gateway tests: the devbox CA, a host gateway for a real TLS
upstream on localhost, and the proxy intercepting it. Every test here runs on asyncio's
loop and on uvloop (the proxy image's): TLS termination takes over connections below
aiohttp, where the two loops differ."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import pytest_asyncio
import trustme
import uvloop

from proxy.config import GatewayBinding
from tests.proxy.conftest import TOKEN_A, Upstream, binding, make_config


@pytest.fixture(scope="session")
def devbox_ca():
    """The devbox's interception CA of these tests: it may vouch for localhost only."""
    from proxy.certs import new_authority

    return new_authority("devbox test interception CA", ["localhost"])


def host_binding(
    upstream: Upstream, ca: trustme.CA, *, prefix: str = "GH_TOKEN", token: str = TOKEN_A, **kw
) -> GatewayBinding:
    """A host gateway for `localhost:<upstream port>` (no endpoint), trusting the test CA."""
    return dataclasses.replace(
        binding(None, prefix=prefix, token=token, ca_cert=ca.cert_pem.bytes().decode(), **kw),
        hosts=(f"localhost:{upstream.port}",),
    )


@pytest_asyncio.fixture
async def intercept_proxy(start_proxy, https_upstream, ca, devbox_ca):
    """A proxy intercepting `localhost:<https_upstream port>` for a bearer gateway."""
    config = dataclasses.replace(make_config(host_binding(https_upstream, ca)), ca=devbox_ca)
    proxy = await start_proxy(config)
    proxy.upstream = https_upstream  # type: ignore[attr-defined]
    return proxy


def pytest_asyncio_loop_factories(config, item):
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
