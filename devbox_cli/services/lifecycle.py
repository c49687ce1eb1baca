"""LifecycleService: devboxes that live for days. `stop` and `start` (each over several
devboxes at once), and `gc`, which deletes the expired (`create --ttl`) and, when asked,
the long stopped.

Stop stops the box at once, then its proxy. The box's PID 1 is `sleep infinity`, which
ignores SIGTERM, and the processes an exec started never get a signal from `docker stop`
anyway, so a grace period would only be waited out: what runs in the box is killed, what
it wrote stays (its writable layer; not /tmp, a tmpfs). The proxy's restart policy is
unless-stopped, so a stopped proxy stays stopped across a daemon restart too.

Start is ProxyPusher.repair: it starts both and hands the proxy a config built from the
store as it is now (a secret updated while the devbox was stopped takes effect; live
updates skip stopped devboxes). The box keeps its gateway tokens: they are part of the
box's environment, which a container keeps, and worthless outside its own proxy. A devbox
created from a snapshot gets fresh ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from devbox_cli.engine.views import (
    LABEL_NAME,
    LABEL_ROLE,
    LABEL_STORE,
    GcResult,
    LifecycleResult,
    devbox_status,
    expiry_of,
    finished_at,
    state_of,
    utc_label,
)
from devbox_cli.errors import DevboxError, UsageError
from devbox_cli.names import box_container, check_devbox_name, is_name, proxy_container
from devbox_cli.services.devboxes import not_found
from devbox_cli.services.durations import parse_duration
from devbox_cli.services.proxy_push import check_store

if TYPE_CHECKING:
    from devbox_cli.engine.docker_backend import DockerBackend
    from devbox_cli.services.devboxes import DevboxService
    from devbox_cli.services.proxy_push import ProxyPusher
    from devbox_cli.store import Store

BOX_STOP_TIMEOUT = 0  # seconds; see the module's docstring
PROXY_STOP_TIMEOUT = 10  # its supervisor exits on SIGTERM, well within this
WORKERS = 4
UP = ("running", "restarting", "paused")
Container = dict[str, Any] | None


def raise_for_failures(results: Iterable[LifecycleResult], verb: str) -> None:
    """One error for the devboxes `verb` (stop, start) failed on, naming each and the
    command that retries just those; its exit code is the first failure's."""
    failed = [r for r in results if r.error is not None]
    if not failed:
        return
    reasons = ", ".join(f"{r.name} ({getattr(r.error, 'message', r.error)})" for r in failed)
    first = failed[0].error
    err = DevboxError(
        f"could not {verb} devbox(es) {reasons}",
        f"retry with `devbox {verb} {' '.join(r.name for r in failed)}`",
    )
    err.exit_code = getattr(first, "exit_code", 1)
    raise err


class LifecycleService:
    def __init__(
        self,
        engine: Callable[[], DockerBackend],
        store: Store,
        proxies: ProxyPusher,
        devboxes: DevboxService,
    ) -> None:
        self.engine = engine
        self.store = store
        self.proxies = proxies
        self.devboxes = devboxes

    def stop(self, names: Iterable[str], *, check: bool = True) -> list[LifecycleResult]:
        """Stop each devbox's box and proxy, several at once. Each result says what became
        of one; with check=True a failure on any raises (after all were tried) an error
        naming the ones to retry, else it is in that result's `error`."""
        return self._each(names, self._stop, "stop", check)

    def start(self, names: Iterable[str], *, check: bool = True) -> list[LifecycleResult]:
        """Start each devbox's proxy and box and push the proxy its config again, built
        from the store as it is now. Starting a running devbox pushes the config again.
        Failures as in stop."""
        return self._each(names, self._start, "start", check)

    def gc(
        self, *, stopped_for: str | timedelta | None = None, dry_run: bool = False
    ) -> list[GcResult]:
        """Delete this store's expired devboxes (`create --ttl`) and, with `stopped_for`,
        the ones stopped at least that long. dry_run=True only says which."""
        least = None if stopped_for is None else parse_duration(stopped_for, "--stopped-for")
        docker, now = self.engine(), datetime.now(UTC)
        due = []
        mine = f"{LABEL_STORE}={self.store.identity()}"
        for box in docker.containers(LABEL_NAME, f"{LABEL_ROLE}=box", mine):
            labels = box.get("Labels") or {}
            name = labels.get(LABEL_NAME)
            # The box of devbox NAME is the container named devbox-NAME. Anyone can label a
            # container; one that only claims to be a box decides nothing.
            if not is_name(name) or f"/{box_container(name)}" not in (box.get("Names") or []):
                continue
            expires = expiry_of(labels)
            stopped = None
            if least is not None and state_of(box) == "exited":
                stopped = finished_at(docker.container(box["Id"]))
            if expires is not None and expires <= now:
                reason = "expired"
            elif stopped is not None and least is not None and now - stopped >= least:
                reason = "stopped"
            else:
                continue
            due.append(
                GcResult(
                    name,
                    reason,
                    expires_at=utc_label(expires) if expires else None,
                    stopped_at=utc_label(stopped) if stopped else None,
                    deleted=False,
                )
            )
        if dry_run or not due:
            return due
        removed = {r.name for r in self.devboxes.delete([d.name for d in due]) if r.removed}
        return [replace(d, deleted=d.name in removed) for d in due]

    # -- one devbox ------------------------------------------------------------------------

    def _each(
        self,
        names: Iterable[str],
        one: Callable[[DockerBackend, str], LifecycleResult],
        verb: str,
        check: bool,
    ) -> list[LifecycleResult]:
        wanted = [check_devbox_name(n) for n in dict.fromkeys(names)]
        if not wanted:
            raise UsageError(f"name the devboxes to {verb}")
        docker = self.engine()
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            futures = [(name, pool.submit(one, docker, name)) for name in wanted]
        results = []
        for name, future in futures:
            try:
                results.append(future.result())
            except DevboxError as exc:
                status = "unknown"
                with contextlib.suppress(DevboxError):
                    status = devbox_status(docker.container(box_container(name)))
                results.append(LifecycleResult(name, status, error=exc))
        if check:
            raise_for_failures(results, verb)
        return results

    def _owned(self, docker: DockerBackend, name: str) -> tuple[Container, Container]:
        """The box and proxy of devbox `name` (None where missing), checked to be this
        store's."""
        box = docker.container(box_container(name))
        proxy = docker.container(proxy_container(name))
        if box is None and proxy is None:
            raise not_found(name)
        check_store(
            name, ((box or proxy or {}).get("Config") or {}).get("Labels") or {}, self.store
        )
        return box, proxy

    def _stop(self, docker: DockerBackend, name: str) -> LifecycleResult:
        box, proxy = self._owned(docker, name)
        changed = False
        for container, timeout in ((box, BOX_STOP_TIMEOUT), (proxy, PROXY_STOP_TIMEOUT)):
            if container is not None and state_of(container) in UP:
                docker.stop(container["Id"], timeout=timeout)
                changed = True
        return LifecycleResult(name, "stopped", changed)

    def _start(self, docker: DockerBackend, name: str) -> LifecycleResult:
        box, proxy = self._owned(docker, name)
        was_up = state_of(box) == "running" and state_of(proxy) == "running"
        self.proxies.repair(name)
        return LifecycleResult(name, "running", changed=not was_up)
