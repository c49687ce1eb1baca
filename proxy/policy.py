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
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxy.config import PolicySpec

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_HOST_LEN = 253
MAX_LABEL_LEN = 63
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?")
_IPV4_PART = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")
_PORT = re.compile(r"[0-9]{1,5}")


class PolicyError(ValueError):
    """An invalid rule or host; the message says why."""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    rule: str

    def to_json(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "reason": self.reason, "rule": self.rule}


# --- IP literals -------------------------------------------------------------------------


def _strip(host: str) -> str:
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host[:-1] if host.endswith(".") else host


def _fold(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv4-mapped IPv6 address means; any other address unchanged."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
    return ip


def _parse_ipv4(text: str) -> ipaddress.IPv4Address | None:
    """inet_aton's grammar (and the URL standard's): 1 to 4 parts, each decimal, 0x hex or
    0-leading octal, the last part filling the remaining bytes."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_IPV4_PART.fullmatch(p) for p in parts):
        return None
    values = []
    for p in parts:
        if p[:2] in ("0x", "0X"):
            values.append(int(p[2:] or "0", 16))
        elif len(p) > 1 and p[0] == "0":
            values.append(int(p, 8))
        else:
            values.append(int(p))
    *head, last = values
    if any(v > 255 for v in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    number = last
    for i, v in enumerate(head):
        number |= v << (8 * (3 - i))
    return ipaddress.IPv4Address(number)


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address `host` means if it is an IP literal in any spelling, else None.

    IPv4-mapped IPv6 is returned as the IPv4 address it maps; an IPv6 zone id is dropped."""
    if not host:
        return None
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    text = _strip(host.strip())
    if ":" in text:
        try:
            return _fold(ipaddress.IPv6Address(text))
        except ValueError:
            return None
    return _parse_ipv4(text)


# --- always-refused ranges -----------------------------------------------------------------

_V4_SPECIAL: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(cidr), label)
    for cidr, label in (
        ("0.0.0.0/8", "this-network"),
        ("10.0.0.0/8", "private (RFC 1918)"),
        ("100.64.0.0/10", "carrier-grade NAT"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (cloud metadata)"),
        ("172.16.0.0/12", "private (RFC 1918)"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation (TEST-NET-1)"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private (RFC 1918)"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation (TEST-NET-2)"),
        ("203.0.113.0/24", "documentation (TEST-NET-3)"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
    )
)

_V6_SPECIAL: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(cidr), label)
    for cidr, label in (
        ("::1/128", "IPv6 loopback"),
        ("::/128", "IPv6 unspecified"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "IPv6 discard-only"),
        ("2001:db8::/32", "IPv6 documentation"),
        ("2001:10::/28", "IPv6 ORCHID"),
        ("fc00::/7", "IPv6 unique-local"),
        ("fe80::/10", "IPv6 link-local"),
        ("fec0::/10", "IPv6 site-local"),
        ("ff00::/8", "IPv6 multicast"),
    )
)

# Cloud metadata and host-service endpoints: credentials and host control live behind them.
# Most sit in an always-refused range already, but a broad allow-cidr (169.254.0.0/16,
# 0.0.0.0/0) must not open them, and Azure's wireserver is a public address: each is
# admitted only by an allow-cidr naming exactly that address.
_CLOUD_ENDPOINTS: dict[IPAddress, str] = {
    ipaddress.ip_address(addr): label
    for addr, label in (
        ("169.254.169.254", "cloud metadata (AWS, GCP, Azure, OpenStack ...)"),
        ("169.254.170.2", "AWS ECS task metadata"),
        ("169.254.170.23", "AWS EKS pod identity"),
        ("169.254.0.23", "Tencent Cloud metadata"),
        ("168.63.129.16", "Azure host endpoint (wireserver)"),
        ("100.100.100.200", "Alibaba Cloud metadata"),
        ("192.0.0.192", "Oracle Cloud metadata"),
        ("fd00:ec2::254", "AWS IPv6 metadata"),
        ("fd00:ec2::23", "AWS EKS pod identity (IPv6)"),
        ("fd20:ce::254", "GCP IPv6 metadata"),
    )
}
# Names of metadata services, refused before any lookup (their addresses are refused too).
METADATA_NAMES = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.azure.internal",
    }
)
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")

_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
_COMPAT = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIXTOFOUR = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """Every IPv4 address an IPv6 address embeds, with the name of the embedding form."""
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _MAPPED:
        return [("IPv4-mapped ::ffff:0:0/96", low32)]
    if ip in _TRANSLATED:
        return [("IPv4-translated ::ffff:0:0:0/96", low32)]
    if ip in _COMPAT:
        return [("IPv4-compatible ::/96", low32)]
    if ip in _NAT64:
        return [("NAT64 64:ff9b::/96", low32)]
    if ip in _SIXTOFOUR:
        return [("6to4 2002::/16", ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF))]
    if ip in _TEREDO:
        server, client = ip.teredo  # type: ignore[misc]
        return [("Teredo 2001::/32", server), ("Teredo 2001::/32", client)]
    return []


def _special(ip: IPAddress) -> tuple[str, str] | None:
    """(description, cidr) of the always-refused range holding `ip`, or None."""
    ip = _fold(ip)
    if isinstance(ip, ipaddress.IPv4Address):
        for net, label in _V4_SPECIAL:
            if ip in net:
                return f"{label} {net}", str(net)
        return _cloud(ip)
    for net, label in _V6_SPECIAL:
        if ip in net:
            return f"{label} {net}", str(net)
    for form, v4 in _embedded_ipv4(ip):
        inner = _special(v4)
        if inner is not None:
            return f"{inner[0]} (embedded as {v4} in {form})", inner[1]
    return _cloud(ip)


def _cloud(ip: IPAddress) -> tuple[str, str] | None:
    label = _CLOUD_ENDPOINTS.get(ip)
    return None if label is None else (f"{label} {ip}", str(ipaddress.ip_network(ip)))


def is_unspecified(ip: IPAddress) -> bool:
    """0.0.0.0/8 and `::`: a connect to them reaches the local host, as loopback does."""
    ip = _fold(ip)
    if isinstance(ip, ipaddress.IPv4Address):
        return ip in _THIS_NETWORK
    return ip.is_unspecified


def special_range(ip: IPAddress) -> str | None:
    """The name of the always-refused range containing `ip` (e.g. "loopback 127.0.0.0/8"),
    or None for a public address."""
    found = _special(ip)
    return None if found is None else found[0]


# --- hosts and patterns --------------------------------------------------------------------


def _normalize(host: str) -> tuple[str, IPAddress | None]:
    if not isinstance(host, str) or not host:
        raise PolicyError("host is empty")
    if any(c.isspace() for c in host):
        raise PolicyError(f"host {host!r} contains whitespace")
    ip = parse_ip_literal(host)
    if ip is not None:
        return str(ip), ip
    if host.startswith("["):
        raise PolicyError(f"host {host!r} is not a valid IPv6 address")
    try:
        # The idna codec leaves ASCII labels alone except for length checks, which
        # _check_labels makes with clearer messages; it maps Unicode ones (case folding,
        # NFKC, the ideographic full stops) to punycode.
        name = host.lower() if host.isascii() else host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise PolicyError(
            f"host {host!r} is not a valid hostname (empty label, a label over "
            f"{MAX_LABEL_LEN} characters, or a character IDNA refuses)"
        ) from None
    if name.endswith("."):
        name = name[:-1]
    ip = parse_ip_literal(name)
    if ip is not None:
        return str(ip), ip
    labels = name.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        raise PolicyError(f"host {host!r} looks like an IPv4 address but is not a valid one")
    _check_labels(host, labels)
    return name, None


def _check_labels(original: str, labels: list[str]) -> None:
    if sum(len(label) + 1 for label in labels) - 1 > MAX_HOST_LEN:
        raise PolicyError(f"host {original!r} is longer than {MAX_HOST_LEN} characters")
    for label in labels:
        if not label:
            raise PolicyError(f"host {original!r} has an empty label")
        if len(label) > MAX_LABEL_LEN:
            raise PolicyError(f"host {original!r} has a label over {MAX_LABEL_LEN} characters")
        if not _LABEL.fullmatch(label):
            raise PolicyError(
                f"host {original!r} has an invalid label {label!r}: use letters, digits, "
                "'-' and '_' (not at either end)"
            )


def normalize_host(host: str) -> str:
    """Lower case, one trailing dot dropped, IDNA to punycode, [] stripped from IPv6; an IP
    literal in any spelling comes back in its canonical form. Raises PolicyError."""
    return _normalize(host)[0]


@dataclass(frozen=True)
class _Pattern:
    text: str  # normalized, as shown to users and in rule tags
    host: str  # normalized host, or the suffix after "*." for a wildcard
    wildcard: bool
    port: int | None
    ip: IPAddress | None


def _parse_port(pattern: str, text: str) -> int:
    if not _PORT.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise PolicyError(f"pattern {pattern!r} has an invalid port {text!r}: use 1-65535")
    return int(text)


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
        name, ip = _normalize(host)
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
    if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(_MAPPED):  # type: ignore[arg-type]
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
            candidates += [v4 for _, v4 in _embedded_ipv4(ip)]
        for c in candidates:
            hit = _lookup(self._deny, str(c), port)
            if hit is not None:
                return hit
        return None

    def _cidr_for(self, ip: IPAddress) -> IPNetwork | None:
        """The allow-cidr covering `ip`; for a cloud host endpoint only one naming exactly
        that address counts."""
        exact = ip in _CLOUD_ENDPOINTS
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
        name, literal = _normalize(host)
    except PolicyError as exc:
        return Decision(False, f"invalid host: {exc}", "invalid-host")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        return Decision(False, f"invalid port {port!r}: use 1-65535", "invalid-host")
    shown = f"[{name}]" if ":" in name else name
    checked: list[IPAddress] = [literal] if literal is not None else []
    for a in addresses:
        a = _fold(a)
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

    own = {_fold(a) for a in own_addresses}
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
        special = _special(a)
        if special is not None and cidr is None:
            what = f"host {shown}" if a == literal else f"address {a} of host {shown}"
            cloud = _CLOUD_ENDPOINTS.get(a)
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
