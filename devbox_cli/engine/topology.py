"""How a devbox is laid out in Docker (docs/architecture.md): its own network, its proxy
container, its box container, the shared egress network, and a rollback that removes a
half-made devbox. services/create.py drives these; none of them keeps state.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from devbox_cli.engine.views import (
    LABEL_EGRESS,
    LABEL_GATEWAYS,
    LABEL_NAME,
    LABEL_POLICY,
    LABEL_ROLE,
    LABEL_VERSION,
    PROXY_HOST,
    VERSION,
    Binding,
    gateways_label,
    labels_for,
)
from devbox_cli.errors import ConflictError, DevboxError, NotFoundError
from devbox_cli.names import box_container, box_network, proxy_container

if TYPE_CHECKING:
    from devbox_cli.engine.docker_backend import DockerBackend

DEFAULT_EGRESS = "devbox-egress"

PROXY_HOST_CONFIG: dict[str, Any] = {
    "restart_policy": {"Name": "unless-stopped"},
    "read_only": True,
    # The config (with the real credentials) lives only here: memory, proxy user only.
    "tmpfs": {"/run/devbox": "uid=10001,gid=10001,mode=0700,size=4m", "/tmp": "size=16m"},  # noqa: S108,
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "mem_limit": "512m",
    "memswap_limit": "512m",
    "pids_limit": 256,
    # Twice a box's CPU weight: a box that spins every core still leaves its proxy (and its
    # neighbours' proxies) their turn.
    "cpu_shares": 2048,
    # Its stdout is the egress audit log, which a box's requests grow: keep the last 100 MB.
    "log_config": {"type": "json-file", "config": {"max-size": "50m", "max-file": "2"}},
}


class Rollback:
    """The Docker objects made so far; if the `with` block fails they are removed again,
    newest first. Containers may be recorded from another thread."""

    def __init__(self, docker: DockerBackend) -> None:
        self.docker = docker
        self._made: list[tuple[str, str]] = []  # ("container" | "network" | "volume", id)
        self._lock = threading.Lock()

    def container(self, ident: str) -> str:
        with self._lock:
            self._made.append(("container", ident))
        return ident

    def network(self, ident: str) -> str:
        with self._lock:
            self._made.append(("network", ident))
        return ident

    def volume(self, name: str) -> str:
        with self._lock:
            self._made.append(("volume", name))
        return name

    def __enter__(self) -> Rollback:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            return
        with self._lock:
            made = list(reversed(self._made))
        for kind, ident in made:
            remove = getattr(self.docker, f"remove_{kind}")
            # best effort; the original error is what the user needs to see
            with contextlib.suppress(DevboxError):
                remove(ident)


def create_box_network(docker: DockerBackend, name: str, store: str) -> str:
    """The devbox's own network: internal (no route out) and with inhibit_ipv4 (the host
    has no address on it, so the box cannot reach any host address either)."""
    return docker.create_network(
        box_network(name),
        labels=labels_for(name, "network", store),
        internal=True,
        options={"com.docker.network.bridge.inhibit_ipv4": "true"},
    )


def create_proxy(
    docker: DockerBackend, name: str, store: str, image: str, network: str, egress: str
) -> str:
    """The proxy container (created, not started), on the devbox's network as `proxy`."""
    return docker.create_container(
        image,
        name=proxy_container(name),
        network=network,
        aliases=[PROXY_HOST],
        labels=labels_for(name, "proxy", store, **{LABEL_EGRESS: egress}),
        host=PROXY_HOST_CONFIG,
    )


def create_box(
    made: Rollback,
    *,
    name: str,
    store: str,
    image: str,
    network: str,
    environment: dict[str, str],
    host: dict[str, Any],
    bindings: tuple[Binding, ...],
    policy: str | None,
    labels: Mapping[str, str] | None = None,
    user: str | None = None,
    prepare: Callable[[DockerBackend, str], None] | None = None,
) -> str:
    """Create and start the box container on `network` only; `host` is its host config
    (engine/limits.py: limits and hardening; engine/workspace.py: mounts); `labels` are
    more of its own (they cannot replace the ones every box has). `user` overrides the
    image's user; `prepare` runs once the box is up. Returns its id."""
    from devbox_cli.engine.docker_backend import DockerBackend

    docker = DockerBackend()  # its own connection pool: this runs beside the proxy's setup
    labels = {
        **(labels or {}),
        **labels_for(
            name,
            "box",
            store,
            **{LABEL_GATEWAYS: gateways_label(bindings), LABEL_POLICY: policy or ""},
        ),
    }
    box_id = made.container(
        docker.create_container(
            image,
            name=box_container(name),
            network=network,
            labels=labels,
            hostname=name,
            environment=[f"{k}={v}" for k, v in environment.items()],
            # Any image becomes a long-running box; `docker exec` does the work.
            entrypoint=["sleep", "infinity"],
            command=[],
            host=host,
            **({"user": user} if user else {}),
        )
    )
    docker.start(box_id)
    if prepare is not None:
        prepare(docker, box_id)
    return box_id


def fresh_name(docker: DockerBackend) -> str:
    while True:
        name = f"box-{secrets.token_hex(3)}"
        if not docker.containers(f"{LABEL_NAME}={name}"):
            return name


def check_free(docker: DockerBackend, name: str) -> None:
    taken = (
        docker.containers(f"{LABEL_NAME}={name}")
        or docker.container(box_container(name))
        or docker.container(proxy_container(name))
        or docker.network(box_network(name))
    )
    if taken:
        raise ConflictError(
            f"devbox {name} already exists",
            f"pick another name, or remove it with `devbox delete {name}`",
        )


def egress_network(docker: DockerBackend) -> str:
    egress = os.environ.get("DEVBOX_EGRESS_NETWORK") or DEFAULT_EGRESS
    if egress != DEFAULT_EGRESS and docker.network(egress) is None:
        raise NotFoundError(
            f"no Docker network {egress} (DEVBOX_EGRESS_NETWORK)",
            "create it with `docker network create` or unset the variable",
        )
    return egress


def make_default_egress(docker: DockerBackend) -> None:
    # enable_icc=false: proxies of different devboxes cannot talk to each other.
    # ConflictError: a concurrent create made it first.
    with contextlib.suppress(ConflictError):
        docker.create_network(
            DEFAULT_EGRESS,
            labels={LABEL_ROLE: "egress", LABEL_VERSION: VERSION},
            options={"com.docker.network.bridge.enable_icc": "false"},
        )


def remove_default_egress(docker: DockerBackend) -> None:
    net = docker.network(DEFAULT_EGRESS)
    if net and (net.get("Labels") or {}).get(LABEL_ROLE) == "egress" and not net.get("Containers"):
        with contextlib.suppress(DevboxError):  # a devbox being created is joining it
            docker.remove_network(net["Id"])
