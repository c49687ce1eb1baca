"""The one component that pushes configs to running proxies: into a new devbox's proxy,
again when a secret, gateway or policy it uses changes (live updates), and by `devbox
repair`; and the in-use checks before a delete. proxy_config.py builds the configs.

The config holds the real credentials, so it travels only over the Docker API, on the stdin
of `python -m proxy.admin load` inside the proxy, and lands on the proxy's tmpfs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from devbox_cli.engine.views import (
    LABEL_NAME,
    LABEL_POLICY,
    LABEL_ROLE,
    LABEL_STORE,
    bindings_of,
    env_of,
    started_at,
    state_of,
)
from devbox_cli.errors import (
    ConflictError,
    DevboxError,
    DevboxRuntimeError,
    DockerUnavailableError,
    NotFoundError,
    UsageError,
)
from devbox_cli.home import PushLedger
from devbox_cli.names import box_container, check_devbox_name, proxy_container
from devbox_cli.services.gateways import gateways_using_secret, read_gateways
from devbox_cli.services.kinds import ResourceKind

if TYPE_CHECKING:
    from devbox_cli.engine.docker_backend import DockerBackend
    from devbox_cli.services.proxy_config import ProxyConfigs
    from devbox_cli.store import Store
    from proxy.config import ProxyConfig

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


class ProxyPusher:
    """Implements kinds.ProxyUpdates for the secret, gateway and policy services."""

    def __init__(
        self, engine: Callable[[], DockerBackend], store: Store, configs: ProxyConfigs
    ) -> None:
        self.engine = engine
        self.store = store
        self.configs = configs
        self.ledger = PushLedger(store.home)  # which start of each proxy holds its config

    def repair(self, name: str) -> None:
        """Start whatever of the devbox is stopped and push its proxy config again (after the
        proxy container restarted its tmpfs is empty, so it refuses all traffic until then)."""
        check_devbox_name(name)
        docker = self.engine()
        proxy, config = self._config_of(docker, name)
        for container in (proxy_container(name), box_container(name)):
            if state_of(docker.container(container)) != "running":
                docker.start(container)
        push_config(docker, name, proxy["Id"], config, ledger=self.ledger)

    def push_update(self, kind: ResourceKind, name: str) -> tuple[str, ...]:
        """After secret/gateway/policy `name` was saved, push the new proxy config to every
        running devbox that uses it (live: no restart). Returns their names."""
        try:
            return tuple(sorted(self.refresh(kind, name)))
        except DevboxError as exc:
            raise type(exc)(
                f"{kind} {name} was saved, but pushing it to running devboxes failed: "
                f"{exc.message}",
                exc.hint,
            ) from None

    def refresh(self, kind: ResourceKind, name: str) -> list[str]:
        try:
            docker = self.engine()
            boxes = self._boxes(docker)
        except DockerUnavailableError:
            return []  # nothing can be running
        targets = [b for b in self._users(boxes, kind, name) if boxes[b]["state"] == "running"]

        def push(box: str) -> str:
            proxy, config = self._config_of(docker, box)
            if state_of(proxy) == "running":
                push_config(docker, box, proxy["Id"], config, timeout=5.0, ledger=self.ledger)
            return box

        pushed: list[str] = []
        failed: dict[str, str] = {}
        with ThreadPoolExecutor(max_workers=4) as pool:
            for box, future in [(b, pool.submit(push, b)) for b in targets]:
                try:
                    pushed.append(future.result())
                except DevboxError as exc:
                    failed[box] = exc.message
        if failed:
            reasons = ", ".join(f"{box} ({why})" for box, why in failed.items())
            repairs = "; ".join(f"`devbox repair {box}`" for box in failed)
            raise DevboxRuntimeError(
                f"could not update devbox(es) {reasons}",
                f"run {repairs} to hand it over",
            )
        return pushed

    def devboxes_using(self, kind: ResourceKind, name: str) -> list[str]:
        """Names of existing devboxes that use the secret/gateway/policy `name`. Deletes are
        refused while this is non-empty. With Docker unreachable nothing can be running, so
        nothing is reported."""
        try:
            boxes = self._boxes(self.engine())
        except DockerUnavailableError:
            return []
        return sorted(self._users(boxes, kind, name))

    def check_hosts(self, gateway: str, hosts: tuple[str, ...]) -> None:
        try:
            boxes = self._boxes(self.engine())
        except DockerUnavailableError:
            return  # no devbox to clash in; a later create checks its own bindings
        gateways = {g.name: g for g in read_gateways(self.store)}
        for box, info in sorted(boxes.items()):
            bindings = bindings_of(info["labels"])
            mine = [b.prefix for b in bindings if b.gateway == gateway]
            clashes = [
                (host, f"gateway {b.gateway} (prefix {b.prefix})")
                for b in bindings
                if b.gateway != gateway and b.gateway in gateways
                for host in hosts
                if host in gateways[b.gateway].hosts
            ]
            if len(mine) > 1:  # bound twice: each binding would intercept the host
                clashes.append((hosts[0], f"gateway {gateway} again (prefix {mine[1]})"))
            if mine and clashes:
                host, other = clashes[0]
                raise UsageError(
                    f"host {host} would be intercepted twice in devbox {box}: it binds "
                    f"gateway {gateway} and {other}",
                    "one host goes to one gateway of a devbox: pick another host, or "
                    f"recreate {box} without one of them",
                )

    def _config_of(self, docker: DockerBackend, name: str) -> tuple[dict[str, Any], ProxyConfig]:
        """The proxy container of devbox `name` and its config, rebuilt from the box's labels
        and gateway tokens and the store as it is now."""
        box = docker.container(box_container(name))
        proxy = docker.container(proxy_container(name))
        if box is None or proxy is None:
            raise NotFoundError(
                f"devbox {name} is incomplete or missing",
                f"recreate it: `devbox delete {name}` then `devbox create`",
            )
        labels = (box.get("Config") or {}).get("Labels") or {}
        check_store(name, labels, self.store)
        env = env_of(box)
        bindings = bindings_of(labels)
        tokens = {b.prefix: env.get(b.prefix, "") for b in bindings}
        missing = [prefix for prefix, token in tokens.items() if not token]
        if missing:
            raise DevboxRuntimeError(f"devbox {name} has lost its gateway token(s) {missing}")
        config = self.configs.build(name, bindings, tokens, labels.get(LABEL_POLICY) or None)
        return proxy, config

    def _users(self, boxes: dict[str, dict[str, Any]], kind: ResourceKind, name: str) -> list[str]:
        if kind is ResourceKind.POLICY:
            return [b for b, c in boxes.items() if c["labels"].get(LABEL_POLICY) == name]
        gateways = {name} if kind is ResourceKind.GATEWAY else set()
        if kind is ResourceKind.SECRET and boxes:
            # a secret also reaches a devbox as a custom header of a gateway it uses
            gateways = set(gateways_using_secret(read_gateways(self.store), name))
        return [
            b
            for b, c in boxes.items()
            if any(
                g.gateway in gateways or (kind is ResourceKind.SECRET and g.secret == name)
                for g in bindings_of(c["labels"])
            )
        ]

    def _boxes(self, docker: DockerBackend) -> dict[str, dict[str, Any]]:
        """This store's boxes: a devbox another store made (another DEVBOX_HOME, another
        user of the same engine) never gets this store's credentials."""
        return {
            c["Labels"][LABEL_NAME]: {"labels": c["Labels"], "state": c.get("State")}
            for c in docker.containers(
                LABEL_NAME, f"{LABEL_ROLE}=box", f"{LABEL_STORE}={self.store.identity()}"
            )
        }


def check_store(name: str, labels: Mapping[str, str], store: Store) -> None:
    """Refuse to act on devbox `name` (labels: its box's) when another store made it: it
    must never get this store's credentials, nor lose its own state to this store."""
    if labels.get(LABEL_STORE) != store.identity():
        raise ConflictError(
            f"devbox {name} was made with another devbox store, not {store.home}",
            "run this with the DEVBOX_HOME that created it",
        )


def push_config(
    docker: DockerBackend,
    name: str,
    proxy: str,
    config: ProxyConfig,
    timeout: float = READY_TIMEOUT,
    *,
    ledger: PushLedger | None = None,
) -> None:
    """Hand the config to the proxy on the stdin of `proxy.admin load`, retrying while its
    server is still starting (admin exit 2). With a `ledger`, record which start of the
    container took it, as read before the push (home.py says why before)."""
    payload = config.dumps()
    started = started_at(docker.container(proxy)) if ledger is not None else None
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        code, output = docker.exec_with_stdin(proxy, LOAD_CMD, payload)
        if code == 0:
            if ledger is not None and started:
                ledger.record(proxy, started)
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
            f"see `docker logs {proxy_container(name)}`",
        )


def _scrub(lines: list[str], config: ProxyConfig) -> str:
    """Belt and braces: the admin tool never echoes a credential, but make sure of it."""
    text = " ".join(lines)
    values = [v for b in config.gateways for v in (*b.secret_values(), b.token)]
    if config.ca is not None:
        values += [line for line in config.ca.key.splitlines() if "-----" not in line]
    for value in values:
        if value:
            text = text.replace(value, "***")
    return text
