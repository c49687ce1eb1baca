"""What a devbox looks like to callers (Devbox and its parts), and the Docker labels and
container fields those views are read back from. Docker is the source of truth, so this is
the one place that knows the label schema; nothing here talks to Docker.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from devbox_cli import __version__
from devbox_cli.engine.limits import BoxLimits
from devbox_cli.engine.workspace import MountView
from proxy.config import DEFAULT_PORT, GATEWAY_ROUTE

VERSION = __version__
PROXY_HOST = "proxy"  # the proxy's alias on the devbox's own network
PROXY_URL = f"http://{PROXY_HOST}:{DEFAULT_PORT}"

LABEL_NAME = "devbox.name"
LABEL_ROLE = "devbox.role"
LABEL_VERSION = "devbox.version"
LABEL_GATEWAYS = "devbox.gateways"
LABEL_POLICY = "devbox.policy"
LABEL_EGRESS = "devbox.egress"
LABEL_STORE = "devbox.store"  # the identity of the store that made it (Store.identity)


@dataclass(frozen=True)
class Binding:
    """Gateway `gateway` bound to secret `secret` under `prefix`: the box gets $PREFIX (its
    gateway token) and $PREFIX_URL; its proxy swaps the token for the secret's value."""

    prefix: str
    gateway: str
    secret: str

    @property
    def url(self) -> str:
        return f"{PROXY_URL}{GATEWAY_ROUTE}{self.prefix}"

    def to_json(self) -> dict[str, str]:
        return {
            "prefix": self.prefix,
            "gateway": self.gateway,
            "secret": self.secret,
            "url": self.url,
        }


@dataclass(frozen=True)
class ProxyView:
    id: str | None
    status: str  # the container's state, or "missing"
    health: str | None = None  # ok | unconfigured | unreachable; None when not checked

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "health": self.health}


@dataclass(frozen=True)
class Devbox:
    name: str
    id: str | None
    status: str  # the box container's state, or "missing"
    image: str | None
    policy: str | None
    gateways: tuple[Binding, ...]
    proxy: ProxyView
    created_at: str | None = None
    egress_network: str | None = None
    limits: BoxLimits | None = None  # read from `docker inspect`: show and create, not list
    mounts: tuple[MountView, ...] = ()  # bind mounts and volumes, as Docker has them

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.id,
            "status": self.status,
            "image": self.image,
            "policy": self.policy,
            "gateways": [g.to_json() for g in self.gateways],
            "proxy": self.proxy.to_json(),
            "created_at": self.created_at,
            "egress_network": self.egress_network,
            "limits": self.limits.to_json() if self.limits else None,
            "mounts": [m.to_json() for m in self.mounts],
        }


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class DeleteResult:
    name: str
    removed: bool  # False: there was nothing left of it

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "removed": self.removed}


# -- labels and container fields -----------------------------------------------------------


def labels_for(name: str, role: str, store: str, **extra: str) -> dict[str, str]:
    return {
        LABEL_NAME: name,
        LABEL_ROLE: role,
        LABEL_VERSION: VERSION,
        LABEL_STORE: store,
        **extra,
    }


def gateways_label(bindings: Iterable[Binding]) -> str:
    return json.dumps(
        {b.prefix: {"gateway": b.gateway, "secret": b.secret} for b in bindings},
        separators=(",", ":"),
        sort_keys=True,
    )


def bindings_of(labels: Mapping[str, str]) -> tuple[Binding, ...]:
    """The gateway bindings recorded on a box's labels, by prefix."""
    try:
        raw = json.loads(labels.get(LABEL_GATEWAYS) or "{}")
    except ValueError:
        raw = {}
    if not isinstance(raw, dict):  # any engine user can label a container
        raw = {}
    return tuple(
        Binding(prefix, str(ref.get("gateway")), str(ref.get("secret")))
        for prefix, ref in sorted(raw.items())
        if isinstance(ref, dict)
    )


def iso_time(created: Any) -> str | None:
    if isinstance(created, int | float):
        return (
            datetime.fromtimestamp(created, UTC)
            .isoformat(timespec="seconds")
            .replace("+00:00", "Z")
        )
    if isinstance(created, str) and created:
        return created.split(".")[0].rstrip("Z") + "Z"
    return None


def env_of(container: Mapping[str, Any]) -> dict[str, str]:
    items = (container.get("Config") or {}).get("Env") or []
    return dict(item.split("=", 1) for item in items if "=" in item)


def state_of(container: Mapping[str, Any] | None) -> str:
    if container is None:
        return "missing"
    state = container.get("State")
    return str(state.get("Status") if isinstance(state, dict) else state)
