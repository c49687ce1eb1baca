"""How a devbox is laid out in Docker (docs/architecture.md): its network, the box and
its environment (its limits: box_limits.py), the shared egress network, and undoing a
half-made devbox.
DevboxesAPI.create_devbox and delete_devboxes drive these; none of them keeps state.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from devbox_cli.devbox_views import (
    LABEL_GATEWAYS,
    LABEL_NAME,
    LABEL_POLICY,
    LABEL_ROLE,
    LABEL_VERSION,
    PROXY_HOST,
    PROXY_URL,
    VERSION,
    gateways_label,
    labels_for,
)
from devbox_cli.errors import ConflictError, DevboxError, NotFoundError, UsageError
from devbox_cli.fastexec import BOX_PREFIX
from proxy.config import GATEWAY_ROUTE

if TYPE_CHECKING:
    from devbox_cli.docker_backend import DockerBackend

DEFAULT_IMAGE = f"devbox/default:{VERSION}"
DEFAULT_PROXY_IMAGE = f"devbox/proxy:{VERSION}"
DEFAULT_EGRESS = "devbox-egress"
PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy")
RESERVED_ENV = (*PROXY_ENV, "DEVBOX_NAME")
_ENV_FIRST = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_ENV_REST = _ENV_FIRST | set("0123456789")


# -- inputs: the CLI's spec parsers, the box's environment and limits --------------------------


def is_env_name(name: str) -> bool:
    return bool(name) and name[0] in _ENV_FIRST and _ENV_REST.issuperset(name)


def parse_gateway_spec(spec: str) -> tuple[str, str, str]:
    """`PREFIX=GATEWAY:SECRET` -> (prefix, gateway, secret)."""
    prefix, eq, rest = spec.partition("=")
    gateway, colon, secret = rest.partition(":")
    if not (eq and colon and prefix and gateway and secret):
        raise UsageError(
            f"invalid --gateway {spec!r}",
            "use PREFIX=GATEWAY:SECRET, e.g. ANTHROPIC_API_KEY=anthropic-gateway:ANTHROPIC",
        )
    return prefix, gateway, secret


def parse_env_spec(spec: str) -> tuple[str, str]:
    key, eq, value = spec.partition("=")
    if not eq or not is_env_name(key):
        raise UsageError(
            f"invalid --env {spec!r}", "use K=V where K is an environment-variable name"
        )
    return key, value


def box_environment(
    name: str,
    bindings: Mapping[str, tuple[str, ...]],
    env: dict[str, str],
    tokens: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The box's environment; refuses a prefix or --env that would shadow another."""
    owned: dict[str, str] = {k: "the proxy settings" for k in RESERVED_ENV}
    for prefix, ref in bindings.items():
        if not is_env_name(prefix):
            raise UsageError(
                f"invalid gateway prefix {prefix!r}",
                "a prefix is an environment-variable name, e.g. ANTHROPIC_API_KEY",
            )
        if len(ref) != 2 or not all(isinstance(r, str) and r for r in ref):
            raise UsageError(f"gateway binding {prefix} needs a gateway and a secret name")
        for var in (prefix, f"{prefix}_URL"):
            if var in owned:
                raise UsageError(
                    f"gateway prefix {prefix} sets {var}, which {owned[var]} also sets",
                    "pick another prefix",
                )
            owned[var] = f"gateway prefix {prefix}"
    for key in env:
        if not is_env_name(key):
            raise UsageError(f"invalid environment variable name {key!r}")
        if key in owned:
            raise UsageError(
                f"--env {key} collides with {owned[key]}",
                f"drop --env {key} or pick another gateway prefix",
            )
    out = dict(env)
    no_proxy = f"{PROXY_HOST},localhost,127.0.0.1,::1"
    out.update(
        HTTP_PROXY=PROXY_URL,
        HTTPS_PROXY=PROXY_URL,
        http_proxy=PROXY_URL,
        https_proxy=PROXY_URL,
        NO_PROXY=no_proxy,
        no_proxy=no_proxy,
        DEVBOX_NAME=name,
    )
    for prefix, token in (tokens or {}).items():
        out[prefix] = token
        out[f"{prefix}_URL"] = f"{PROXY_URL}{GATEWAY_ROUTE}{prefix}"
    return out


# -- Docker objects ------------------------------------------------------------------------


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


def start_box(
    name: str,
    image: str,
    net: str,
    env: dict[str, str],
    host: dict[str, Any],
    bindings: Mapping[str, tuple[str, str]],
    policy: str | None,
    made: list[tuple[str, str]],
) -> str:
    from devbox_cli.docker_backend import DockerBackend

    docker = DockerBackend()  # its own connection pool: this runs beside the proxy's setup
    labels = labels_for(
        name, "box", **{LABEL_GATEWAYS: gateways_label(bindings), LABEL_POLICY: policy or ""}
    )
    box_id = docker.create_container(
        image,
        name=f"{BOX_PREFIX}{name}",
        network=net,
        labels=labels,
        hostname=name,
        environment=[f"{k}={v}" for k, v in env.items()],
        # Any image becomes a long-running box; `docker exec` does the work.
        entrypoint=["sleep", "infinity"],
        command=[],
        host=host,  # box_limits.box_host_config: limits and hardening
    )
    made.append(("container", box_id))
    docker.start(box_id)
    return box_id


def fresh_name(docker: DockerBackend) -> str:
    while True:
        name = f"box-{secrets.token_hex(3)}"
        if not docker.containers(f"{LABEL_NAME}={name}"):
            return name


def check_free(docker: DockerBackend, name: str) -> None:
    taken = (
        docker.containers(f"{LABEL_NAME}={name}")
        or docker.container(f"{BOX_PREFIX}{name}")
        or docker.container(f"{BOX_PREFIX}{name}-proxy")
        or docker.network(f"{BOX_PREFIX}{name}-net")
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


def undo(docker: DockerBackend, made: list[tuple[str, str]]) -> None:
    for kind, ident in reversed(list(made)):
        try:
            if kind == "container":
                docker.remove_container(ident)
            else:
                docker.remove_network(ident)
        except DevboxError:
            pass  # best effort; the original error is what the user needs to see


def remove_default_egress(docker: DockerBackend) -> None:
    net = docker.network(DEFAULT_EGRESS)
    if net and (net.get("Labels") or {}).get(LABEL_ROLE) == "egress" and not net.get("Containers"):
        with contextlib.suppress(DevboxError):  # a devbox being created is joining it
            docker.remove_network(net["Id"])


class Background:
    """Run one function on a thread; result() joins and re-raises its exception."""

    def __init__(self, fn: Callable[[], str]) -> None:
        self._value: str | None = None
        self._error: BaseException | None = None

        def target() -> None:
            try:
                self._value = fn()
            except BaseException as exc:
                self._error = exc

        self._thread = threading.Thread(target=target, daemon=True)
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    def result(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value
