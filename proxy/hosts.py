"""What a host is, before any rule: IP literals in every spelling, names normalized (IDNA),
and the addresses every rule refuses (always-refused ranges, cloud metadata and host
endpoints, metadata service names). Pure, stdlib only; proxy/policy.py decides with these.
"""

from __future__ import annotations

import ipaddress
import re

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


def parse_port(text: str) -> int | None:
    """The port `text` names (decimal, 1-65535), else None."""
    if not _PORT.fullmatch(text) or not 1 <= int(text) <= 65535:
        return None
    return int(text)


# --- IP literals -------------------------------------------------------------------------


def _strip(host: str) -> str:
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host[:-1] if host.endswith(".") else host


def fold(ip: IPAddress) -> IPAddress:
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
            return fold(ipaddress.IPv6Address(text))
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
CLOUD_ENDPOINTS: dict[IPAddress, str] = {
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

MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
_COMPAT = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIXTOFOUR = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """Every IPv4 address an IPv6 address embeds, with the name of the embedding form."""
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in MAPPED:
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


def refused_range(ip: IPAddress) -> tuple[str, str] | None:
    """(description, cidr) of the always-refused range holding `ip`, or None."""
    ip = fold(ip)
    if isinstance(ip, ipaddress.IPv4Address):
        for net, label in _V4_SPECIAL:
            if ip in net:
                return f"{label} {net}", str(net)
        return _cloud_endpoint(ip)
    for net, label in _V6_SPECIAL:
        if ip in net:
            return f"{label} {net}", str(net)
    for form, v4 in embedded_ipv4(ip):
        inner = refused_range(v4)
        if inner is not None:
            return f"{inner[0]} (embedded as {v4} in {form})", inner[1]
    return _cloud_endpoint(ip)


def _cloud_endpoint(ip: IPAddress) -> tuple[str, str] | None:
    label = CLOUD_ENDPOINTS.get(ip)
    return None if label is None else (f"{label} {ip}", str(ipaddress.ip_network(ip)))


def is_unspecified(ip: IPAddress) -> bool:
    """0.0.0.0/8 and `::`: a connect to them reaches the local host, as loopback does."""
    ip = fold(ip)
    if isinstance(ip, ipaddress.IPv4Address):
        return ip in _THIS_NETWORK
    return ip.is_unspecified


def special_range(ip: IPAddress) -> str | None:
    """The name of the always-refused range containing `ip` (e.g. "loopback 127.0.0.0/8"),
    or None for a public address."""
    found = refused_range(ip)
    return None if found is None else found[0]


# --- names --------------------------------------------------------------------------------


def normalize(host: str) -> tuple[str, IPAddress | None]:
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
    return normalize(host)[0]


# --- the hosts a host gateway intercepts ------------------------------------------------

INTERCEPT_PORT = 443


def parse_intercept_host(text: str) -> tuple[str, int]:
    """`host` or `host:port` of a host gateway -> (normalized name, port; 443 unless given).
    Only a DNS name: the proxy mints a certificate for it and its CA is constrained to
    names, so an IP literal, a wildcard, a URL or a path is refused (PolicyError)."""
    if not isinstance(text, str) or not text.strip():
        raise PolicyError("the host is empty")
    if "://" in text or any(c in text for c in "/?#@"):
        raise PolicyError(f"{text!r} must be a host name, not a URL (e.g. github.com)")
    if "*" in text:
        raise PolicyError(f"{text!r}: a host gateway names exact hosts, not wildcards")
    if text.startswith("["):
        raise PolicyError(f"{text!r} is an IP address: a host gateway names DNS hosts")
    host, port = text, INTERCEPT_PORT
    if text.count(":") == 1:  # more than one: an IPv6 literal, refused below
        host, _, port_text = text.partition(":")
        parsed = parse_port(port_text)
        if parsed is None:
            raise PolicyError(f"{text!r} has an invalid port: use 1-65535")
        port = parsed
    name, ip = normalize(host)
    if ip is not None:
        raise PolicyError(f"{text!r} is an IP address: a host gateway names DNS hosts")
    return name, port


def intercept_host_text(name: str, port: int) -> str:
    """The one spelling of a host gateway's host: `name`, or `name:port` off 443."""
    return name if port == INTERCEPT_PORT else f"{name}:{port}"


def in_subtrees(name: str, subtrees: tuple[str, ...] | list[str]) -> bool:
    """Whether DNS `name` is inside one of `subtrees` as an X.509 name constraint reads it
    (RFC 5280: the name itself and every name below it): what a devbox CA may vouch for."""
    return any(name == s or name.endswith("." + s) for s in subtrees)
