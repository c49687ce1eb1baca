"""The proxy's configuration: the one contract between the devbox CLI and the proxy.

Pure (stdlib only), so the CLI imports it to build a config and the proxy to load one.
The CLI sends it as JSON to the running proxy (see proxy/admin.py); it holds real
credentials, so it lives only in the proxy's memory and in a tmpfs file inside the
proxy container, and every object that holds a credential has a redacting repr.

JSON shape (version 1):

    {
      "version": 1,
      "devbox": "agent-with-gateway",
      "gateways": [
        {
          "prefix": "ANTHROPIC_API_KEY",          # env var name; route is /gw/<prefix>/
          "token": "gwt_...",                     # the worthless token the devbox holds
          "endpoint": "https://api.anthropic.com",# upstream base URL, may carry a path prefix;
                                                  # null: no route, only intercepted hosts
          "hosts": ["github.com", "git.corp:8443"], # intercepted (TLS terminated) hosts, port
                                                  # 443 unless given; each needs "ca"
          "auth": {"type": "bearer"},             # or header+key, basic, query+key
          "credential": "sk-ant-...",             # the real secret (hazmat)
          "headers": [{"name": "x-org", "value": "acme"}],
          "ca_cert": "-----BEGIN CERTIFICATE-----..." or null
        }
      ],
      "policy": null or {"name": "p", "allow": [...], "deny": [...],
                         "allow_cidr": [...], "allow_all": false},
      "ca": null or {"cert": "-----BEGIN CERTIFICATE-----...",
                     "key": "-----BEGIN PRIVATE KEY-----..."}   # hazmat
    }

`policy: null` means no policy attached: every public destination is allowed. `ca` is the
devbox's interception CA (proxy/certs.py), which mints the certificates of the hosts the
gateways intercept; a host is named by one gateway of a devbox at most.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

CONFIG_VERSION = 1
GATEWAY_ROUTE = "/gw/"  # PREFIX_URL = <proxy base>/gw/<PREFIX>
HEALTH_PATH = "/_devbox/health"
DEFAULT_PORT = 3128
MAX_CUSTOM_HEADERS = 8

AuthType = Literal["bearer", "header", "basic", "query"]
AUTH_TYPES: tuple[str, ...] = ("bearer", "header", "basic", "query")


class ConfigError(ValueError):
    """The config is malformed. The message never contains a credential."""


def _redact(_: str) -> str:
    return "'***'"


@dataclass(frozen=True)
class Auth:
    """How the real credential is sent upstream. `key` is the header or query parameter."""

    type: AuthType = "bearer"
    key: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.key is not None:
            out["key"] = self.key
        return out


@dataclass(frozen=True)
class Header:
    """A custom header added to every upstream request; `value` may be a secret's value."""

    name: str
    value: str = field(repr=False)
    secret: bool = False

    def __repr__(self) -> str:
        shown = _redact(self.value) if self.secret else repr(self.value)
        return f"Header(name={self.name!r}, value={shown}, secret={self.secret})"


@dataclass(frozen=True)
class GatewayBinding:
    prefix: str
    token: str = field(repr=False)
    endpoint: str | None  # None: a host gateway only, its /gw/<prefix>/ route answers 404
    auth: Auth
    credential: str = field(repr=False)
    headers: tuple[Header, ...] = ()
    ca_cert: str | None = field(default=None, repr=False)
    hosts: tuple[str, ...] = ()  # intercepted hosts, `host` or `host:port`

    def __repr__(self) -> str:
        return (
            f"GatewayBinding(prefix={self.prefix!r}, endpoint={self.endpoint!r}, "
            f"hosts={self.hosts!r}, auth={self.auth!r}, token='***', credential='***', "
            f"headers={self.headers!r})"
        )

    def secret_values(self) -> tuple[str, ...]:
        """Every value that must never leave the proxy toward the devbox or a log."""
        return (self.credential, *(h.value for h in self.headers if h.secret))


@dataclass(frozen=True)
class PolicySpec:
    name: str
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    allow_cidr: tuple[str, ...] = ()
    allow_all: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "allow": list(self.allow),
            "deny": list(self.deny),
            "allow_cidr": list(self.allow_cidr),
            "allow_all": self.allow_all,
        }


@dataclass(frozen=True)
class Authority:
    """A devbox's interception CA as PEM text: `cert` is public, `key` is hazmat."""

    cert: str
    key: str = field(repr=False)

    def __repr__(self) -> str:
        return "Authority(cert=..., key='***')"

    def to_json(self) -> dict[str, str]:
        return {"cert": self.cert, "key": self.key}


@dataclass(frozen=True)
class ProxyConfig:
    devbox: str
    gateways: tuple[GatewayBinding, ...] = ()
    policy: PolicySpec | None = None
    ca: Authority | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": CONFIG_VERSION,
            "devbox": self.devbox,
            "gateways": [
                {
                    "prefix": g.prefix,
                    "token": g.token,
                    "endpoint": g.endpoint,
                    "auth": g.auth.to_json(),
                    "credential": g.credential,
                    "headers": [
                        {"name": h.name, "value": h.value, "secret": h.secret} for h in g.headers
                    ],
                    "ca_cert": g.ca_cert,
                    "hosts": list(g.hosts),
                }
                for g in self.gateways
            ],
            "policy": self.policy.to_json() if self.policy else None,
            "ca": self.ca.to_json() if self.ca else None,
        }

    def dumps(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    @classmethod
    def loads(cls, data: bytes | str) -> ProxyConfig:
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config is not valid JSON: {exc.__class__.__name__}") from None
        return cls.from_json(raw)

    @classmethod
    def from_json(cls, raw: Any) -> ProxyConfig:
        if not isinstance(raw, dict):
            raise ConfigError("config must be a JSON object")
        if raw.get("version") != CONFIG_VERSION:
            raise ConfigError(f"unsupported config version {raw.get('version')!r}")
        gateways = tuple(_gateway(g, i) for i, g in enumerate(_list(raw, "gateways")))
        prefixes = [g.prefix for g in gateways]
        if len(set(prefixes)) != len(prefixes):
            raise ConfigError("gateway prefixes must be unique")
        policy, ca = raw.get("policy"), raw.get("ca")
        if ca is not None and not isinstance(ca, dict):
            raise ConfigError("ca must be an object or null")
        return cls(
            devbox=_str(raw, "devbox"),
            gateways=gateways,
            policy=None if policy is None else _policy(policy),
            ca=None if ca is None else Authority(cert=_str(ca, "cert"), key=_str(ca, "key")),
        )


def _str(raw: dict[str, Any], key: str, *, optional: bool = False) -> Any:
    value = raw.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key!r} must be a non-empty string")
    return value


def _list(raw: dict[str, Any], key: str) -> list[Any]:
    value = raw.get(key, [])
    if not isinstance(value, list):
        raise ConfigError(f"{key!r} must be a list")
    return value


def _gateway(raw: Any, index: int) -> GatewayBinding:
    if not isinstance(raw, dict):
        raise ConfigError(f"gateways[{index}] must be an object")
    auth_raw = raw.get("auth") or {"type": "bearer"}
    if not isinstance(auth_raw, dict) or auth_raw.get("type") not in AUTH_TYPES:
        raise ConfigError(f"gateways[{index}].auth.type must be one of {', '.join(AUTH_TYPES)}")
    auth = Auth(type=auth_raw["type"], key=_str(auth_raw, "key", optional=True))
    if auth.type in ("header", "query") and not auth.key:
        raise ConfigError(f"gateways[{index}].auth of type {auth.type} needs a key")
    headers_raw = _list(raw, "headers")
    if len(headers_raw) > MAX_CUSTOM_HEADERS:
        raise ConfigError(f"gateways[{index}] has more than {MAX_CUSTOM_HEADERS} headers")
    headers = tuple(
        Header(name=_str(h, "name"), value=str(h.get("value", "")), secret=bool(h.get("secret")))
        for h in headers_raw
        if isinstance(h, dict)
    )
    if len(headers) != len(headers_raw):
        raise ConfigError(f"gateways[{index}].headers must be objects")
    hosts = _list(raw, "hosts")
    if not all(isinstance(h, str) and h for h in hosts):
        raise ConfigError(f"gateways[{index}].hosts must be a list of host names")
    # Neither an endpoint nor hosts is allowed: a host gateway bound to a devbox whose CA
    # covers none of its hosts does nothing there (its route answers 404).
    endpoint = _str(raw, "endpoint", optional=True)
    return GatewayBinding(
        prefix=_str(raw, "prefix"),
        token=_str(raw, "token"),
        endpoint=endpoint,
        hosts=tuple(hosts),
        auth=auth,
        credential=_str(raw, "credential"),
        headers=headers,
        ca_cert=_str(raw, "ca_cert", optional=True),
    )


def _policy(raw: Any) -> PolicySpec:
    if not isinstance(raw, dict):
        raise ConfigError("policy must be an object or null")

    def strings(key: str) -> tuple[str, ...]:
        items = _list(raw, key)
        if not all(isinstance(i, str) for i in items):
            raise ConfigError(f"policy.{key} must be a list of strings")
        return tuple(items)

    return PolicySpec(
        name=_str(raw, "name"),
        allow=strings("allow"),
        deny=strings("deny"),
        allow_cidr=strings("allow_cidr"),
        allow_all=bool(raw.get("allow_all", False)),
    )
