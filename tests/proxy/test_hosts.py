"""Edges of what a host, a port and an address are (proxy/hosts.py), seen through decisions:
the boundaries of ports and name lengths, malformed literals, deny rules on resolved
addresses, and the reasons a user reads (in a 403 body and in `devbox policy check`)."""

from __future__ import annotations

import ipaddress

import pytest

from proxy.policy import PolicyError, decide, special_range, validate_host_pattern
from tests.proxy.test_policy import PUBLIC, compile_rules, row_ids

ip = ipaddress.ip_address
NAME_253 = ".".join(["a" * 63] * 3 + ["b" * 61])  # 63*3 + 61 + 3 dots = 253
NAME_254 = ".".join(["a" * 63] * 3 + ["b" * 62])  # every label within 63
assert (len(NAME_253), len(NAME_254)) == (253, 254)

# (rules for compile_, or None: no policy; host, port, addresses, allowed, rule)
EDGES = [
    # ports: 1 and 65535 are ports, the rest (and anything not an int) is not
    (None, "example.com", 1, [], True, "no-policy"),
    (None, "example.com", 65535, [], True, "no-policy"),
    (None, "example.com", 65536, [], False, "invalid-host"),
    (None, "example.com", True, [], False, "invalid-host"),
    (None, "example.com", "443", [], False, "invalid-host"),
    (None, "example.com", 443.0, [], False, "invalid-host"),
    (dict(allow=["example.com:1"]), "example.com", 1, [], True, "allow:example.com:1"),
    (dict(allow=["example.com:1"]), "example.com", 2, [], False, "no-match"),
    (dict(allow=["example.com:65535"]), "example.com", 65535, [], True, "allow:example.com:65535"),
    (dict(allow=["example.com:65535"]), "example.com", 65534, [], False, "no-match"),
    # names: 253 characters (a trailing dot not counted) and 63-character labels are the limits
    (None, NAME_253, 443, [], True, "no-policy"),
    (None, NAME_253 + ".", 443, [], True, "no-policy"),
    (None, NAME_254, 443, [], False, "invalid-host"),
    (None, "a" * 63 + ".example", 443, [], True, "no-policy"),
    (None, "a" * 64 + ".example", 443, [], False, "invalid-host"),
    (dict(allow=[NAME_253]), NAME_253 + ".", 443, [], True, f"allow:{NAME_253}"),
    # malformed literals: never read as a neighbouring address
    (None, "[::1", 443, [], False, "invalid-host"),
    (None, "::1]", 443, [], False, "invalid-host"),
    (None, "1.2.3.4.0", 443, [], False, "invalid-host"),
    (None, "8.8.8.8.8", 443, [], False, "invalid-host"),
    (None, b"example.com", 443, [], False, "invalid-host"),
    # an IP deny rule applies to every resolved address, IPv6 too, and keeps its port
    (
        dict(allow_all=True, deny=["2606:4700::1111"]),
        "cdn.example",
        443,
        [ip("2606:4700::1111")],
        False,
        "deny:2606:4700::1111",
    ),
    (
        dict(allow_all=True, deny=["[2606:4700::1111]:443"]),
        "cdn.example",
        443,
        [PUBLIC, ip("2606:4700::1111")],
        False,
        "deny:[2606:4700::1111]:443",
    ),
    (
        dict(allow_all=True, deny=["93.184.216.34:443"]),
        "www.example.com",
        443,
        [PUBLIC],
        False,
        "deny:93.184.216.34:443",
    ),
    (
        dict(allow_all=True, deny=["93.184.216.34:443"]),
        "www.example.com",
        80,
        [PUBLIC],
        True,
        "allow-all",
    ),
    # a port-bound deny for a name: other ports of the name are not denied
    (
        dict(allow_all=True, deny=["*.example.com:22"]),
        "git.example.com",
        22,
        [],
        False,
        "deny:*.example.com:22",
    ),
    (
        dict(allow_all=True, deny=["*.example.com:22"]),
        "git.example.com",
        443,
        [],
        True,
        "allow-all",
    ),
]


@pytest.mark.parametrize(
    ("rules", "host", "port", "addresses", "allowed", "rule"),
    EDGES,
    ids=row_ids(EDGES),
)
def test_edges(rules, host, port, addresses, allowed, rule):
    policy = compile_rules(rules)
    decision = decide(policy, host, port, addresses)
    assert (decision.allowed, decision.rule) == (allowed, rule), decision.reason


# (rules, host, port, addresses, own addresses, how the reason starts)
REASONS = [
    (
        dict(allow=["example.com"], name="corp-only"),
        "[2606:4700::1111]",
        443,
        [],
        [],
        "[2606:4700::1111]:443 matches no allow rule of policy 'corp-only'",
    ),
    (dict(allow_all=True, name="open"), "example.com", 443, [], [], "policy 'open' allows every"),
    (
        dict(allow_all=True),
        "db.example",
        5432,
        [PUBLIC, ip("10.0.0.5")],
        [],
        "address 10.0.0.5 of host db.example is in the private (RFC 1918) 10.0.0.0/8 range",
    ),
    (
        dict(allow_all=True),
        "10.0.0.5",
        5432,
        [],
        [],
        "host 10.0.0.5 is in the private (RFC 1918) 10.0.0.0/8 range",
    ),
    (
        dict(allow_all=True, allow_cidr=["168.63.0.0/16"]),
        "168.63.129.16",
        80,
        [],
        [],
        "host 168.63.129.16 is the Azure host endpoint (wireserver), refused unless an "
        "--allow-cidr names exactly 168.63.129.16",
    ),
    (
        dict(allow_all=True),
        "proxy.example",
        3128,
        [ip("172.18.0.2")],
        [ip("172.18.0.2")],
        "address 172.18.0.2 is the proxy's own address",
    ),
    # a refused host is named in the reason, as the caller wrote it
    (None, "a" * 64 + ".example", 443, [], [], f"invalid host: host {'a' * 64 + '.example'!r}"),
    (None, "bü..example", 443, [], [], f"invalid host: host {'bü..example'!r}"),
]


@pytest.mark.parametrize(
    ("rules", "host", "port", "addresses", "own", "text"),
    REASONS,
    ids=row_ids(REASONS),
)
def test_reasons_name_the_destination_and_the_rule(rules, host, port, addresses, own, text):
    policy = compile_rules(rules)
    decision = decide(policy, host, port, addresses, own_addresses=own)
    assert decision.reason.startswith(text), decision.reason


@pytest.mark.parametrize("pattern", ["example.com:0", "[::1]:99999", "bad..example"])
def test_a_bad_pattern_is_named_in_its_error(pattern):
    with pytest.raises(PolicyError) as info:
        validate_host_pattern(pattern)
    assert repr(pattern) in str(info.value)


@pytest.mark.parametrize(
    ("address", "suffix"),
    [
        ("::ffff:0:10.0.0.1", "(embedded as 10.0.0.1 in IPv4-translated ::ffff:0:0:0/96)"),
        ("::10.0.0.1", "(embedded as 10.0.0.1 in IPv4-compatible ::/96)"),
        ("64:ff9b::a00:1", "(embedded as 10.0.0.1 in NAT64 64:ff9b::/96)"),
        ("2002:a00:1::1", "(embedded as 10.0.0.1 in 6to4 2002::/16)"),
        # Teredo: the server (10.0.0.1) refused, the client (~0xf7f7f7f7 = 8.8.8.8) public ...
        ("2001:0:a00:1::f7f7:f7f7", "(embedded as 10.0.0.1 in Teredo 2001::/32)"),
        # ... and the server public (65.54.227.120), the client (127.0.0.1) refused
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "(embedded as 127.0.0.1 in Teredo 2001::/32)"),
    ],
)
def test_an_embedded_ipv4_is_named_with_its_range_and_form(address, suffix):
    name = special_range(ip(address))
    inner = special_range(ip(suffix.split()[2]))
    assert name == f"{inner} {suffix}"
