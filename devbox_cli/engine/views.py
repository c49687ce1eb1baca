"""What a devbox looks like to callers (Devbox and its parts), and the Docker labels and
container fields those views are read back from. Docker is the source of truth, so this is
the one place that knows the label schema; nothing here talks to Docker.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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
LABEL_EXPIRES = "devbox.expires"  # on the box: when `devbox gc` may delete it (UTC_FORMAT)
# On a snapshot image (role=snapshot): its name, the devbox and image it was taken from, when.
LABEL_SNAPSHOT = "devbox.snapshot"
LABEL_SNAPSHOT_SOURCE = "devbox.snapshot.source"
LABEL_SNAPSHOT_IMAGE = "devbox.snapshot.image"
LABEL_SNAPSHOT_CREATED = "devbox.snapshot.created"
UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # the one spelling of a time in a label


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
    # From the push ledger, without asking the proxy: True when its current start took a
    # config, False when it started again since; None when not running or never pushed here.
    configured: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "health": self.health,
            "configured": self.configured,
        }


@dataclass(frozen=True)
class CAView:
    """A devbox's interception CA as `show` tells it: its fingerprint and the hosts it may
    vouch for (never its key)."""

    sha256: str
    hosts: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "hosts": list(self.hosts)}


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
    stopped_at: str | None = None  # when a stopped box stopped (its State.FinishedAt)
    expires_at: str | None = None  # its LABEL_EXPIRES, when it has a valid one
    ca: CAView | None = None  # read from the store: show and create, not list

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
            "stopped_at": self.stopped_at,
            "expires_at": self.expires_at,
            "ca": self.ca.to_json() if self.ca else None,
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


@dataclass(frozen=True)
class LifecycleResult:
    """What `devbox stop` or `start` did to one devbox: `changed` is False when it already
    was so; `error` is set when it failed (then `status` is what it was left in)."""

    name: str
    status: str
    changed: bool = False
    error: Exception | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "status": self.status,
            "changed": self.changed,
            "error": getattr(self.error, "message", None if self.ok else str(self.error)),
        }


@dataclass(frozen=True)
class Snapshot:
    """A devbox's filesystem saved as a local image (`image`), in its store's namespace."""

    name: str
    image: str  # the tag: devbox-snapshot/<store>:<name>
    id: str
    source: str | None  # the devbox it was taken from
    source_image: str | None  # that devbox's image
    created_at: str | None
    size: int | None = None  # bytes, base layers included (as `docker images` counts)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "image": self.image,
            "id": self.id,
            "source": self.source,
            "source_image": self.source_image,
            "created_at": self.created_at,
            "size": self.size,
        }


@dataclass(frozen=True)
class GcResult:
    """A devbox `devbox gc` found due: `reason` is expired or stopped; `deleted` is False
    on a dry run."""

    name: str
    reason: str
    expires_at: str | None
    stopped_at: str | None
    deleted: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "reason": self.reason,
            "expires_at": self.expires_at,
            "stopped_at": self.stopped_at,
            "deleted": self.deleted,
        }


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


def started_at(container: Mapping[str, Any] | None) -> str | None:
    """When a container last started (`State.StartedAt` of its inspect): a proxy's
    config lasts as long as that start (home.py's ledger)."""
    state = (container or {}).get("State")
    value = state.get("StartedAt") if isinstance(state, dict) else None
    return value if isinstance(value, str) and value else None


def devbox_status(box: Mapping[str, Any] | None) -> str:
    """A devbox's status, from its box container: Docker's state, but "stopped" for a box
    that exited (`devbox stop`, or its PID 1 died)."""
    state = state_of(box)
    return "stopped" if state == "exited" else state


def utc_label(when: datetime) -> str:
    return when.astimezone(UTC).strftime(UTC_FORMAT)


def parse_utc(text: object) -> datetime | None:
    """A UTC_FORMAT time, or None for anything else: labels are anyone's to write (any
    engine user can label a container), so a garbage value is no time, never an error."""
    if not isinstance(text, str) or len(text) != len("2000-01-01T00:00:00Z"):
        return None
    try:
        when = datetime.strptime(text, UTC_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
    # strptime also takes other digits (fullwidth ...) and a lower-case t or z: only the
    # one spelling we write is a time
    return when if utc_label(when) == text else None


def expiry_of(labels: Mapping[str, str]) -> datetime | None:
    """When the box carrying `labels` expires; None when it does not (or the label is not
    a time we wrote)."""
    return parse_utc(labels.get(LABEL_EXPIRES))


def finished_at(container: Mapping[str, Any] | None) -> datetime | None:
    """When a stopped container stopped (`docker inspect`'s State.FinishedAt, RFC 3339
    with nanoseconds); None when it is running or never stopped."""
    state = (container or {}).get("State")
    if not isinstance(state, dict) or state.get("Status") != "exited":
        return None
    text = state.get("FinishedAt")
    if not isinstance(text, str) or not text.endswith("Z"):
        return None
    when = parse_utc(text[:19] + "Z")
    return when if when and when.year > 1 else None  # 0001-01-01: never


def expiry_text(labels: Mapping[str, str]) -> str | None:
    """The expiry label when it is a valid time, for the views."""
    expires = expiry_of(labels)
    return utc_label(expires) if expires else None


def stopped_text(container: Mapping[str, Any] | None) -> str | None:
    """When a stopped container stopped, for the views."""
    stopped = finished_at(container)
    return utc_label(stopped) if stopped else None
