"""Healing: a proxy container that started again (a daemon restart, a reboot, `docker
restart`, an OOM kill, its PID 1 killed) holds no config and refuses all traffic, failing
closed; this brings it its config back without a person.

Whether a proxy needs it is read from the engine and the push ledger (home.py), never by
asking the proxy: one inspect. The next command that touches a devbox heals it (exec and
shell through fastexec's probe, show, logs, cp), `devbox watch` heals on the engine's events,
and `devbox repair` stays the manual way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from devbox_cli.engine.views import LABEL_NAME, LABEL_ROLE, LABEL_STORE, started_at, state_of
from devbox_cli.errors import ConflictError, DevboxError
from devbox_cli.names import box_container, proxy_container

if TYPE_CHECKING:
    from devbox_cli.engine.docker_backend import DockerBackend
    from devbox_cli.services.proxy_push import ProxyPusher

# What a heal did: nothing was needed (or nothing could be done from here), the proxy got
# its config again, it was started and got it, or it needed it and did not get it.
NONE, PUSHED, STARTED, FAILED = "none", "pushed", "started", "failed"
RESTARTABLE = ("exited", "created")  # stopped states a heal starts again while the box runs


@dataclass(frozen=True)
class HealResult:
    name: str
    action: str  # NONE | PUSHED | STARTED | FAILED
    detail: str = ""  # why; for FAILED the error's message
    hint: str | None = None  # for FAILED, the way out

    @property
    def failed(self) -> bool:
        return self.action == FAILED

    def to_json(self) -> dict[str, Any]:
        return {
            "devbox": self.name,
            "action": self.action,
            "detail": self.detail,
            "hint": self.hint,
        }


class Healer:
    def __init__(self, engine: Callable[[], DockerBackend], pusher: ProxyPusher) -> None:
        self.engine = engine
        self.pusher = pusher
        self.ledger = pusher.ledger
        self.store = pusher.store

    def configured(self, proxy: Mapping[str, Any] | None) -> bool | None:
        """From a proxy container's inspect: True when its current start took a config (as
        the ledger records), False when it started again since, None when it is not running
        or no push was recorded here."""
        if state_of(proxy) != "running" or proxy is None:
            return None
        return self.ledger.holds(proxy.get("Id"), started_at(proxy))

    def heal(self, name: str) -> HealResult:
        """Give devbox `name`'s proxy its config again if it started since the last push, or
        start it (and configure it) if it stopped while the box runs. Never raises for a
        devbox error: a failure is a result, so callers carry on (an exec still runs, it
        just has no egress, as before)."""
        try:
            return self._heal(name)
        except DevboxError as exc:
            repair = f"run `devbox repair {name}`"
            hint = exc.hint if exc.hint and repair in exc.hint else f"{exc.hint}; then {repair}"
            return HealResult(name, FAILED, exc.message, hint if exc.hint else repair)

    def _heal(self, name: str) -> HealResult:
        docker = self.engine()
        proxy = docker.container(proxy_container(name))
        if proxy is None:
            return HealResult(name, NONE, "no proxy container")
        state = state_of(proxy)
        if state == "running" and self.configured(proxy) is True:
            return HealResult(name, NONE, "configured")
        box = docker.container(box_container(name))
        if state_of(box) != "running":
            return HealResult(name, NONE, f"box {state_of(box)}")  # a stopped devbox stays so
        if state not in ("running", *RESTARTABLE):
            return HealResult(name, NONE, f"proxy {state}")  # restarting: its start heals it
        try:
            self.pusher.repair(name)
        except ConflictError as exc:
            if state == "running":
                # Another store's devbox: nothing to do from here until it starts again.
                self.ledger.record(proxy.get("Id"), started_at(proxy))
            return HealResult(name, NONE, exc.message)
        if state == "running":
            return HealResult(
                name, PUSHED, f"config pushed again (its proxy started at {started_at(proxy)})"
            )
        return HealResult(name, STARTED, f"proxy started and configured (it was {state})")

    def sweep(self) -> list[HealResult]:
        """Heal every devbox of this store (in parallel), and forget ledger records of proxy
        containers this engine no longer has."""
        docker = self.engine()
        names = sorted(
            {
                c["Labels"][LABEL_NAME]
                for c in docker.containers(
                    LABEL_NAME, f"{LABEL_ROLE}=proxy", f"{LABEL_STORE}={self.store.identity()}"
                )
            }
        )
        live = {c.get("Id") for c in docker.containers(f"{LABEL_ROLE}=proxy")}
        self.ledger.forget([i for i in self.ledger.recorded() if i not in live])
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(self.heal, names))
