"""Each devbox's proxy config: built from the store, pushed into the running proxy, and
pushed again when a secret, gateway or policy it uses changes (or by `devbox repair`).

The config holds the real credentials, so it travels only over the Docker API, on the stdin
of `python -m proxy.admin load` inside the proxy, and lands on the proxy's tmpfs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from devbox_cli.devbox_views import (
    LABEL_NAME,
    LABEL_POLICY,
    LABEL_ROLE,
    env_of,
    gateway_views,
    state_of,
)
from devbox_cli.errors import DevboxError, DevboxRuntimeError, DockerUnavailableError, NotFoundError
from devbox_cli.fastexec import BOX_PREFIX, check_name
from proxy.config import ProxyConfig

if TYPE_CHECKING:
    from devbox_cli.devbox_views import Devbox
    from devbox_cli.docker_backend import DockerBackend
    from devbox_cli.gateways import Gateway
    from proxy.config import GatewayBinding, PolicySpec

PROXY_PYTHON = "/opt/proxy/bin/python"
READY_TIMEOUT = 30.0
# `python -m proxy.admin load`, except that it imports the admin client while the proxy's
# server is still starting and then waits for its socket: one exec instead of a retry loop
# of them (each costs ~200 ms of interpreter start-up). The config itself is on stdin.
LOAD_CMD = [
    PROXY_PYTHON,
    "-c",
    "import os, sys, time\n"
    "from proxy import admin\n"
    "deadline = time.monotonic() + 10\n"
    "while not os.path.exists(admin.DEFAULT_SOCKET) and time.monotonic() < deadline:\n"
    "    time.sleep(0.01)\n"
    "sys.exit(admin.main(['load']))\n",
]


class ProxyConfigAPI:
    """Mixed into DevboxesAPI; the secrets, gateways and policies APIs call `_push_update`
    after a change and `_devboxes_using` before a delete."""

    if TYPE_CHECKING:

        def _docker(self) -> DockerBackend: ...
        def get_devbox(self, name: str, *, health: bool = True) -> Devbox: ...
        def list_gateways(self) -> list[Gateway]: ...
        def _binding(
            self, prefix: str, gateway_name: str, secret_name: str, token: str
        ) -> GatewayBinding: ...
        def _policy_spec(self, name: str) -> PolicySpec: ...

    def _proxy_config(
        self,
        name: str,
        bindings: Mapping[str, tuple[str, ...]],
        tokens: Mapping[str, str],
        policy: str | None,
    ) -> ProxyConfig:
        gateways = tuple(
            self._binding(prefix, ref[0], ref[1], tokens[prefix])
            for prefix, ref in sorted(bindings.items())
        )
        spec = self._policy_spec(policy) if policy else None
        return ProxyConfig(devbox=name, gateways=gateways, policy=spec)

    def _config_of(
        self, docker: DockerBackend, name: str
    ) -> tuple[dict[str, Any], str, ProxyConfig]:
        box = docker.container(f"{BOX_PREFIX}{name}")
        proxy = docker.container(f"{BOX_PREFIX}{name}-proxy")
        if box is None or proxy is None:
            raise NotFoundError(
                f"devbox {name} is incomplete or missing",
                f"recreate it: `devbox delete {name}` then `devbox create`",
            )
        labels = (box.get("Config") or {}).get("Labels") or {}
        env = env_of(box)
        bindings = {g.prefix: (g.gateway, g.secret) for g in gateway_views(labels)}
        missing = [p for p in bindings if not env.get(p)]
        if missing:
            raise DevboxRuntimeError(f"devbox {name} has lost its gateway token(s) {missing}")
        config = self._proxy_config(name, bindings, env, labels.get(LABEL_POLICY) or None)
        return proxy, labels.get(LABEL_POLICY) or "", config

    def repair_devbox(self, name: str) -> Devbox:
        """Start whatever of the devbox is stopped and push its proxy config again (after the
        proxy container restarted its tmpfs is empty, so it refuses all traffic until then)."""
        check_name(name)
        docker = self._docker()
        proxy, _policy, config = self._config_of(docker, name)
        for container in (f"{BOX_PREFIX}{name}-proxy", f"{BOX_PREFIX}{name}"):
            if state_of(docker.container(container)) != "running":
                docker.start(container)
        push_config(docker, name, proxy["Id"], config)
        return self.get_devbox(name)

    def _push_update(self, kind: str, name: str) -> tuple[str, ...]:
        """After secret/gateway/policy `name` was saved, push the new proxy config to every
        running devbox that uses it (live: no restart). Returns their names."""
        try:
            return tuple(sorted(self._refresh(kind, name)))
        except DevboxError as exc:
            raise type(exc)(
                f"{kind} {name} was saved, but pushing it to running devboxes failed: "
                f"{exc.message}",
                exc.hint,
            ) from None

    def _refresh(self, kind: str, name: str) -> list[str]:
        try:
            docker = self._docker()
            boxes = self._boxes(docker)
        except DockerUnavailableError:
            return []  # nothing can be running
        targets = [b for b in self._users(boxes, kind, name) if boxes[b]["state"] == "running"]

        def push(box: str) -> str:
            proxy, _policy, config = self._config_of(docker, box)
            if state_of(proxy) == "running":
                push_config(docker, box, proxy["Id"], config, timeout=5.0)
            return box

        pushed, failed = [], []
        with ThreadPoolExecutor(max_workers=4) as pool:
            for box, future in [(b, pool.submit(push, b)) for b in targets]:
                try:
                    pushed.append(future.result())
                except DevboxError as exc:
                    failed.append(f"{box} ({exc.message})")
        if failed:
            raise DevboxRuntimeError(
                f"could not update devbox(es) {', '.join(failed)}",
                "run `devbox repair NAME` for each",
            )
        return pushed

    def _devboxes_using(self, kind: str, name: str) -> list[str]:
        """Names of existing devboxes that use the secret/gateway/policy `name` (kind is
        "secret", "gateway" or "policy"). Deletes are refused while this is non-empty.
        With Docker unreachable nothing can be running, so nothing is reported."""
        try:
            boxes = self._boxes(self._docker())
        except DockerUnavailableError:
            return []
        return sorted(self._users(boxes, kind, name))

    def _users(self, boxes: dict[str, dict[str, Any]], kind: str, name: str) -> list[str]:
        if kind == "policy":
            return [b for b, c in boxes.items() if c["labels"].get(LABEL_POLICY) == name]
        gateways = {name} if kind == "gateway" else set()
        if kind == "secret" and boxes:
            # a secret also reaches a devbox as a custom header of a gateway it uses
            gateways = {
                g.name for g in self.list_gateways() if any(h.secret == name for h in g.headers)
            }
        return [
            b
            for b, c in boxes.items()
            if any(
                g.gateway in gateways or (kind == "secret" and g.secret == name)
                for g in gateway_views(c["labels"])
            )
        ]

    def _boxes(self, docker: DockerBackend) -> dict[str, dict[str, Any]]:
        return {
            c["Labels"][LABEL_NAME]: {"labels": c["Labels"], "state": c.get("State")}
            for c in docker.containers(LABEL_NAME, f"{LABEL_ROLE}=box")
        }


def push_config(
    docker: DockerBackend,
    name: str,
    proxy: str,
    config: ProxyConfig,
    timeout: float = READY_TIMEOUT,
) -> None:
    """Hand the config to the proxy on the stdin of `proxy.admin load`, retrying while its
    server is still starting (admin exit 2)."""
    payload = config.dumps()
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        code, output = docker.exec_with_stdin(proxy, LOAD_CMD, payload)
        if code == 0:
            return
        if (
            code == 2
            and time.monotonic() < deadline
            and state_of(docker.container(proxy)) == "running"
        ):
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
            continue
        reason = _scrub(output.strip().splitlines()[-1:] or ["no output"], config)
        raise DevboxRuntimeError(
            f"the proxy of devbox {name} did not take its config: {reason}",
            f"see `docker logs {BOX_PREFIX}{name}-proxy`",
        )


def _scrub(lines: list[str], config: ProxyConfig) -> str:
    """Belt and braces: the admin tool never echoes a credential, but make sure of it."""
    text = " ".join(lines)
    for binding in config.gateways:
        for value in (*binding.secret_values(), binding.token):
            if value:
                text = text.replace(value, "***")
    return text
