"""DevboxesAPI: devboxes on Docker (create, exec, list, show, logs, delete, repair).

One devbox NAME is three Docker objects (docs/architecture.md):

    devbox-NAME-net     internal bridge with inhibit_ipv4: no route out, and the host has no
                        address on it, so the box cannot reach any host address either
    devbox-NAME-proxy   the proxy, on that network (alias `proxy`) and on the egress network
    devbox-NAME         the box, on devbox-NAME-net only

Docker is the source of truth: everything list/show/delete need is read back from labels
and the box's environment (its gateway tokens). The real credentials reach the proxy only
over the Docker API, on the stdin of `python -m proxy.admin load` inside the proxy.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from devbox_cli.devbox_views import (
    LABEL_EGRESS,
    LABEL_GATEWAYS,
    LABEL_NAME,
    LABEL_POLICY,
    LABEL_ROLE,
    LABEL_VERSION,
    PROXY_HOST,
    PROXY_URL,
    VERSION,
    DeleteResult,
    Devbox,
    ExecResult,
    GatewayView,
    ProxyView,
    gateway_views,
    gateways_label,
    iso_time,
    labels_for,
    state_of,
)
from devbox_cli.errors import (
    ConflictError,
    DevboxError,
    DevboxRuntimeError,
    NotFoundError,
    UsageError,
)
from devbox_cli.fastexec import BOX_PREFIX, ExecOptions, check_name
from devbox_cli.proxy_push import PROXY_PYTHON, ProxyConfigAPI, push_config
from proxy.config import GATEWAY_ROUTE

if TYPE_CHECKING:
    from devbox_cli.docker_backend import DockerBackend

# Callers import the views and the CLI's parse helpers from here, wherever they are defined.
__all__ = [
    "DeleteResult",
    "Devbox",
    "DevboxesAPI",
    "ExecResult",
    "GatewayView",
    "ProxyView",
    "check_name",
    "is_env_name",
    "parse_env_spec",
    "parse_gateway_spec",
]

DEFAULT_IMAGE = f"devbox/default:{VERSION}"
DEFAULT_PROXY_IMAGE = f"devbox/proxy:{VERSION}"
DEFAULT_EGRESS = "devbox-egress"
PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy")
RESERVED_ENV = (*PROXY_ENV, "DEVBOX_NAME")
_ENV_FIRST = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_ENV_REST = _ENV_FIRST | set("0123456789")

Progress = Callable[[str], None]


# -- parsing helpers the CLI shares --------------------------------------------------------


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


class DevboxesAPI(ProxyConfigAPI):
    _docker_client: DockerBackend | None = None

    def _docker(self) -> DockerBackend:
        if self._docker_client is None:
            from devbox_cli.docker_backend import DockerBackend

            self._docker_client = DockerBackend()
        return self._docker_client

    # -- create ----------------------------------------------------------------------------

    def create_devbox(
        self,
        name: str | None = None,
        *,
        image: str | None = None,
        gateways: Mapping[str, tuple[str, str]] | None = None,
        policy: str | None = None,
        env: Mapping[str, str] | None = None,
        cpus: float | None = None,
        memory: str | None = None,
        progress: Progress | None = None,
    ) -> Devbox:
        """Create a devbox and return once it can run commands (proxy configured, box up).
        Everything is validated before anything is created; on a later failure whatever was
        made is removed again."""
        say = progress or (lambda _text: None)
        bindings = {p: tuple(ref) for p, ref in (gateways or {}).items()}
        box_env = self._box_env(name or "", bindings, dict(env or {}))
        host_limits = _limits(cpus, memory)
        image = image or os.environ.get("DEVBOX_IMAGE") or DEFAULT_IMAGE
        proxy_image = os.environ.get("DEVBOX_PROXY_IMAGE") or DEFAULT_PROXY_IMAGE

        say("checking gateways, secrets and policy")
        tokens = {prefix: "gwt_" + secrets.token_urlsafe(32) for prefix in bindings}
        docker = self._docker()
        name = check_name(name) if name else self._fresh_name(docker)
        config = self._proxy_config(name, bindings, tokens, policy)  # unknown names raise here
        say("checking Docker")
        self._check_free(docker, name)
        for ref, what in ((image, "image"), (proxy_image, "proxy image")):
            if docker.image(ref) is None:
                raise NotFoundError(
                    f"no {what} {ref} in the local Docker engine",
                    "build the devbox images with `make images`, or pass an existing --image",
                )
        egress = self._egress_network(docker)
        box_env = self._box_env(name, bindings, dict(env or {}), tokens)

        made: list[tuple[str, str]] = []  # ("container"|"network", id), undone in reverse
        box: _Background | None = None
        try:
            say("creating the network")
            if egress == DEFAULT_EGRESS and docker.network(egress) is None:
                self._make_default_egress(docker)
            net = f"{BOX_PREFIX}{name}-net"
            made.append(
                (
                    "network",
                    docker.create_network(
                        net,
                        labels=labels_for(name, "network"),
                        internal=True,
                        options={"com.docker.network.bridge.inhibit_ipv4": "true"},
                    ),
                )
            )
            # The box starts beside the proxy; it has no egress until the proxy is configured.
            box = _Background(
                lambda: self._start_box(
                    name, image, net, box_env, host_limits, bindings, policy, made
                )
            )
            say("starting the proxy")
            proxy_id = docker.create_container(
                proxy_image,
                name=f"{BOX_PREFIX}{name}-proxy",
                network=net,
                aliases=[PROXY_HOST],
                labels=labels_for(name, "proxy", **{LABEL_EGRESS: egress}),
                host=_PROXY_HOST_CONFIG,
            )
            made.append(("container", proxy_id))
            docker.connect(proxy_id, egress)
            docker.start(proxy_id)
            say("configuring the proxy")
            push_config(docker, name, proxy_id, config)
            box_id = box.result()
            say("waiting for the devbox")
            info = docker.container(box_id)
            if state_of(info) != "running":
                raise DevboxRuntimeError(
                    f"the devbox container exited right away ({state_of(info)})",
                    "the image needs a `sleep` binary; check `docker logs` of the container",
                )
        except BaseException:
            if box is not None:
                box.join()  # it may still be creating the box; undo that too
            self._undo(docker, made)
            raise
        return Devbox(
            name=name,
            id=box_id[:12],
            status="running",
            image=image,
            policy=policy,
            gateways=gateway_views({LABEL_GATEWAYS: gateways_label(bindings)}),
            proxy=ProxyView(proxy_id[:12], "running", "ok"),
            created_at=iso_time(info.get("Created") if info else None),
            egress_network=egress,
        )

    def _start_box(
        self,
        name: str,
        image: str,
        net: str,
        env: dict[str, str],
        limits: dict[str, Any],
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
            host={
                "init": True,
                "restart_policy": {"Name": "unless-stopped"},
                "cap_drop": ["NET_RAW"],
                **limits,
            },
        )
        made.append(("container", box_id))
        docker.start(box_id)
        return box_id

    def _box_env(
        self,
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

    def _fresh_name(self, docker: DockerBackend) -> str:
        while True:
            name = f"box-{secrets.token_hex(3)}"
            if not docker.containers(f"{LABEL_NAME}={name}"):
                return name

    def _check_free(self, docker: DockerBackend, name: str) -> None:
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

    def _egress_network(self, docker: DockerBackend) -> str:
        egress = os.environ.get("DEVBOX_EGRESS_NETWORK") or DEFAULT_EGRESS
        if egress != DEFAULT_EGRESS and docker.network(egress) is None:
            raise NotFoundError(
                f"no Docker network {egress} (DEVBOX_EGRESS_NETWORK)",
                "create it with `docker network create` or unset the variable",
            )
        return egress

    def _make_default_egress(self, docker: DockerBackend) -> None:
        # enable_icc=false: proxies of different devboxes cannot talk to each other.
        # ConflictError: a concurrent create made it first.
        with contextlib.suppress(ConflictError):
            docker.create_network(
                DEFAULT_EGRESS,
                labels={LABEL_ROLE: "egress", LABEL_VERSION: VERSION},
                options={"com.docker.network.bridge.enable_icc": "false"},
            )

    def _undo(self, docker: DockerBackend, made: list[tuple[str, str]]) -> None:
        for kind, ident in reversed(list(made)):
            try:
                if kind == "container":
                    docker.remove_container(ident)
                else:
                    docker.remove_network(ident)
            except DevboxError:
                pass  # best effort; the original error is what the user needs to see

    # -- read ------------------------------------------------------------------------------

    def list_devboxes(self) -> list[Devbox]:
        docker = self._docker()
        by_name: dict[str, dict[str, Any]] = {}
        for c in docker.containers(LABEL_NAME):
            labels = c.get("Labels") or {}
            by_name.setdefault(labels[LABEL_NAME], {})[labels.get(LABEL_ROLE, "")] = c
        for n in docker.networks(LABEL_NAME):
            by_name.setdefault(n["Labels"][LABEL_NAME], {})
        out = []
        for name, parts in sorted(by_name.items()):
            box, proxy = parts.get("box"), parts.get("proxy")
            labels = (box or {}).get("Labels") or {}
            out.append(
                Devbox(
                    name=name,
                    id=box["Id"][:12] if box else None,
                    status=state_of(box),
                    image=box.get("Image") if box else None,
                    policy=labels.get(LABEL_POLICY) or None,
                    gateways=gateway_views(labels),
                    proxy=ProxyView(proxy["Id"][:12] if proxy else None, state_of(proxy)),
                    created_at=iso_time(box.get("Created")) if box else None,
                    egress_network=((proxy or {}).get("Labels") or {}).get(LABEL_EGRESS),
                )
            )
        return out

    def get_devbox(self, name: str, *, health: bool = True) -> Devbox:
        """One devbox, with its proxy's health (configured or not) unless health=False."""
        check_name(name)
        docker = self._docker()
        box = docker.container(f"{BOX_PREFIX}{name}")
        proxy = docker.container(f"{BOX_PREFIX}{name}-proxy")
        if box is None and proxy is None and docker.network(f"{BOX_PREFIX}{name}-net") is None:
            raise NotFoundError(f"no devbox {name}", "`devbox list` shows the devboxes")
        labels = ((box or {}).get("Config") or {}).get("Labels") or {}
        state = state_of(proxy)
        checked = None
        if health and state == "running":
            code, _ = docker.exec_with_stdin(
                proxy["Id"], [PROXY_PYTHON, "-m", "proxy.admin", "health"], b"", timeout=10
            )
            checked = {0: "ok", 1: "unconfigured"}.get(code, "unreachable")
        return Devbox(
            name=name,
            id=box["Id"][:12] if box else None,
            status=state_of(box),
            image=(box.get("Config") or {}).get("Image") if box else None,
            policy=labels.get(LABEL_POLICY) or None,
            gateways=gateway_views(labels),
            proxy=ProxyView(proxy["Id"][:12] if proxy else None, state, checked),
            created_at=iso_time(box.get("Created")) if box else None,
            egress_network=((proxy or {}).get("Config", {}).get("Labels") or {}).get(LABEL_EGRESS),
        )

    def devbox_logs(
        self, name: str, *, egress: bool = False, follow: bool = False, tail: int | str = "all"
    ) -> Iterator[bytes]:
        """The box's output, or with egress=True the proxy's audit log (JSON lines)."""
        check_name(name)
        docker = self._docker()
        container = f"{BOX_PREFIX}{name}-proxy" if egress else f"{BOX_PREFIX}{name}"
        if docker.container(container) is None:
            raise NotFoundError(f"no devbox {name}", "`devbox list` shows the devboxes")
        # The audit log is the proxy's stdout; its stderr holds diagnostics.
        return docker.logs(container, follow=follow, stderr=not egress, tail=tail)

    # -- exec ------------------------------------------------------------------------------

    def exec(
        self,
        name: str,
        cmd: Iterable[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        user: str | None = None,
        stdin: str | bytes | None = None,
    ) -> ExecResult:
        """Run `cmd` in the devbox and wait for it: its exit code, stdout and stderr."""
        from devbox_cli import fastexec

        argv = list(cmd)
        if not argv:
            raise UsageError("exec needs a command")
        opts = ExecOptions(
            name, argv, env=[f"{k}={v}" for k, v in (env or {}).items()], workdir=workdir, user=user
        )
        data = stdin.encode() if isinstance(stdin, str) else stdin
        code, out, err = fastexec.run(opts, data)
        return ExecResult(code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    # -- delete ----------------------------------------------------------------------------

    def delete_devboxes(
        self, names: Iterable[str] = (), *, all: bool = False
    ) -> list[DeleteResult]:
        """Remove each devbox's containers and network. Deleting a missing one is not an
        error: its result says removed=False."""
        docker = self._docker()
        wanted = [check_name(n) for n in names]
        if all:
            found = {c["Labels"][LABEL_NAME] for c in docker.containers(LABEL_NAME)}
            found |= {n["Labels"][LABEL_NAME] for n in docker.networks(LABEL_NAME)}
            wanted += sorted(found - set(wanted))
        results = []
        with ThreadPoolExecutor(max_workers=4) as pool:
            for name in dict.fromkeys(wanted):
                containers = docker.containers(f"{LABEL_NAME}={name}")
                removed = any(
                    list(pool.map(lambda c: docker.remove_container(c["Id"]), containers))
                )
                for net in docker.networks(f"{LABEL_NAME}={name}"):
                    removed = docker.remove_network(net["Id"]) or removed
                results.append(DeleteResult(name, removed))
        if all:
            self._remove_default_egress(docker)
        return results

    def _remove_default_egress(self, docker: DockerBackend) -> None:
        net = docker.network(DEFAULT_EGRESS)
        if (
            net
            and (net.get("Labels") or {}).get(LABEL_ROLE) == "egress"
            and not net.get("Containers")
        ):
            with contextlib.suppress(DevboxError):  # a devbox being created is joining it
                docker.remove_network(net["Id"])


_PROXY_HOST_CONFIG: dict[str, Any] = {
    "restart_policy": {"Name": "unless-stopped"},
    "read_only": True,
    # The config (with the real credentials) lives only here: memory, proxy user only.
    "tmpfs": {"/run/devbox": "uid=10001,gid=10001,mode=0700,size=4m", "/tmp": "size=16m"},  # noqa: S108,
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "mem_limit": "512m",
    "pids_limit": 256,
}


def _limits(cpus: float | None, memory: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if cpus is not None:
        if not 0 < cpus <= (os.cpu_count() or 1):
            raise UsageError(
                f"--cpus {cpus} is out of range",
                f"use a number above 0 and at most {os.cpu_count() or 1}",
            )
        out["nano_cpus"] = int(cpus * 1e9)
    if memory is not None:
        size = memory.strip().lower()
        num = size[:-1] if size[-1:] in "bkmg" else size
        try:
            ok = float(num) > 0
        except ValueError:
            ok = False
        if not ok:
            raise UsageError(f"invalid --memory {memory!r}", "use a size like 512m or 2g")
        out["mem_limit"] = size
    return out


class _Background:
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
