"""Name resolution for the forward side, and the proxy's own addresses.

The forward side resolves each name exactly once, checks every address it got, and connects
only to those: `resolve` is that one lookup. `local_addresses` lists the addresses of this
container's interfaces, which the policy refuses as destinations (an agent must not reach the
proxy's admin or gateway surfaces through the forward path under another name).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from proxy.context import IPAddress

DNS_TIMEOUT = 5.0
MAX_ADDRESSES = 16  # a name with hundreds of A records gets checked, but only so many


async def resolve(host: str, port: int, *, timeout: float = DNS_TIMEOUT) -> list[IPAddress]:
    """Every address `host` resolves to for TCP, deduplicated in answer order.

    Raises OSError when the name does not resolve or the lookup times out.
    """
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise OSError(f"lookup of {host} timed out") from None
    except UnicodeError:
        raise OSError(f"{host} is not a valid name") from None
    addresses = addresses_of(infos)
    if not addresses:
        raise OSError(f"{host} has no addresses")
    return addresses


def addresses_of(infos: Iterable[tuple[Any, ...]]) -> list[IPAddress]:
    """The distinct addresses of getaddrinfo answers, in answer order, at most MAX_ADDRESSES."""
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        try:
            # the scope id of a link-local answer ("fe80::1%eth0") is not part of the address
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        except ValueError:
            continue
        if ip not in addresses:
            addresses.append(ip)
        if len(addresses) >= MAX_ADDRESSES:
            break
    return addresses


def local_addresses(listen: Iterable[str] = ()) -> frozenset[IPAddress]:
    """The addresses this host (container) answers on: interfaces, hostname, listen addresses.

    Best effort from several sources, because any one of them may be missing in a container
    (no /proc/net/fib_trie under gVisor, a hostname that does not resolve, ...).
    """
    found: set[IPAddress] = set()
    for text in listen:
        ip = _ip(text.strip("[]"))
        if ip is not None and not ip.is_unspecified:
            found.add(ip)
    found.update(_fib_trie_locals(_read("/proc/net/fib_trie")))
    found.update(_if_inet6(_read("/proc/net/if_inet6")))
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        infos = []
    for info in infos:
        ip = _ip(str(info[4][0]).split("%", 1)[0])
        if ip is not None:
            found.add(ip)
    return frozenset(found)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _fib_trie_locals(text: str) -> set[IPAddress]:
    """IPv4 addresses the kernel's routing trie marks as local ("/32 host LOCAL")."""
    found: set[IPAddress] = set()
    previous = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("/32 host LOCAL") and previous.startswith("|--"):
            ip = _ip(previous[3:].strip())
            if ip is not None:
                found.add(ip)
        previous = stripped
    return found


def _if_inet6(text: str) -> set[IPAddress]:
    """IPv6 interface addresses: the first field of each line is 32 hex digits."""
    found: set[IPAddress] = set()
    for line in text.splitlines():
        fields = line.split()
        if fields and len(fields[0]) == 32:
            try:
                found.add(ipaddress.IPv6Address(int(fields[0], 16)))
            except ValueError:
                continue
    return found
