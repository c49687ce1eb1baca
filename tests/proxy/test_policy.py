"""The policy rules as tables: one row per case, each asserting the decision and its rule."""

from __future__ import annotations

import ipaddress

import pytest

from proxy.config import PolicySpec
from proxy.policy import (
    Decision,
    Policy,
    PolicyError,
    decide,
    normalize_host,
    parse_ip_literal,
    special_range,
    validate_cidr,
    validate_host_pattern,
)

ip = ipaddress.ip_address
PUBLIC = ip("93.184.216.34")
PUBLIC6 = ip("2606:2800:220:1:248:1893:25c8:1946")


def compile_(allow=(), deny=(), allow_cidr=(), allow_all=False, name="p") -> Policy:
    return Policy.compile(
        PolicySpec(
            name=name,
            allow=tuple(allow),
            deny=tuple(deny),
            allow_cidr=tuple(allow_cidr),
            allow_all=allow_all,
        )
    )


def compile_rules(rules: dict | None) -> Policy | None:
    """A table row's rules compiled, or None for a row without a policy."""
    return None if rules is None else compile_(**rules)


def row_ids(rows: list[tuple]) -> list[str]:
    """Test ids from each row's host, in ASCII: mutmut passes the escaped id of a non-ASCII
    one back to pytest, which then finds no such test and the whole mutation run stops."""
    return [
        f"{i}-{str(row[1]).encode('ascii', 'xmlcharrefreplace').decode()[:40] or 'empty'}"
        for i, row in enumerate(rows)
    ]


# Rows hold the rules, compiled inside the test: a policy compiled at import would be built
# before mutmut switches a mutant on, so no mutant of the compile path could ever be caught.
ANTHROPIC = dict(allow=["*.anthropic.com", "anthropic.com"], name="anthropic-only")

# (rules for compile_, or None: no policy; host, port, addresses, allowed, rule)
DECISIONS = [
    # exact names
    (dict(allow=["example.com"]), "example.com", 443, [PUBLIC], True, "allow:example.com"),
    (dict(allow=["example.com"]), "www.example.com", 443, [PUBLIC], False, "no-match"),
    (dict(allow=["example.com"]), "example.com.evil.net", 443, [], False, "no-match"),
    (dict(allow=["example.com"]), "notexample.com", 443, [], False, "no-match"),
    # wildcard depth and apex
    (ANTHROPIC, "api.anthropic.com", 443, [PUBLIC], True, "allow:*.anthropic.com"),
    (ANTHROPIC, "a.b.c.anthropic.com", 443, [], True, "allow:*.anthropic.com"),
    (ANTHROPIC, "anthropic.com", 443, [], True, "allow:anthropic.com"),
    (dict(allow=["*.example.com"]), "example.com", 443, [], False, "no-match"),
    (dict(allow=["*.example.com"]), "a.b.example.com", 80, [], True, "allow:*.example.com"),
    (dict(allow=["*.example.com"]), "evilexample.com", 443, [], False, "no-match"),
    (ANTHROPIC, "anthropic.com.evil.com", 443, [], False, "no-match"),
    (ANTHROPIC, "evil.com", 443, [], False, "no-match"),
    # case and trailing dot, in the host and in the rule
    (ANTHROPIC, "API.Anthropic.COM", 443, [], True, "allow:*.anthropic.com"),
    (ANTHROPIC, "api.anthropic.com.", 443, [], True, "allow:*.anthropic.com"),
    (ANTHROPIC, "anthropic.com.", 443, [], True, "allow:anthropic.com"),
    (dict(allow=["Example.COM."]), "example.com", 443, [], True, "allow:example.com"),
    # IDN in the rule and in the host, either spelling
    (
        dict(allow=["bücher.example"]),
        "xn--bcher-kva.example",
        443,
        [],
        True,
        "allow:xn--bcher-kva.example",
    ),
    (
        dict(allow=["xn--bcher-kva.example"]),
        "BÜCHER.example",
        443,
        [],
        True,
        "allow:xn--bcher-kva.example",
    ),
    (
        dict(allow=["*.bücher.example"]),
        "shop.bücher.example",
        443,
        [],
        True,
        "allow:*.xn--bcher-kva.example",
    ),
    (dict(allow=["example.com"]), "example。com", 443, [], True, "allow:example.com"),
    # ports
    (dict(allow=["example.com:443"]), "example.com", 443, [], True, "allow:example.com:443"),
    (dict(allow=["example.com:443"]), "example.com", 80, [], False, "no-match"),
    (dict(allow=["example.com"]), "example.com", 8080, [], True, "allow:example.com"),
    (
        dict(allow=["*.example.com:8443"]),
        "a.example.com",
        8443,
        [],
        True,
        "allow:*.example.com:8443",
    ),
    (dict(allow=["*.example.com:8443"]), "a.example.com", 443, [], False, "no-match"),
    (
        dict(allow=["example.com:80", "example.com:443"]),
        "example.com",
        443,
        [],
        True,
        "allow:example.com:443",
    ),
    (
        dict(allow=["example.com"], deny=["example.com:22"]),
        "example.com",
        22,
        [],
        False,
        "deny:example.com:22",
    ),
    (
        dict(allow=["example.com"], deny=["example.com:22"]),
        "example.com",
        443,
        [],
        True,
        "allow:example.com",
    ),
    # deny over allow, over wildcard allow, over allow-all and over allow-cidr
    (
        dict(allow=["*.example.com"], deny=["bad.example.com"]),
        "bad.example.com",
        443,
        [],
        False,
        "deny:bad.example.com",
    ),
    (
        dict(allow=["*.example.com"], deny=["bad.example.com"]),
        "ok.example.com",
        443,
        [],
        True,
        "allow:*.example.com",
    ),
    (
        dict(allow=["bad.example.com"], deny=["*.example.com"]),
        "bad.example.com",
        443,
        [],
        False,
        "deny:*.example.com",
    ),
    (
        dict(allow_all=True, deny=["*.evil.com"]),
        "x.evil.com",
        443,
        [PUBLIC],
        False,
        "deny:*.evil.com",
    ),
    (
        dict(allow_all=True, deny=["evil.com"]),
        "evil.com",
        443,
        [PUBLIC],
        False,
        "deny:evil.com",
    ),
    (
        dict(allow_cidr=["93.184.0.0/16"], deny=["evil.com"]),
        "evil.com",
        443,
        [PUBLIC],
        False,
        "deny:evil.com",
    ),
    (
        dict(allow_cidr=["10.0.0.0/8"], deny=["10.1.2.3"]),
        "10.1.2.3",
        80,
        [],
        False,
        "deny:10.1.2.3",
    ),
    # an IP deny rule also applies to the addresses a name resolves to
    (
        dict(allow_all=True, deny=["93.184.216.34"]),
        "example.com",
        443,
        [PUBLIC],
        False,
        "deny:93.184.216.34",
    ),
    # allow-all
    (dict(allow_all=True), "anything.example", 443, [PUBLIC], True, "allow-all"),
    (dict(allow_all=True), "anything.example", 443, [], True, "allow-all"),
    (dict(allow_all=True), "8.8.8.8", 53, [], True, "allow-all"),
    (dict(allow_all=True), "internal.corp", 443, [ip("10.0.0.7")], False, "private:10.0.0.0/8"),
    # an empty policy denies everything
    (dict(), "example.com", 443, [PUBLIC], False, "no-match"),
    # allow-cidr: private ranges become reachable for IP literals; a name needs an allow
    # rule of its own (it is never admitted, so never resolved, on an allow-cidr alone)
    (dict(allow_cidr=["10.0.0.0/8"]), "10.1.2.3", 80, [], True, "allow-cidr:10.0.0.0/8"),
    (dict(allow_cidr=["10.0.0.0/8"]), "db.internal", 5432, [ip("10.9.9.9")], False, "no-match"),
    (
        dict(allow=["db.internal"], allow_cidr=["10.0.0.0/8"]),
        "db.internal",
        5432,
        [ip("10.9.9.9")],
        True,
        "allow:db.internal",
    ),
    (dict(allow_cidr=["10.0.0.0/8"]), "db.internal", 5432, [], False, "no-match"),
    (
        dict(allow_cidr=["10.0.0.0/8"]),
        "10.1.2.3",
        80,
        [ip("10.1.2.3")],
        True,
        "allow-cidr:10.0.0.0/8",
    ),
    (dict(allow_cidr=["10.0.0.0/8"]), "172.16.0.1", 80, [], False, "private:172.16.0.0/12"),
    (dict(allow_cidr=["127.0.0.1/32"]), "127.0.0.1", 8080, [], True, "allow-cidr:127.0.0.1/32"),
    (dict(allow_cidr=["127.0.0.1/32"]), "127.1", 8080, [], True, "allow-cidr:127.0.0.1/32"),
    (
        dict(allow_cidr=["169.254.169.254/32"]),
        "169.254.169.254",
        80,
        [],
        True,
        "allow-cidr:169.254.169.254/32",
    ),
    (dict(allow_cidr=["fd00::/8"]), "[fd00::5]", 80, [], True, "allow-cidr:fd00::/8"),
    (
        dict(allow_cidr=["93.184.216.0/24"]),
        "example.com",
        443,
        [PUBLIC],
        False,
        "no-match",
    ),
    (
        dict(allow_cidr=["93.184.216.0/24"]),
        "example.com",
        443,
        [PUBLIC, ip("1.1.1.1")],
        False,
        "no-match",
    ),
    # a named allow rule plus an allow-cidr for the private address it resolves to
    (
        dict(allow=["git.corp"], allow_cidr=["10.0.0.0/8"]),
        "git.corp",
        443,
        [ip("10.0.0.9")],
        True,
        "allow:git.corp",
    ),
    (dict(allow=["git.corp"]), "git.corp", 443, [ip("10.0.0.9")], False, "private:10.0.0.0/8"),
    # no policy attached: every public destination
    (None, "example.com", 443, [PUBLIC], True, "no-policy"),
    (None, "example.com", 443, [], True, "no-policy"),
    (None, "8.8.8.8", 53, [], True, "no-policy"),
    (None, "[2606:4700:4700::1111]", 443, [], True, "no-policy"),
    (None, "example.com", 443, [PUBLIC6], True, "no-policy"),
    (None, "localhost", 80, [ip("127.0.0.1")], False, "private:127.0.0.0/8"),
    (None, "127.0.0.1", 80, [], False, "private:127.0.0.0/8"),
    (
        None,
        "metadata.google.internal",
        80,
        [ip("169.254.169.254")],
        False,
        "metadata:metadata.google.internal",
    ),
    # several addresses: one private address refuses the whole destination
    (ANTHROPIC, "api.anthropic.com", 443, [PUBLIC, ip("10.0.0.1")], False, "private:10.0.0.0/8"),
    (ANTHROPIC, "api.anthropic.com", 443, [PUBLIC6, ip("::1")], False, "private:::1/128"),
    (None, "x.example", 443, [PUBLIC, ip("::ffff:192.168.1.1")], False, "private:192.168.0.0/16"),
    # an allow rule for a name never lets an IP literal in
    (ANTHROPIC, "160.79.104.10", 443, [], False, "no-match"),
    (ANTHROPIC, "[2607:6bc0::10]", 443, [], False, "no-match"),
    # IP rules match IP literals in any spelling
    (dict(allow=["8.8.8.8"]), "8.8.8.8", 53, [], True, "allow:8.8.8.8"),
    (dict(allow=["8.8.8.8"]), "134744072", 53, [], True, "allow:8.8.8.8"),
    (dict(allow=["8.8.8.8"]), "0x8.0x8.0x8.0x8", 53, [], True, "allow:8.8.8.8"),
    (dict(allow=["8.8.8.8"]), "[::ffff:8.8.8.8]", 53, [], True, "allow:8.8.8.8"),
    (
        dict(allow=["[2001:4860:4860::8888]:443"]),
        "2001:4860:4860:0::8888",
        443,
        [],
        True,
        "allow:[2001:4860:4860::8888]:443",
    ),
    (
        dict(allow=["2001:4860:4860::8888"]),
        "[2001:4860:4860::8888]",
        80,
        [],
        True,
        "allow:2001:4860:4860::8888",
    ),
    (dict(allow_all=True, deny=["8.8.8.8"]), "0x08080808", 53, [], False, "deny:8.8.8.8"),
    (dict(allow_all=True, deny=["8.8.8.8"]), "[::ffff:808:808]", 53, [], False, "deny:8.8.8.8"),
    (
        dict(allow_all=True, deny=["8.8.8.8"]),
        "[64:ff9b::808:808]",
        53,
        [],
        False,
        "deny:8.8.8.8",
    ),
    (dict(allow_all=True, deny=["127.1"]), "127.0.0.1", 80, [], False, "deny:127.0.0.1"),
    # invalid hosts and ports
    (None, "", 443, [], False, "invalid-host"),
    (None, "a..b.com", 443, [], False, "invalid-host"),
    (None, "evil.com/x", 443, [], False, "invalid-host"),
    (None, "1.2.3.256", 443, [], False, "invalid-host"),
    (None, "example.com", 0, [], False, "invalid-host"),
    (None, "example.com", 70000, [], False, "invalid-host"),
]


@pytest.mark.parametrize(
    ("rules", "host", "port", "addresses", "allowed", "rule"),
    DECISIONS,
    ids=row_ids(DECISIONS),
)
def test_decide(rules, host, port, addresses, allowed, rule):
    policy = compile_rules(rules)
    decision = decide(policy, host, port, addresses)
    assert (decision.allowed, decision.rule) == (allowed, rule), decision.reason
    assert decision.reason
    if policy is not None:
        assert policy.decide(host, port, addresses) == decision


LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "127.1",
    "127.0.1",
    "0x7f.0.0.1",
    "0X7F.0.0.1",
    "0177.0.0.1",
    "0177.0.0.01",
    "2130706433",
    "0x7f000001",
    "017700000001",
    "127.0.0.1.",
    "[::ffff:127.0.0.1]",
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "[::FFFF:7F00:0001]",
    "\uff11\uff12\uff17.\uff10.\uff10.\uff11",  # full-width digits,
]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_loopback_spellings_parse_and_are_refused(host):
    assert parse_ip_literal(host) == ip("127.0.0.1")
    assert normalize_host(host) == "127.0.0.1"
    for policy in (None, compile_(allow_all=True), compile_(allow=["localhost", "*.example.org"])):
        decision = decide(policy, host, 80)
        assert not decision.allowed
        assert decision.rule == "private:127.0.0.0/8"
        assert "loopback" in decision.reason
    deny = compile_(allow_cidr=["127.0.0.0/8"], deny=["127.0.0.1"])
    assert decide(deny, host, 80).rule == "deny:127.0.0.1"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("169.254.169.254", "169.254.169.254"),
        ("0xa9fea9fe", "169.254.169.254"),
        ("2852039166", "169.254.169.254"),
        ("0251.0376.0251.0376", "169.254.169.254"),
        ("169.254.43518", "169.254.169.254"),
        ("10.1", "10.0.0.1"),
        ("0", "0.0.0.0"),
        ("0x", "0.0.0.0"),
        ("[::1]", "::1"),
        ("[0:0:0:0:0:0:0:1]", "::1"),
        ("[fe80::1%eth0]", "fe80::1"),
        ("example.com", None),
        ("1.2.3.4.5", None),
        ("256.1.1.1", None),
        ("08.1.1.1", None),
        ("1.2.3.4294967296", None),
        ("4294967296", None),
        ("1_0.0.0.1", None),
        ("+1.2.3.4", None),
        ("[example.com]", None),
        ("", None),
    ],
)
def test_parse_ip_literal(host, expected):
    parsed = parse_ip_literal(host)
    assert (None if parsed is None else str(parsed)) == expected


@pytest.mark.parametrize(
    ("address", "rule", "words"),
    [
        ("0.0.0.0", "0.0.0.0/8", "this-network"),
        ("0.1.2.3", "0.0.0.0/8", "this-network"),
        ("10.255.0.1", "10.0.0.0/8", "RFC 1918"),
        ("100.64.0.1", "100.64.0.0/10", "carrier-grade NAT"),
        ("100.127.255.254", "100.64.0.0/10", "carrier-grade NAT"),
        ("127.255.255.254", "127.0.0.0/8", "loopback"),
        ("169.254.169.254", "169.254.0.0/16", "link-local"),
        ("172.16.0.1", "172.16.0.0/12", "RFC 1918"),
        ("172.31.255.255", "172.16.0.0/12", "RFC 1918"),
        ("192.0.0.8", "192.0.0.0/24", "IETF"),
        ("192.0.2.1", "192.0.2.0/24", "TEST-NET-1"),
        ("192.168.1.1", "192.168.0.0/16", "RFC 1918"),
        ("198.18.0.1", "198.18.0.0/15", "benchmarking"),
        ("198.19.255.1", "198.18.0.0/15", "benchmarking"),
        ("198.51.100.7", "198.51.100.0/24", "TEST-NET-2"),
        ("203.0.113.9", "203.0.113.0/24", "TEST-NET-3"),
        ("224.0.0.1", "224.0.0.0/4", "multicast"),
        ("239.255.255.250", "224.0.0.0/4", "multicast"),
        ("240.0.0.1", "240.0.0.0/4", "reserved"),
        ("255.255.255.255", "255.255.255.255/32", "broadcast"),
        ("::1", "::1/128", "loopback"),
        ("::", "::/128", "unspecified"),
        ("fe80::1", "fe80::/10", "link-local"),
        ("fc00::1", "fc00::/7", "unique-local"),
        ("fd12:3456::1", "fc00::/7", "unique-local"),
        ("ff02::1", "ff00::/8", "multicast"),
        ("2001:db8::1", "2001:db8::/32", "documentation"),
        # IPv6 forms that embed an IPv4 address are unwrapped
        ("::ffff:127.0.0.1", "127.0.0.0/8", "loopback"),
        ("::ffff:169.254.169.254", "169.254.0.0/16", "link-local"),
        ("::ffff:0:10.0.0.1", "10.0.0.0/8", "IPv4-translated"),
        ("::127.0.0.1", "127.0.0.0/8", "IPv4-compatible"),
        ("::10.0.0.1", "10.0.0.0/8", "IPv4-compatible"),
        ("64:ff9b::a9fe:a9fe", "169.254.0.0/16", "NAT64"),
        ("64:ff9b::7f00:1", "127.0.0.0/8", "NAT64"),
        ("64:ff9b:1::1.2.3.4", "64:ff9b:1::/48", "NAT64"),
        ("2002:7f00:1::", "127.0.0.0/8", "6to4"),
        ("2002:a00:1::1", "10.0.0.0/8", "6to4"),
        ("2002:c0a8:101::1", "192.168.0.0/16", "6to4"),
        # Teredo: server 65.54.227.120 (public), client 0xffffffff ^ 0x80fffffe = 127.0.0.1
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.0/8", "Teredo"),
    ],
)
def test_special_ranges(address, rule, words):
    addr = ip(address)
    name = special_range(addr)
    assert name is not None and words in name and rule in name
    decision = decide(compile_(allow_all=True), "some.example", 443, [addr])
    assert not decision.allowed
    # the unspecified address is the proxy's own (see test_the_unspecified_address_...)
    expected = "own-address" if rule in ("0.0.0.0/8", "::/128") else f"private:{rule}"
    assert decision.rule == expected


@pytest.mark.parametrize(
    "address",
    [
        "93.184.216.34",
        "8.8.8.8",
        "1.1.1.1",
        "100.63.255.255",
        "100.128.0.0",
        "172.15.255.255",
        "172.32.0.0",
        "192.167.255.255",
        "192.169.0.0",
        "198.17.255.255",
        "198.20.0.0",
        "223.255.255.255",
        "2606:4700:4700::1111",
        "2001:4860:4860::8888",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
    ],
)
def test_public_addresses(address):
    assert special_range(ip(address)) is None
    assert decide(None, "some.example", 443, [ip(address)]).allowed


def test_own_addresses_refused_even_when_allowed():
    own = {ip("172.18.0.2"), ip("203.0.113.77")}
    policy = compile_(allow_all=True, allow_cidr=["172.16.0.0/12"])
    for host, addrs in [
        ("172.18.0.2", []),
        ("proxy.example", [ip("172.18.0.2")]),
        ("[::ffff:172.18.0.2]", []),
        ("x.example", [PUBLIC, ip("::ffff:203.0.113.77")]),
    ]:
        decision = policy.decide(host, 3128, addrs, own_addresses=own)
        assert (decision.allowed, decision.rule) == (False, "own-address"), host
        assert decide(None, host, 3128, addrs, own_addresses=own).rule == "own-address"
    assert policy.decide("172.18.0.3", 80, own_addresses=own).allowed


def test_all_of_loopback_is_own_when_the_proxy_has_a_loopback_address():
    policy = compile_(allow_cidr=["127.0.0.0/8"])
    own = {ip("127.0.0.1"), ip("172.18.0.2")}
    for host in ("127.0.0.2", "127.1.2.3", "0x7f.0.0.9"):
        assert policy.decide(host, 3128, own_addresses=own).rule == "own-address", host
    # without a loopback address of its own (tests on the host), loopback is just private
    assert policy.decide("127.0.0.2", 3128, own_addresses={ip("172.18.0.2")}).allowed


def test_allow_cidrs_are_public():
    assert compile_(allow=["a.com"]).allow_cidrs == ()
    assert compile_(allow_cidr=["10.0.0.1", "fd00::/8"]).allow_cidrs == (
        ipaddress.ip_network("10.0.0.1/32"),
        ipaddress.ip_network("fd00::/8"),
    )


def test_decision_json_and_reason():
    decision = compile_(**ANTHROPIC).decide("evil.com", 443)
    assert decision == Decision(False, decision.reason, "no-match")
    assert decision.to_json() == {"allowed": False, "reason": decision.reason, "rule": "no-match"}
    assert "evil.com" in decision.reason and "anthropic-only" in decision.reason
    deny = compile_(allow_all=True, deny=["evil.com"]).decide("EVIL.com.", 443)
    assert deny.reason == "host evil.com is denied by rule 'evil.com'"


@pytest.mark.parametrize(
    ("pattern", "normalized"),
    [
        ("example.com", "example.com"),
        ("Example.COM.", "example.com"),
        ("*.Example.com", "*.example.com"),
        ("*.a.b.example.com", "*.a.b.example.com"),
        ("example.com:443", "example.com:443"),
        ("*.example.com:8443", "*.example.com:8443"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("*.BÜCHER.example.", "*.xn--bcher-kva.example"),
        ("127.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("10.0.0.1:22", "10.0.0.1:22"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("[::1]", "::1"),
        ("[::1]:8080", "[::1]:8080"),
        ("2001:DB8::1", "2001:db8::1"),
        ("localhost", "localhost"),
        ("_acme.example.com", "_acme.example.com"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ],
)
def test_valid_patterns(pattern, normalized):
    assert validate_host_pattern(pattern) == normalized


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("*", "'*' may only be the whole first label"),
        ("*.", "empty"),
        ("a*.b.com", "'*' may only be the whole first label"),
        ("api.*.com", "'*' may only be the whole first label"),
        ("*.*.example.com", "'*' may only be the whole first label"),
        ("**.example.com", "'*' may only be the whole first label"),
        ("*example.com", "'*' may only be the whole first label"),
        ("*.com", "wildcard over a top-level domain"),
        ("*.10.0.0.1", "wildcard needs a domain name"),
        ("a..b.com", "empty label"),
        (".example.com", "empty label"),
        ("example.com..", "empty label"),
        ("x" * 64 + ".com", "over 63 characters"),
        (".".join(["a" * 60] * 5), "longer than 253"),
        ("-bad.example.com", "invalid label"),
        ("bad-.example.com", "invalid label"),
        ("ex ample.com", "whitespace"),
        ("exa!mple.com", "invalid label"),
        ("example.com:", "invalid port"),
        ("example.com:0", "invalid port"),
        ("example.com:65536", "invalid port"),
        ("example.com:http", "invalid port"),
        ("example.com:-1", "invalid port"),
        ("example.com:+443", "invalid port"),
        ("[::1]x", "not :PORT"),
        ("[::1", "unclosed"),
        ("[::1]:0", "invalid port"),
        ("[nope]", "not a valid IPv6"),
        ("https://example.com", "not a URL"),
        ("example.com/path", "not a URL"),
        ("example.com?q", "not a URL"),
        ("user@example.com", "user info"),
        ("1.2.3.256", "not a valid one"),
        ("999.1.1.1", "not a valid one"),
        ("1.2.3.4.5", "not a valid one"),
    ],
)
def test_invalid_patterns(pattern, message):
    with pytest.raises(PolicyError) as info:
        validate_host_pattern(pattern)
    assert message in str(info.value)
    with pytest.raises(PolicyError):
        compile_(allow=[pattern])
    with pytest.raises(PolicyError):
        compile_(deny=[pattern])


@pytest.mark.parametrize(
    ("cidr", "expected"),
    [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("10.0.0.5", "10.0.0.5/32"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("fd00::/8", "fd00::/8"),
        ("FD00::/8", "fd00::/8"),
        ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
        ("169.254.169.254/32", "169.254.169.254/32"),
    ],
)
def test_valid_cidrs(cidr, expected):
    assert validate_cidr(cidr) == expected


@pytest.mark.parametrize(
    ("cidr", "message"),
    [
        ("10.0.0.1/8", "host bits set: did you mean 10.0.0.0/8?"),
        ("10.0.0.0/33", "not a valid network"),
        ("example.com", "not a valid network"),
        ("", "empty"),
        (" 10.0.0.0/8", "whitespace"),
        ("10.0.0.0/", "not a valid network"),
        ("fd00::1/8", "host bits set"),
    ],
)
def test_invalid_cidrs(cidr, message):
    with pytest.raises(PolicyError) as info:
        validate_cidr(cidr)
    assert message in str(info.value)
    with pytest.raises(PolicyError):
        compile_(allow_cidr=[cidr])


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("Bücher.Example", "xn--bcher-kva.example"),
        ("\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25.com", "example.com"),
        ("[2001:DB8:0::1]", "2001:db8::1"),
        ("0x7f.1", "127.0.0.1"),
    ],
)
def test_normalize_host(host, expected):
    assert normalize_host(host) == expected


@pytest.mark.parametrize("host", ["", "a..b", "exa mple.com", "example.com:443", "a/b", "é..com"])
def test_normalize_host_refuses(host):
    with pytest.raises(PolicyError):
        normalize_host(host)


def test_many_rules_match_correctly():
    """15,000 rules: the right one wins at either end of each list (speed: make bench-proxy)."""
    allow = [f"host{i}.example.com" for i in range(5000)] + [
        f"*.zone{i}.example.net" for i in range(5000)
    ]
    policy = compile_(allow=allow, deny=[f"bad{i}.example.org" for i in range(5000)])
    assert policy.decide("a.b.zone4999.example.net", 443, [PUBLIC]).rule == (
        "allow:*.zone4999.example.net"
    )
    assert policy.decide("host0.example.com", 443, [PUBLIC]).allowed
    assert policy.decide("bad4999.example.org", 443, [PUBLIC]).rule == "deny:bad4999.example.org"
    assert not policy.decide("nothing.example.org", 443, [PUBLIC]).allowed


@pytest.mark.parametrize(
    ("modules", "banned"),
    [
        # pure: the CLI imports these two
        ("proxy.policy, proxy.config", ("aiohttp", "docker", "devbox_cli")),
        # the whole proxy: its image has only aiohttp (and uvloop)
        (
            "proxy.__main__, proxy.app, proxy.admin, proxy.gateway, proxy.forward",
            ("docker", "devbox_cli", "typer", "rich", "nacl"),
        ),
    ],
)
def test_proxy_import_boundaries(modules, banned):
    import subprocess
    import sys

    code = f"import sys, {modules}; print(sorted(m for m in {banned!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- the unspecified address, cloud host endpoints, names and allow-cidr (issue 7) -----------


@pytest.mark.parametrize(
    "host",
    ["0.0.0.0", "0", "0x0", "0.0", "00.0.0.0", "0.0.0.1", "0.255.255.255", "[::]", "[::0]",
     "[0:0:0:0:0:0:0:0]", "[::ffff:0.0.0.0]", "[::ffff:0:0]", "0.0.0.0."],
)  # fmt: skip
def test_the_unspecified_address_is_the_proxys_own_under_every_rule(host):
    # a connect to 0.0.0.0 or :: reaches the local host: no allow-cidr may open it
    for policy in (
        compile_(allow_cidr=["0.0.0.0/0", "::/0"]),
        compile_(allow_all=True, allow_cidr=["0.0.0.0/8", "::/128"]),
        None,
    ):
        decision = decide(policy, host, 80)
        assert (decision.allowed, decision.rule) == (False, "own-address"), (host, policy)
        assert "unspecified" in decision.reason
    # the same through a name that resolves there
    address = parse_ip_literal(host)
    assert address is not None
    decision = decide(compile_(allow=["x.example"], allow_cidr=["0.0.0.0/0"]), "x.example", 80,
                      [address])  # fmt: skip
    assert decision.rule == "own-address"


CLOUD_ENDPOINTS = [
    ("169.254.169.254", "private:169.254.0.0/16"),
    ("169.254.170.2", "private:169.254.0.0/16"),
    ("169.254.0.23", "private:169.254.0.0/16"),
    ("168.63.129.16", "private:168.63.129.16/32"),
    ("100.100.100.200", "private:100.64.0.0/10"),
    ("192.0.0.192", "private:192.0.0.0/24"),
    ("[fd00:ec2::254]", "private:fc00::/7"),
    ("[fd20:ce::254]", "private:fc00::/7"),
    ("[::ffff:168.63.129.16]", "private:168.63.129.16/32"),
    ("0xa83f8110", "private:168.63.129.16/32"),  # 168.63.129.16 in hex
]


@pytest.mark.parametrize(("host", "rule"), CLOUD_ENDPOINTS)
def test_cloud_host_endpoints_need_an_allow_cidr_naming_them_exactly(host, rule):
    broad = compile_(allow_all=True, allow_cidr=["0.0.0.0/0", "::/0", "169.254.0.0/16"])
    for policy in (None, compile_(allow_all=True), broad):
        decision = decide(policy, host, 80)
        assert (decision.allowed, decision.rule) == (False, rule), (host, policy)
        # a name resolving there is refused the same way
        address = parse_ip_literal(host)
        by_name = decide(policy, "innocent.example", 80, [address])
        assert (by_name.allowed, by_name.rule) == (False, rule)
    exact = compile_(allow_cidr=[f"{address}/{address.max_prefixlen}"])
    assert decide(exact, host, 80).allowed


@pytest.mark.parametrize(
    "name",
    ["metadata.google.internal", "METADATA.google.internal.", "metadata.goog",
     "instance-data.ec2.internal"],
)  # fmt: skip
def test_metadata_names_are_refused_before_any_lookup(name):
    for policy in (None, compile_(allow_all=True), compile_(allow=[name.lower().rstrip(".")])):
        decision = decide(policy, name, 80)
        assert not decision.allowed and decision.rule.startswith("metadata:"), policy


def test_an_allow_cidr_never_admits_a_name_by_itself():
    policy = compile_(allow_cidr=["0.0.0.0/0", "::/0"])
    # decided on the name alone: refused, so the caller never needs to resolve it
    assert decide(policy, "data.attacker.example", 443).rule == "no-match"
    assert decide(policy, "data.attacker.example", 443, [PUBLIC]).rule == "no-match"
    assert decide(policy, "93.184.216.34", 443).rule == "allow-cidr:0.0.0.0/0"
    # an allow rule admits the name; the allow-cidr then covers its private address
    named = compile_(allow=["db.corp"], allow_cidr=["10.0.0.0/8"])
    assert decide(named, "db.corp", 5432).allowed
    assert decide(named, "db.corp", 5432, [ip("10.1.1.1")]).rule == "allow:db.corp"
    assert decide(named, "db.corp", 5432, [ip("172.16.0.1")]).rule == "private:172.16.0.0/12"
    assert decide(named, "other.corp", 5432).rule == "no-match"
