"""The isolation probe of `devbox doctor`: what a devbox must fail to reach, and the script a
throwaway devbox runs to try (as root, the agent's worst case).

Targets: every address of the engine's host that can be found (the gateway of every network
the engine has, and when the engine is local, this host's own addresses and the source of
its default route; for a remote engine, the addresses of its host name), outside DNS (UDP
and TCP 53 to public resolvers and to this host's resolvers, and an outside name through
Docker's embedded resolver), and the internet around the proxy (direct TCP to well-known
public addresses, no HTTP_PROXY). A connection, a TCP reset (the address answered) or a DNS
answer counts as reached; the probe passes only where every try fails. Its control: the
box does reach its own proxy, so a probe that can reach nothing at all proves nothing.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from devbox_cli.engine.docker_backend import DockerBackend

PUBLIC_RESOLVERS = ("8.8.8.8", "1.1.1.1", "9.9.9.9", "2001:4860:4860::8888")
PUBLIC_HOSTS = ("1.1.1.1", "8.8.8.8", "9.9.9.9", "208.67.222.222", "2606:4700:4700::1111")
HOST_PORTS = (22, 53, 80, 443, 2375, 2376, 3128)
EMBEDDED_DNS = "127.0.0.11"  # Docker's resolver inside every container on a user network
OUTSIDE_NAME = "example.com"
TIMEOUT = 3.0


@dataclass(frozen=True)
class Target:
    kind: str  # host | dns/udp | dns/tcp | dns-name | internet
    address: str
    ports: tuple[int, ...]
    why: str  # where the address comes from

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "address": self.address, "ports": list(self.ports)}


def targets(docker: DockerBackend, docker_host: str) -> list[Target]:
    hosts: dict[str, str] = {}
    for net in docker.networks():
        for config in (net.get("IPAM") or {}).get("Config") or []:
            gateway = (config or {}).get("Gateway")
            if gateway:
                hosts.setdefault(gateway.split("/")[0], f"gateway of network {net.get('Name')}")
    scheme = urlsplit(docker_host).scheme
    if scheme in ("", "unix", "npipe"):
        for address, dev in local_addresses():
            hosts.setdefault(address, f"an address of this host ({dev})")
        for address in default_route_sources():
            hosts.setdefault(address, "this host's default route source")
    else:
        for address in remote_addresses(docker_host):
            hosts.setdefault(address, "the engine's host")
    out = [Target("host", a, HOST_PORTS, why) for a, why in sorted(hosts.items()) if usable(a)]
    resolvers = [(a, "a public resolver") for a in PUBLIC_RESOLVERS]
    if scheme in ("", "unix", "npipe"):
        resolvers += [(a, "this host's resolver") for a in host_resolvers() if usable(a)]
    for address, why in resolvers:
        out += [Target("dns/udp", address, (53,), why), Target("dns/tcp", address, (53,), why)]
    out.append(Target("dns-name", EMBEDDED_DNS, (53,), f"{OUTSIDE_NAME} through Docker's resolver"))
    out += [Target("internet", a, (443, 80), "a public address") for a in PUBLIC_HOSTS]
    return out


def usable(address: str) -> bool:
    """Loopback is the box's own, and a link-local IPv6 address means nothing off its link."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return not ip.is_loopback and not (ip.version == 6 and ip.is_link_local)


def local_addresses() -> list[tuple[str, str]]:
    """(address, interface) for every address of this host: `ip -o addr`, else the kernel's
    IPv4 table and IPv6 address list."""
    try:
        out = subprocess.run(
            ["ip", "-o", "addr", "show"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return _proc_addresses()
    found = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] in ("inet", "inet6"):
            found.append((parts[3].split("/")[0], parts[1]))
    return found


def _proc_addresses() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        lines = []
    for before, line in itertools.pairwise(lines):
        if "/32 host LOCAL" in line:
            found.append((before.split()[-1], "?"))
    try:
        for row in Path("/proc/net/if_inet6").read_text().splitlines():
            raw, *_rest, dev = row.split()
            found.append((str(ipaddress.ip_address(bytes.fromhex(raw))), dev))
    except (OSError, ValueError):
        pass
    return found


def default_route_sources() -> list[str]:
    """The address this host sends from towards the internet (a UDP connect sends nothing)."""
    found = []
    for family, public in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((public, 53))
                found.append(s.getsockname()[0])
        except OSError:
            continue
    return found


def remote_addresses(docker_host: str) -> list[str]:
    host = urlsplit(docker_host).hostname
    if not host:
        return []
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, None)})
    except OSError:
        return []


def host_resolvers(path: str = "/etc/resolv.conf") -> list[str]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    return [p[1] for p in (line.split() for line in lines) if len(p) >= 2 and p[0] == "nameserver"]


def probe_input(found: list[Target], proxy_url: str) -> str:
    return json.dumps({"targets": [t.to_json() for t in found], "proxy": proxy_url,
                       "name": OUTSIDE_NAME, "timeout": TIMEOUT})  # fmt: skip


def parse_output(stdout: str) -> dict[str, Any]:
    """The script's JSON: {"proxy": str, "results": [[target index, port, reached, how]]}."""
    data = json.loads(stdout)
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise ValueError("not the probe's output")
    return data


# Runs in the box with python3 -c; its input (the targets) is on stdin. Standard library only.
SCRIPT = r"""
import errno, json, socket, struct, sys, threading, urllib.request
spec = json.load(sys.stdin)
timeout = spec["timeout"]
results = []
lock = threading.Lock()

def family(address):
    return socket.AF_INET6 if ":" in address else socket.AF_INET

def query(name):
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 1, 1)

def answered(reply):
    # a reply with at least one answer and no error: the name was resolved
    if len(reply) < 12:
        return False
    flags, ancount = struct.unpack(">H", reply[2:4])[0], struct.unpack(">H", reply[6:8])[0]
    return flags & 0x000F == 0 and ancount > 0

def tcp(address, port):
    s = socket.socket(family(address), socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((address, port))
        return True, "connected"
    except ConnectionRefusedError:
        return True, "refused: the address answered"
    except socket.timeout:
        return False, "timeout"
    except OSError as exc:
        return False, errno.errorcode.get(exc.errno, str(exc))
    finally:
        s.close()

def udp_dns(address, port, name, need_answer):
    s = socket.socket(family(address), socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(query(name), (address, port))
        reply = s.recv(4096)
    except socket.timeout:
        return False, "no reply"
    except OSError as exc:
        return False, errno.errorcode.get(exc.errno, str(exc))
    finally:
        s.close()
    if need_answer and not answered(reply):
        return False, "replied without an answer"
    return True, "a DNS reply"

def one(i, target, port):
    kind, address = target["kind"], target["address"]
    if kind == "dns/udp":
        reached, how = udp_dns(address, port, spec["name"], False)
    elif kind == "dns-name":
        reached, how = udp_dns(address, port, spec["name"], True)
    else:
        reached, how = tcp(address, port)
    with lock:
        results.append([i, port, reached, how])

threads = [threading.Thread(target=one, args=(i, t, p))
           for i, t in enumerate(spec["targets"]) for p in t["ports"]]
for t in threads:
    t.start()
for t in threads:
    t.join()
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    proxy = str(opener.open(spec["proxy"], timeout=timeout * 2).status)
except urllib.error.HTTPError as exc:
    proxy = str(exc.code)
except Exception as exc:
    proxy = "unreachable: " + type(exc).__name__
print(json.dumps({"proxy": proxy, "results": sorted(results)}))
"""


def probe_command() -> list[str]:
    return ["python3", "-c", SCRIPT]
