"""`devbox policy check`: what the proxy would decide for a URL, decided here with the same
rules (proxy/policy.py) on the addresses the name resolves to on this machine."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from devbox_cli.errors import UsageError
from proxy.policy import Decision, IPAddress, Policy, PolicyError, normalize_host, parse_ip_literal

RESOLVE_TIMEOUT = 5.0
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21, "ssh": 22, "git": 9418}


@dataclass(frozen=True)
class PolicyCheck(Decision):
    """A Decision plus what it was made on: the host and port taken from the URL, and the
    addresses the name resolved to (`resolved` False: decided on the name alone)."""

    host: str = ""
    port: int = 0
    addresses: tuple[str, ...] = ()
    resolved: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            **super().to_json(),
            "host": self.host,
            "port": self.port,
            "addresses": list(self.addresses),
            "resolved": self.resolved,
        }


def parse_target(url: str) -> tuple[str, int]:
    """(host, port) from a URL or host[:port]. The port defaults from the scheme; with no
    scheme and no port, 443 (what an HTTPS client's CONNECT would ask for)."""
    text = url.strip() if isinstance(url, str) else ""
    if not text:
        raise UsageError("the URL is empty", "for example: https://api.anthropic.com/v1/messages")
    if "://" not in text:
        text = "//" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"cannot parse {url!r} as a URL or HOST[:PORT]: {exc}") from None
    host = parts.hostname
    if not host:
        raise UsageError(f"{url!r} has no host", "for example: https://api.anthropic.com")
    scheme = parts.scheme.lower()
    if port is None:
        if scheme and scheme not in DEFAULT_PORTS:
            raise UsageError(
                f"no default port for scheme {scheme!r}", f"give one: {scheme}://{host}:PORT"
            )
        port = DEFAULT_PORTS.get(scheme, 443)
    if not 1 <= port <= 65535:
        raise UsageError(f"port {port} in {url!r} is out of range 1-65535")
    return host, port


def resolve(host: str, port: int, timeout: float = RESOLVE_TIMEOUT) -> list[IPAddress] | None:
    """Every address `host` resolves to, or None when it does not resolve (in time)."""
    result: list[Any] = []

    def lookup() -> None:
        try:
            result.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError):
            result.append(None)

    # getaddrinfo has no timeout of its own; a daemon thread keeps a dead resolver from
    # hanging `devbox policy check`.
    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(timeout)
    infos = result[0] if result else None
    if not infos:
        return None
    out: list[IPAddress] = []
    for *_, sockaddr in infos:
        ip = parse_ip_literal(str(sockaddr[0]))
        if ip is not None and ip not in out:
            out.append(ip)
    return out or None


def check_url(policy: Policy, url: str) -> PolicyCheck:
    """Decide on the name and, when the name is admitted and resolves here, on every
    address; the proxy's own addresses are not known here, so they are not checked."""
    host, port = parse_target(url)
    try:
        shown = normalize_host(host)
    except PolicyError:
        shown = host
    literal = parse_ip_literal(shown)
    # As the proxy does: a name refused on the name alone is never looked up (an
    # allow-cidr admits only the addresses of names an allow rule admits).
    decision = policy.decide(host, port)
    looked_up = literal is None and decision.allowed
    addresses = (resolve(shown, port) or []) if looked_up else []
    if addresses:
        decision = policy.decide(host, port, addresses)
    reason = decision.reason
    resolved = literal is not None or bool(addresses)
    if looked_up and not resolved:
        reason += f" (decided on the name only: {shown} does not resolve here)"
    elif literal is None and decision.rule != "invalid-host" and not looked_up:
        reason += " (refused on the name: the proxy never looks it up)"
    return PolicyCheck(
        allowed=decision.allowed,
        reason=reason,
        rule=decision.rule,
        host=shown,
        port=port,
        addresses=tuple(str(a) for a in ([literal] if literal else addresses)),
        resolved=resolved,
    )
