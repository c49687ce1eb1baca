"""What every request handler of the proxy shares: the live config and compiled policy,
the upstream session, the audit log and the proxy's own addresses.

The gateway side (proxy/gateway.py) and the forward side (proxy/forward.py, connect.py) take a
ProxyContext; proxy/app.py builds it and swaps `state` atomically on a live reload, so a
request in flight keeps the State it started with.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from proxy.hosts import IPAddress

if TYPE_CHECKING:
    import aiohttp

    from proxy.certs import LeafCache
    from proxy.config import GatewayBinding, ProxyConfig
    from proxy.policy import Policy
    from proxy.redact import Redactor

# a request head (request line + headers) of a client, or of a plain-HTTP tunnel, at most
MAX_HEAD_BYTES = 32 * 1024

# resolve(host, port) -> addresses; raises OSError when the name does not resolve
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]


@dataclass(frozen=True)
class Settings:
    """Limits and timeouts; every one is a knob of `python -m proxy` (see __main__)."""

    max_head_bytes: int = MAX_HEAD_BYTES
    header_timeout: float = 10.0  # slowloris: a request head must arrive within this
    connect_timeout: float = 10.0  # TCP/TLS connect to an upstream
    idle_timeout: float = 900.0  # a silent stream (an LLM thinking) is cut only after this
    max_connections: int = 512
    stream_chunk: int = 64 * 1024


@dataclass(frozen=True)
class State:
    """One immutable generation of configuration; replaced whole on reload."""

    config: ProxyConfig
    policy: Policy | None  # None: no policy attached, every public destination allowed
    gateways: dict[str, GatewayBinding]  # by prefix
    # per-gateway TLS contexts (system CAs + the gateway's ca_cert), built once per load
    upstream_ssl: dict[str, ssl.SSLContext] = field(default_factory=dict)
    # per-gateway redaction of reflected credentials, compiled once per load
    redactors: dict[str, Redactor] = field(default_factory=dict)
    # every gateway token of the devbox: none of them ever goes upstream
    tokens: tuple[str, ...] = ()
    # (host, port) -> the gateway whose credential goes to it; TLS terminated by the proxy
    intercepts: dict[tuple[str, int], GatewayBinding] = field(default_factory=dict)
    # the leaf certificates of those hosts, minted with the devbox's CA (None: no CA)
    leaves: LeafCache | None = None


@dataclass
class ProxyContext:
    state: State | None  # None until the CLI has pushed a config: everything fails closed
    settings: Settings
    session: aiohttp.ClientSession | None = None  # gateway upstreams; made in cleanup_ctx
    audit: Callable[[dict[str, Any]], None] = lambda record: None  # one JSON line per request
    resolve: Resolver | None = None
    own_addresses: frozenset[IPAddress] = field(default_factory=frozenset)
