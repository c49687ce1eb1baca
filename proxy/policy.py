"""Network policy rules: one pure implementation for the proxy and the CLI's `policy check`.

Rules are parsed and validated once (`Policy.compile`), so a bad rule fails at create time or
at config load, never on a request. Matching is pure: no I/O, no DNS. The caller resolves a
name itself and passes every address it will connect to; `decide` checks all of them.

Order of a decision (first hit wins):
 1. a host that cannot be normalized, or a bad port: refused ("invalid-host");
 2. a deny rule matching the host, or an IP deny rule matching any address: refused;
 3. a cloud metadata or host-service name (metadata.google.internal ...): refused
    ("metadata:<name>");
 4. per address: the proxy's own address, and the unspecified address (0.0.0.0/8, ::),
    which reaches the local host as loopback does, are refused by every rule
    ("own-address"); a cloud host endpoint (169.254.169.254, Azure's 168.63.129.16, ...)
    is refused unless an allow-cidr names exactly that address ("private:<address>/32");
    an address in an always-refused range is refused unless an allow-cidr covers it
    ("private:<range>");
 5. no policy attached: allowed ("no-policy");
 6. an allow rule matching the host ("allow:<pattern>"), else allow_all ("allow-all"),
    else an IP literal host covered by an allow-cidr ("allow-cidr:<cidr>");
 7. otherwise refused ("no-match").

An allow-cidr admits IP literals in its range, and the addresses (private ones included) of
names an allow rule or allow_all admits. It never admits a name by itself: a name that no
allow rule admits is refused on the name alone, so the proxy never looks it up and
`<data>.attacker.example` cannot leave through DNS.

Host patterns: an exact hostname or IP, or `*.example.com` (any subdomain at any depth, not
the apex), with an optional `:PORT`. A wildcard over a single label (`*.com`) is refused: it
would allow most of a TLD and is almost always a typo. IP rules match IP literal hosts in any
spelling (`127.1`, `0x7f000001`, `[::ffff:127.0.0.1]` ...); an allow rule for a name never lets
an IP literal in. An IP deny rule additionally applies to every resolved address, so denying
`169.254.169.254` also stops a name that resolves there.

Unicode names go through the stdlib `idna` codec (IDNA 2003: nameprep case folding and NFKC,
so `ß` becomes `ss` and full-width digits become ASCII); rules and hosts take the same path,
so they agree, and a name that turns into an IP literal is treated as one.

IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are the same destination as `a.b.c.d` on a
dual-stack socket, so they are folded to IPv4 everywhere. Other IPv4-embedding forms (NAT64,
6to4, Teredo, IPv4-compatible) are distinct addresses; they are refused when the IPv4 they
embed is in an always-refused range, and an IP deny rule applies to the embedded IPv4 too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proxy.hosts import (
    CLOUD_ENDPOINTS,
    MAPPED,
    METADATA_NAMES,
    IPAddress,
    IPNetwork,
    PolicyError,
    embedded_ipv4,
    fold,
    is_unspecified,
    normalize,
    normalize_host,
    parse_ip_literal,
    parse_port,
    refused_range,
    special_range,
)

if TYPE_CHECKING:
    from proxy.config import PolicySpec

# The CLI (`policy check`, policy validation) reads hosts through this module.
__all__ = [
    "Decision",
    "IPAddress",
    "Policy",
    "PolicyError",
    "decide",
    "normalize_host",
    "parse_ip_literal",
    "special_range",
    "validate_cidr",
    "validate_host_pattern",
]


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    rule: str

    def to_json(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "reason": self.reason, "rule": self.rule}


@dataclass(frozen=True)
class _Pattern:
    text: str  # normalized, as shown to users and in rule tags
    host: str  # normalized host, or the suffix after "*." for a wildcard
    wildcard: bool
    port: int | None
    ip: IPAddress | None


def _parse_port(pattern: str, text: str) -> int:
    port = parse_port(text)
    if port is None:
        raise PolicyError(f"pattern {pattern!r} has an invalid port {text!r}: use 1-65535")
    return port


def _parse_pattern(pattern: str) -> _Pattern:
    if not isinstance(pattern, str) or not pattern.strip():
        raise PolicyError("host pattern is empty")
    if "://" in pattern or "/" in pattern or "?" in pattern or "#" in pattern:
        raise PolicyError(
            f"pattern {pattern!r} must be a host, not a URL: drop the scheme and path "
            "(e.g. 'api.example.com' or 'api.example.com:443')"
        )
    if "@" in pattern:
        raise PolicyError(f"pattern {pattern!r} must be a host without user info")
    host, port = pattern, None
    if pattern.startswith("["):
        end = pattern.find("]")
        if end < 0:
            raise PolicyError(f"pattern {pattern!r} has an unclosed '['")
        host, rest = pattern[: end + 1], pattern[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise PolicyError(f"pattern {pattern!r} has text after ']' that is not :PORT")
            port = _parse_port(pattern, rest[1:])
    elif pattern.count(":") == 1:
        host, port_text = pattern.split(":")
        port = _parse_port(pattern, port_text)
    wildcard = False
    if "*" in host:
        if not host.startswith("*.") or "*" in host[2:]:
            raise PolicyError(
                f"pattern {pattern!r} is not allowed: '*' may only be the whole first label, "
                "as in '*.example.com' (which matches subdomains at any depth, not the apex)"
            )
        wildcard, host = True, host[2:]
    try:
        name, ip = normalize(host)
    except PolicyError as exc:
        raise PolicyError(f"pattern {pattern!r}: {exc}") from None
    if wildcard and ip is not None:
        raise PolicyError(f"pattern {pattern!r} is not allowed: a wildcard needs a domain name")
    if wildcard and "." not in name:
        raise PolicyError(
            f"pattern {pattern!r} is too broad: a wildcard over a top-level domain is refused; "
            "name a domain, as in '*.example.com'"
        )
    shown = f"*.{name}" if wildcard else (f"[{name}]" if ":" in name and port else name)
    if port is not None:
        shown = f"{shown}:{port}"
    return _Pattern(text=shown, host=name, wildcard=wildcard, port=port, ip=ip)


def validate_host_pattern(pattern: str) -> str:
    """The normalized pattern, or PolicyError saying why it is invalid."""
    return _parse_pattern(pattern).text


def _parse_cidr(cidr: str) -> IPNetwork:
    if not isinstance(cidr, str) or not cidr or cidr != cidr.strip():
        raise PolicyError(f"CIDR {cidr!r} is empty or has surrounding whitespace")
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise PolicyError(
            f"CIDR {cidr!r} is not a valid network: use ADDRESS/PREFIX, e.g. 10.0.0.0/8"
        ) from None
    if "/" in cidr and net.network_address != ipaddress.ip_address(cidr.split("/", 1)[0]):
        raise PolicyError(f"CIDR {cidr!r} has host bits set: did you mean {net}?")
    if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(MAPPED):  # type: ignore[arg-type]
        v4 = net.network_address.ipv4_mapped
        net = ipaddress.IPv4Network(f"{v4}/{net.prefixlen - 96}")
    return net


def validate_cidr(cidr: str) -> str:
    """The normalized CIDR ("10.0.0.5" becomes "10.0.0.5/32"), or PolicyError saying why.
    Host bits are refused rather than silently masked: `10.0.0.1/8` is likely a typo."""
    return str(_parse_cidr(cidr))


# --- compiled policy -----------------------------------------------------------------------

# host -> port (None: any port) -> the pattern text behind it
_Table = dict[str, dict[int | None, str]]


def _table(patterns: Iterable[_Pattern], wildcard: bool) -> _Table:
    table: _Table = {}
    for p in patterns:
        if p.wildcard == wildcard:
            table.setdefault(p.host, {}).setdefault(p.port, p.text)
    return table


def _lookup(table: _Table, host: str, port: int) -> str | None:
    ports = table.get(host)
    if ports is None:
        return None
    return ports.get(None) or ports.get(port)


class Policy:
    """A compiled policy. Immutable after `compile`; safe to share across requests."""

    __slots__ = ("_allow", "_allow_sfx", "_cidrs", "_deny", "_deny_sfx", "allow_all", "name")

    def __init__(
        self,
        name: str,
        allow: Sequence[_Pattern],
        deny: Sequence[_Pattern],
        cidrs: Sequence[IPNetwork],
        allow_all: bool,
    ) -> None:
        self.name = name
        self.allow_all = allow_all
        self._allow = _table(allow, wildcard=False)
        self._allow_sfx = _table(allow, wildcard=True)
        self._deny = _table(deny, wildcard=False)
        self._deny_sfx = _table(deny, wildcard=True)
        self._cidrs = tuple(cidrs)

    def __repr__(self) -> str:
        return f"Policy(name={self.name!r}, allow_all={self.allow_all})"

    @property
    def allow_cidrs(self) -> tuple[IPNetwork, ...]:
        """The allow-cidr networks. They never admit a name by themselves: a name refused on
        the name alone stays refused whatever it resolves to, so it is never looked up."""
        return self._cidrs

    @classmethod
    def compile(cls, spec: PolicySpec) -> Policy:
        """Validate and index every rule of `spec`; raises PolicyError on the first bad one."""
        return cls(
            name=spec.name,
            allow=[_parse_pattern(p) for p in spec.allow],
            deny=[_parse_pattern(p) for p in spec.deny],
            cidrs=[_parse_cidr(c) for c in spec.allow_cidr],
            allow_all=bool(spec.allow_all),
        )

    def _match(
        self, exact: _Table, suffixes: _Table, host: str, port: int, is_ip: bool
    ) -> str | None:
        hit = _lookup(exact, host, port)
        if hit is not None or is_ip or not suffixes:
            return hit
        labels = host.split(".")
        for i in range(1, len(labels)):
            hit = _lookup(suffixes, ".".join(labels[i:]), port)
            if hit is not None:
                return hit
        return None

    def _denied_address(self, ip: IPAddress, port: int) -> str | None:
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address):
            candidates += [v4 for _, v4 in embedded_ipv4(ip)]
        for c in candidates:
            hit = _lookup(self._deny, str(c), port)
            if hit is not None:
                return hit
        return None

    def _cidr_for(self, ip: IPAddress) -> IPNetwork | None:
        """The allow-cidr covering `ip`; for a cloud host endpoint only one naming exactly
        that address counts."""
        exact = ip in CLOUD_ENDPOINTS
        for net in self._cidrs:
            if ip.version == net.version and ip in net and (not exact or net.num_addresses == 1):
                return net
        return None

    def decide(
        self,
        host: str,
        port: int,
        addresses: Sequence[IPAddress] = (),
        *,
        own_addresses: Collection[IPAddress] = (),
    ) -> Decision:
        return _decide(self, host, port, addresses, own_addresses)


def decide(
    policy: Policy | None,
    host: str,
    port: int,
    addresses: Sequence[IPAddress] = (),
    *,
    own_addresses: Collection[IPAddress] = (),
) -> Decision:
    """Decide whether `host:port`, reached at `addresses`, may be connected to.

    `policy` None means no policy attached. `addresses` are every address the caller will
    connect to (for an IP literal host the literal is added automatically); an empty list
    decides on the name alone."""
    return _decide(policy, host, port, addresses, own_addresses)


def _decide(
    policy: Policy | None,
    host: str,
    port: int,
    addresses: Sequence[IPAddress],
    own_addresses: Collection[IPAddress],
) -> Decision:
    try:
        name, literal = normalize(host)
    except PolicyError as exc:
        return Decision(False, f"invalid host: {exc}", "invalid-host")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        return Decision(False, f"invalid port {port!r}: use 1-65535", "invalid-host")
    shown = f"[{name}]" if ":" in name else name
    checked: list[IPAddress] = [literal] if literal is not None else []
    for a in addresses:
        a = fold(a)
        if a not in checked:
            checked.append(a)

    if policy is not None:
        hit = policy._match(policy._deny, policy._deny_sfx, name, port, literal is not None)
        if hit is not None:
            return Decision(False, f"host {shown} is denied by rule '{hit}'", f"deny:{hit}")
        for a in checked:
            hit = policy._denied_address(a, port)
            if hit is not None:
                return Decision(
                    False,
                    f"address {a} of host {shown} is denied by rule '{hit}'",
                    f"deny:{hit}",
                )

    if literal is None and name in METADATA_NAMES:
        return Decision(
            False, f"host {shown} is a cloud metadata service, always refused", f"metadata:{name}"
        )

    own = {fold(a) for a in own_addresses}
    # Every 127/8 address is the local host: when the proxy has a loopback address, all of
    # them are its own (an --allow-cidr for loopback must not let a request loop into it).
    own_loopback = any(a.is_loopback for a in own)
    cidr_hits: list[IPNetwork | None] = []
    for a in checked:
        if a in own or (own_loopback and a.is_loopback):
            return Decision(False, f"address {a} is the proxy's own address", "own-address")
        if is_unspecified(a):
            return Decision(
                False,
                f"address {a} is the unspecified address, which reaches the proxy itself",
                "own-address",
            )
        cidr = policy._cidr_for(a) if policy is not None else None
        cidr_hits.append(cidr)
        special = refused_range(a)
        if special is not None and cidr is None:
            what = f"host {shown}" if a == literal else f"address {a} of host {shown}"
            cloud = CLOUD_ENDPOINTS.get(a)
            if cloud is not None:
                why = f"is the {cloud}, refused unless an --allow-cidr names exactly {a}"
            else:
                why = f"is in the {special[0]} range, refused unless an --allow-cidr covers it"
            return Decision(False, f"{what} {why}", f"private:{special[1]}")

    if policy is None:
        return Decision(
            True, "no policy attached: every public destination is allowed", "no-policy"
        )
    hit = policy._match(policy._allow, policy._allow_sfx, name, port, literal is not None)
    if hit is not None:
        return Decision(True, f"host {shown} is allowed by rule '{hit}'", f"allow:{hit}")
    if policy.allow_all:
        return Decision(
            True, f"policy '{policy.name}' allows every public destination", "allow-all"
        )
    if literal is not None and cidr_hits[0] is not None:
        # only an IP literal: a name is admitted by an allow rule or not at all, so a
        # refused name need never be resolved (no DNS exfiltration through an allow-cidr)
        net = cidr_hits[0]
        return Decision(
            True, f"address {literal} is allowed by --allow-cidr {net}", f"allow-cidr:{net}"
        )
    return Decision(
        False, f"{shown}:{port} matches no allow rule of policy '{policy.name}'", "no-match"
    )
