"""DevboxesAPI: devboxes on Docker (create, exec, list, show, logs, delete, repair).

One devbox NAME is three Docker objects (docs/architecture.md):

    devbox-NAME-net     internal bridge with inhibit_ipv4: no route out, and the host has no
                        address on it, so the box cannot reach any host address either
    devbox-NAME-proxy   the proxy, on that network (alias `proxy`) and on the egress network
    devbox-NAME         the box, on devbox-NAME-net only

Docker is the source of truth: everything list/show/delete need is read back from labels
and the box's environment (its gateway tokens). The real credentials reach the proxy only
over the Docker API, on the stdin of `python -m proxy.admin load` inside the proxy.

This module holds the use cases; the pieces live beside it: devbox_views (what callers get
back, and the label schema), devbox_topology (the Docker objects and the box's environment)
and proxy_push (building and pushing the proxy config, in-use checks, repair).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from devbox_cli.box_limits import box_host_config, fit_to_engine, limits_of, resolve_limits
from devbox_cli.devbox_topology import (
    DEFAULT_EGRESS,
    DEFAULT_IMAGE,
    DEFAULT_PROXY_IMAGE,
    PROXY_HOST_CONFIG,
    Background,
    box_environment,
    check_free,
    egress_network,
    fresh_name,
    is_env_name,
    make_default_egress,
    parse_env_spec,
    parse_gateway_spec,
    remove_default_egress,
    start_box,
    undo,
)
from devbox_cli.devbox_views import (
    LABEL_EGRESS,
    LABEL_GATEWAYS,
    LABEL_NAME,
    LABEL_POLICY,
    LABEL_ROLE,
    PROXY_HOST,
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
from devbox_cli.errors import DevboxRuntimeError, NotFoundError, UsageError
from devbox_cli.fastexec import BOX_PREFIX, ExecOptions, check_name
from devbox_cli.proxy_push import PROXY_PYTHON, ProxyConfigAPI, push_config

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

Progress = Callable[[str], None]


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
        cpus: str | float | None = None,
        memory: str | int | None = None,
        pids_limit: str | int | None = None,
        tmp_size: str | int | None = None,
        disk: str | int | None = None,
        runtime: str | None = None,
        progress: Progress | None = None,
    ) -> Devbox:
        """Create a devbox and return once it can run commands (proxy configured, box up).
        Everything is validated before anything is created; on a later failure whatever was
        made is removed again. Each limit not given comes from its DEVBOX_* variable, else
        the default (box_limits.py; README: Limits of a devbox)."""
        say = progress or (lambda _text: None)
        bindings = {p: tuple(ref) for p, ref in (gateways or {}).items()}
        box_env = box_environment(name or "", bindings, dict(env or {}))
        limits = resolve_limits(
            cpus=cpus, memory=memory, pids=pids_limit, tmp_size=tmp_size, disk=disk, runtime=runtime
        )
        image = image or os.environ.get("DEVBOX_IMAGE") or DEFAULT_IMAGE
        proxy_image = os.environ.get("DEVBOX_PROXY_IMAGE") or DEFAULT_PROXY_IMAGE

        say("checking gateways, secrets and policy")
        tokens = {prefix: "gwt_" + secrets.token_urlsafe(32) for prefix in bindings}
        docker = self._docker()
        name = check_name(name) if name else fresh_name(docker)
        config = self._proxy_config(name, bindings, tokens, policy)  # unknown names raise here
        say("checking Docker")
        check_free(docker, name)
        for ref, what in ((image, "image"), (proxy_image, "proxy image")):
            if docker.image(ref) is None:
                raise NotFoundError(
                    f"no {what} {ref} in the local Docker engine",
                    "build the devbox images with `make images`, or pass an existing --image",
                )
        egress = egress_network(docker)
        host_config = box_host_config(fit_to_engine(limits, docker.info()))
        box_env = box_environment(name, bindings, dict(env or {}), tokens)

        made: list[tuple[str, str]] = []  # ("container"|"network", id), undone in reverse
        box: Background | None = None
        try:
            say("creating the network")
            if egress == DEFAULT_EGRESS and docker.network(egress) is None:
                make_default_egress(docker)
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
            box = Background(
                lambda: start_box(name, image, net, box_env, host_config, bindings, policy, made)
            )
            say("starting the proxy")
            proxy_id = docker.create_container(
                proxy_image,
                name=f"{BOX_PREFIX}{name}-proxy",
                network=net,
                aliases=[PROXY_HOST],
                labels=labels_for(name, "proxy", **{LABEL_EGRESS: egress}),
                host=PROXY_HOST_CONFIG,
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
            undo(docker, made)
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
            limits=limits_of(info.get("HostConfig") or {}),
        )

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
            limits=limits_of(box.get("HostConfig") or {}) if box else None,
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
            remove_default_egress(docker)
        return results
