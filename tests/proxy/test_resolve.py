"""The real resolver (proxy/resolve.py), without the fake the forward tests use: answers of
the system's own getaddrinfo, de-duplicated, capped, with IPv6 scope ids dropped."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from proxy.resolve import MAX_ADDRESSES, addresses_of, resolve
from tests.proxy.conftest import make_config
from tests.proxy.forward_support import get_request, policy, raw_exchange


def infos(host: str) -> list[tuple]:
    return socket.getaddrinfo(host, 80, type=socket.SOCK_STREAM)


async def test_localhost_resolves_to_loopback_once_each():
    found = await resolve("localhost", 80)
    assert found and all(a.is_loopback for a in found)
    assert len(found) == len(set(found))


async def test_a_scope_id_is_dropped():
    # Python's getaddrinfo reports a scope as sockaddr[3]; other builds and resolvers put it
    # in the address text ("fe80::1%eth0"): both come back as the bare address
    try:
        scoped = await resolve("fe80::1%lo", 80)
    except OSError:
        pytest.skip("this host has no interface named lo")
    assert scoped == [ipaddress.ip_address("fe80::1")]
    v6 = socket.AF_INET6, socket.SOCK_STREAM, 6, ""
    answers = [(*v6, ("fe80::1%eth0", 80, 0, 2)), (*v6, ("fe80::1%eth1", 80, 0, 3))]
    assert addresses_of(answers) == [ipaddress.ip_address("fe80::1")]


def test_duplicates_are_dropped_in_answer_order():
    answers = infos("127.0.0.1") + infos("::1") + infos("127.0.0.1") + infos("::1")
    assert addresses_of(answers) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]


def test_at_most_max_addresses():
    answers = [info for i in range(1, 41) for info in infos(f"10.0.0.{i}") * 2]
    found = addresses_of(answers)
    assert len(found) == MAX_ADDRESSES
    assert found == [ipaddress.ip_address(f"10.0.0.{i}") for i in range(1, MAX_ADDRESSES + 1)]


async def test_a_name_that_does_not_resolve_raises_oserror():
    with pytest.raises(OSError):
        await resolve("does-not-exist.invalid", 80)
    with pytest.raises(OSError):
        await resolve("a" * 64 + ".example", 80)  # a label the idna codec refuses


async def test_forward_to_localhost_through_the_real_resolver(start_proxy, http_upstream):
    spec = policy(allow=["localhost"], cidr=["127.0.0.0/8", "::1/128"])
    proxy = await start_proxy(make_config(policy=spec))  # no fake: the system resolver
    assert proxy.ctx.resolve is None
    authority = f"localhost:{http_upstream.port}"
    resp = await raw_exchange(proxy.port, get_request(f"http://{authority}/real", authority))
    assert resp.status == 200
    assert http_upstream.requests[0]["path"] == "/real"
    assert proxy.audit_records[0]["rule"] == "allow:localhost"
