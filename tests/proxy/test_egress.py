"""The network policy on the forward side, end to end through a running proxy.

Refusal tests point at addresses the proxy must never connect to (loopback, metadata,
RFC 1918 ...): the proxy refuses before it opens any connection, so no packet leaves.
Positive tests use loopback upstreams under an allow-cidr for 127.0.0.0/8.
"""

from __future__ import annotations

import ipaddress
import time

import pytest

from proxy import audit, egress
from proxy.context import ProxyContext, Settings, State
from proxy.policy import Policy
from proxy.resolve import local_addresses
from tests.proxy.conftest import make_config
from tests.proxy.forward_support import (
    ALLOWED_NAME,
    DENY_ALL,
    LOOPBACK_CIDR,
    FakeResolver,
    connect_request,
    get_request,
    loopback_resolver,
    policy,
    raw_exchange,
)

SPELLINGS_OF_127_0_0_1 = [
    "127.0.0.1",
    "127.1",
    "127.0.1",
    "0x7f.0.0.1",
    "0x7f.1",
    "0x7f000001",
    "2130706433",
    "0177.0.0.1",
    "0177.0.0.01",
    "127.0.0.1.",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[0:0:0:0:0:ffff:127.0.0.1]",
]


def bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


async def forward_get(proxy, host: str, port: int, path: str = "/"):
    authority = f"{bracket(host)}:{port}"
    return await raw_exchange(proxy.port, get_request(f"http://{authority}{path}", authority))


async def connect(proxy, host: str, port: int):
    return await raw_exchange(proxy.port, connect_request(f"{bracket(host)}:{port}"))


@pytest.mark.parametrize("spelling", SPELLINGS_OF_127_0_0_1)
async def test_every_spelling_of_loopback_is_refused(start_proxy, http_upstream, spelling):
    proxy = await start_proxy(make_config(policy=policy(allow=["*.allowed.test"])))
    for resp in (
        await forward_get(proxy, spelling, http_upstream.port),
        await connect(proxy, spelling, http_upstream.port),
    ):
        assert resp.status == 403, spelling
        assert b"rule private:127.0.0.0/8" in resp.body
    assert http_upstream.requests == []
    assert [r["rule"] for r in proxy.audit_records] == ["private:127.0.0.0/8"] * 2
    assert {r["host"] for r in proxy.audit_records} == {"127.0.0.1"}


@pytest.mark.parametrize("spelling", SPELLINGS_OF_127_0_0_1)
async def test_every_spelling_reaches_loopback_under_an_allow_cidr(
    start_proxy, http_upstream, spelling
):
    proxy = await start_proxy(make_config(policy=LOOPBACK_CIDR))
    resp = await forward_get(proxy, spelling, http_upstream.port, "/hi")
    assert resp.status == 200
    assert http_upstream.requests[0]["path"] == "/hi"
    tunnel = await connect(proxy, spelling, http_upstream.port)
    assert tunnel.status == 200


@pytest.mark.parametrize(
    ("answer", "rule"),
    [
        (["169.254.169.254"], "private:169.254.0.0/16"),
        (["127.0.0.1"], "private:127.0.0.0/8"),
        (["10.0.0.5"], "private:10.0.0.0/8"),
        (["192.168.1.1"], "private:192.168.0.0/16"),
        (["172.20.0.3"], "private:172.16.0.0/12"),
        (["100.64.0.1"], "private:100.64.0.0/10"),
        (["0.0.0.0"], "own-address"),
        (["224.0.0.1"], "private:224.0.0.0/4"),
        (["255.255.255.255"], "private:255.255.255.255/32"),
        (["::ffff:127.0.0.1"], "private:127.0.0.0/8"),
        (["::ffff:169.254.169.254"], "private:169.254.0.0/16"),
        (["64:ff9b::a9fe:a9fe"], "private:169.254.0.0/16"),
        (["::1"], "private:::1/128"),
        (["fe80::1"], "private:fe80::/10"),
        (["fd00::5"], "private:fc00::/7"),
        (["93.184.216.34", "10.0.0.5"], "private:10.0.0.0/8"),
    ],
)
async def test_names_resolving_to_refused_ranges(start_proxy, answer, rule):
    resolver = FakeResolver({"sneaky.allowed.test": answer})
    proxy = await start_proxy(
        make_config(policy=policy(allow=["*.allowed.test"])), resolver=resolver
    )
    for resp in (
        await forward_get(proxy, "sneaky.allowed.test", 80),
        await connect(proxy, "sneaky.allowed.test", 443),
    ):
        assert resp.status == 403
        assert f"(rule {rule})".encode() in resp.body
    assert [r["decision"] for r in proxy.audit_records] == ["deny", "deny"]
    assert [r["rule"] for r in proxy.audit_records] == [rule, rule]


async def test_no_policy_still_refuses_private_destinations(start_proxy):
    resolver = FakeResolver(
        {"metadata.test": ["169.254.169.254"], "mixed.test": ["93.184.216.34", "127.0.0.1"]}
    )
    proxy = await start_proxy(make_config(policy=None), resolver=resolver)
    for host in ("metadata.test", "mixed.test", "169.254.169.254", "10.1.2.3", "[::1]"):
        assert (await forward_get(proxy, host, 80)).status == 403
        assert (await connect(proxy, host, 443)).status == 403
    assert all(r["rule"].startswith("private:") for r in proxy.audit_records)


async def test_no_policy_admits_a_public_destination():
    # Checked through the admission step itself: connecting would send packets off-machine.
    resolver = FakeResolver({"example.test": ["93.184.216.34", "2606:2800:220:1::1"]})
    ctx = ProxyContext(
        state=State(config=make_config(policy=None), policy=None, gateways={}),
        settings=Settings(),
        resolve=resolver,
    )
    record = audit.Record(kind="connect", method="CONNECT", started=time.monotonic())
    target = egress.make_target("Example.TEST.", 443)
    addresses = await egress.admit(ctx, target, record)
    assert [str(a) for a in addresses] == ["93.184.216.34", "2606:2800:220:1::1"]
    assert (record.decision, record.rule) == ("allow", "no-policy")
    assert resolver.calls == ["example.test"]


async def test_the_proxys_own_address_is_refused(start_proxy, http_upstream):
    own = local_addresses(["127.0.0.1"])
    candidates = [a for a in own if a.version == 4 and not a.is_loopback]
    if not candidates:
        pytest.skip("this host has no non-loopback IPv4 address")
    mine = candidates[0]
    proxy = await start_proxy(
        make_config(policy=policy(cidr=[f"{mine}/32", "127.0.0.0/8"])), own_addresses=own
    )
    for resp in (
        await forward_get(proxy, str(mine), http_upstream.port),
        await connect(proxy, str(mine), http_upstream.port),
        await connect(proxy, "127.0.0.1", proxy.port),  # the proxy's own listener
    ):
        assert resp.status == 403
        assert b"(rule own-address)" in resp.body
    assert http_upstream.requests == []


async def test_deny_wins_over_allow(start_proxy, http_upstream):
    resolver = FakeResolver({"api.allowed.test": ["127.0.0.1"], "evil.allowed.test": ["127.0.0.1"]})
    spec = policy(allow=["*.allowed.test"], deny=["evil.allowed.test"], cidr=["127.0.0.0/8"])
    proxy = await start_proxy(make_config(policy=spec), resolver=resolver)
    assert (await forward_get(proxy, "api.allowed.test", http_upstream.port)).status == 200
    denied = await forward_get(proxy, "evil.allowed.test", http_upstream.port)
    assert denied.status == 403
    assert b"(rule deny:evil.allowed.test)" in denied.body
    assert (await connect(proxy, "EVIL.allowed.test.", 443)).status == 403
    # a denied name is refused on its name: it is never even looked up
    assert resolver.calls.count("evil.allowed.test") == 0
    assert len(http_upstream.requests) == 1


async def test_a_name_outside_the_policy_is_never_looked_up(start_proxy):
    resolver = loopback_resolver("exfil.attacker.test")
    proxy = await start_proxy(make_config(policy=DENY_ALL), resolver=resolver)
    assert (await forward_get(proxy, "exfil.attacker.test", 80)).status == 403
    assert (await connect(proxy, "secret-data.exfil.attacker.test", 443)).status == 403
    assert resolver.calls == []
    assert [r["rule"] for r in proxy.audit_records] == ["no-match", "no-match"]


async def test_an_allow_cidr_does_not_make_refused_names_resolve(start_proxy):
    # issue 7 item 6: with any allow-cidr the proxy used to resolve every refused name, so
    # <data>.attacker.example left through DNS although the request was refused
    resolver = FakeResolver({"s3cr3t.attacker.test": ["93.184.216.34"]})
    spec = policy(allow=[ALLOWED_NAME], cidr=["0.0.0.0/0", "::/0"])
    proxy = await start_proxy(make_config(policy=spec), resolver=resolver)
    assert (await forward_get(proxy, "s3cr3t.attacker.test", 80)).status == 403
    assert (await connect(proxy, "s3cr3t.attacker.test", 443)).status == 403
    assert (await connect(proxy, "more.s3cr3t.attacker.test", 443)).status == 403
    assert resolver.calls == []
    assert [r["rule"] for r in proxy.audit_records] == ["no-match"] * 3


UNSPECIFIED = ["0.0.0.0", "0", "0x0", "0.0", "0.0.0.0.", "000.0.0.0", "0.1.2.3", "[::]",
               "[::0]", "[0:0:0:0:0:0:0:0]", "[::ffff:0.0.0.0]", "[::ffff:0:0]"]  # fmt: skip


@pytest.mark.parametrize("spelling", UNSPECIFIED)
async def test_the_unspecified_address_never_reaches_the_proxy(start_proxy, spelling):
    # 0.0.0.0 and :: connect to the local host: the proxy itself, like loopback
    spec = policy(allow_all=True, cidr=["0.0.0.0/0", "::/0"])
    proxy = await start_proxy(make_config(policy=spec), resolver=FakeResolver({}))
    for resp in (
        await forward_get(proxy, spelling, proxy.port),
        await connect(proxy, spelling, proxy.port),
    ):
        assert resp.status == 403, resp.body
        assert b"(rule own-address)" in resp.body
    # a name resolving there: the same
    resolver = FakeResolver({"zero.test": ["0.0.0.0"], "zero6.test": ["::"]})
    proxy = await start_proxy(make_config(policy=spec), resolver=resolver)
    for host in ("zero.test", "zero6.test"):
        resp = await connect(proxy, host, proxy.port)
        assert resp.status == 403 and b"(rule own-address)" in resp.body


@pytest.mark.parametrize(
    ("host", "rule"),
    [
        ("168.63.129.16", "private:168.63.129.16/32"),
        ("0xa83f8110", "private:168.63.129.16/32"),
        ("[::ffff:168.63.129.16]", "private:168.63.129.16/32"),
        ("169.254.169.254", "private:169.254.0.0/16"),
        ("169.254.170.2", "private:169.254.0.0/16"),
        ("100.100.100.200", "private:100.64.0.0/10"),
        ("192.0.0.192", "private:192.0.0.0/24"),
        ("[fd00:ec2::254]", "private:fc00::/7"),
        ("metadata.google.internal", "metadata:metadata.google.internal"),
        ("azure-wire.test", "private:168.63.129.16/32"),  # a name resolving there
    ],
)
async def test_cloud_host_endpoints_are_refused_under_broad_rules(start_proxy, host, rule):
    resolver = FakeResolver(
        {"azure-wire.test": ["168.63.129.16"], "metadata.google.internal": ["169.254.169.254"]}
    )
    spec = policy(allow_all=True, cidr=["0.0.0.0/0", "::/0", "169.254.0.0/16", "fc00::/7"])
    proxy = await start_proxy(make_config(policy=spec), resolver=resolver)
    for resp in (await forward_get(proxy, host, 80), await connect(proxy, host, 443)):
        assert resp.status == 403, resp.body
        assert f"(rule {rule})".encode() in resp.body
    assert "metadata.google.internal" not in resolver.calls


async def test_an_allowed_name_does_not_open_private_ranges(start_proxy, http_upstream):
    # allow by name, no allow-cidr: the name is fine, its loopback address is not
    proxy = await start_proxy(
        make_config(policy=policy(allow=[ALLOWED_NAME])), resolver=loopback_resolver()
    )
    resp = await forward_get(proxy, ALLOWED_NAME, http_upstream.port)
    assert resp.status == 403
    assert b"private:127.0.0.0/8" in resp.body
    assert http_upstream.requests == []


async def test_dns_rebinding_gets_one_lookup_per_request(start_proxy, http_upstream, client):
    # First answer loopback (admitted by the cidr), every later one the metadata address.
    resolver = FakeResolver({ALLOWED_NAME: [["127.0.0.1"], ["169.254.169.254"]]})
    proxy = await start_proxy(make_config(policy=LOOPBACK_CIDR), resolver=resolver)
    url = f"http://{ALLOWED_NAME}:{http_upstream.port}/first"
    async with client.get(url, proxy=proxy.url) as resp:
        assert resp.status == 200
    assert resolver.calls == [ALLOWED_NAME]
    assert len(http_upstream.requests) == 1
    # the next request asks again and gets the rebound answer: refused, nothing sent
    async with client.get(url, proxy=proxy.url) as resp:
        assert resp.status == 403
    assert resolver.calls == [ALLOWED_NAME, ALLOWED_NAME]
    assert len(http_upstream.requests) == 1


async def test_dns_rebinding_on_connect(start_proxy, http_upstream):
    resolver = FakeResolver({ALLOWED_NAME: [["127.0.0.1"], ["10.0.0.5"]]})
    proxy = await start_proxy(make_config(policy=LOOPBACK_CIDR), resolver=resolver)
    tunnel = await connect(proxy, ALLOWED_NAME, http_upstream.port)
    assert tunnel.status == 200
    assert resolver.calls == [ALLOWED_NAME]
    assert (await connect(proxy, ALLOWED_NAME, http_upstream.port)).status == 403
    assert resolver.calls == [ALLOWED_NAME, ALLOWED_NAME]


async def test_refusal_names_the_rule(start_proxy):
    proxy = await start_proxy(make_config(policy=DENY_ALL), resolver=loopback_resolver())
    resp = await forward_get(proxy, "blocked.example.test", 80)
    assert resp.status == 403
    assert resp.headers["content-type"].startswith("text/plain")
    assert resp.body.startswith(b"denied by policy: ")
    assert b"(rule no-match)" in resp.body
    assert b"deny-all" in resp.body  # the policy's name, so the agent knows which one


async def test_audit_lines_carry_no_query_string(start_proxy, http_upstream, client):
    proxy = await start_proxy(make_config(policy=LOOPBACK_CIDR), resolver=loopback_resolver())
    url = f"http://{ALLOWED_NAME}:{http_upstream.port}/search?api_key=hunter2&q=x#frag"
    async with client.get(url, proxy=proxy.url) as resp:
        assert resp.status == 200
    denied = "http://blocked.test/p?api_key=hunter3"
    await raw_exchange(proxy.port, get_request(denied, "blocked.test"))
    lines = "".join(proxy.app.audit_sink.lines)
    assert "hunter2" not in lines and "hunter3" not in lines and "api_key" not in lines
    assert [r["path"] for r in proxy.audit_records] == ["/search", "/p"]


async def test_live_reload_changes_the_next_decision(start_proxy, http_upstream):
    proxy = await start_proxy(make_config(policy=LOOPBACK_CIDR), resolver=loopback_resolver())
    assert (await forward_get(proxy, ALLOWED_NAME, http_upstream.port)).status == 200
    proxy.reload(make_config(policy=DENY_ALL))
    assert (await forward_get(proxy, ALLOWED_NAME, http_upstream.port)).status == 403


def test_local_addresses_include_interfaces_and_listen_address():
    found = local_addresses(["192.0.2.77", "0.0.0.0", "[::]"])
    assert ipaddress.ip_address("127.0.0.1") in found
    assert ipaddress.ip_address("192.0.2.77") in found
    assert not any(a.is_unspecified for a in found)


def test_policy_compiles_for_these_tests():
    # the fixtures' policies are valid (a typo would make every test here pass vacuously)
    for spec in (LOOPBACK_CIDR, DENY_ALL, policy(allow=["*.allowed.test"], deny=["x.test"])):
        Policy.compile(spec)
