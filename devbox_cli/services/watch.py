"""`devbox watch`: follow the engine's events and heal this store's proxies within seconds.

A proxy container's start (after a daemon restart, a reboot, `docker restart`, an OOM kill)
leaves it unconfigured; its `start` event gets it its config again. A proxy that stops while
its box runs (`docker kill`, which no restart policy undoes) is started again after its
`die` event. Whenever the watcher (re)connects to the engine it sweeps every devbox of the
store once, for what happened while it was away; when the engine goes away it reconnects
with a growing backoff. Each action is one WatchEvent, passed to `log`.

The watcher holds no credential itself: each heal rebuilds the config from the store, whose
private key the caller unlocked once (Store.unlock), in memory only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from devbox_cli.engine.views import LABEL_NAME, LABEL_ROLE, LABEL_STORE
from devbox_cli.errors import DevboxError
from devbox_cli.services.healing import NONE
from devbox_cli.store import utc_now

if TYPE_CHECKING:
    from devbox_cli.engine.docker_backend import DockerBackend, EventStream
    from devbox_cli.services.healing import Healer, HealResult

MIN_BACKOFF, MAX_BACKOFF = 0.5, 30.0
# How long after a proxy's event its devbox is looked at: a `devbox create` pushes the first
# config itself a moment after starting the proxy, and a restart policy restarts a crashed
# proxy within its own backoff; both are then left alone.
SETTLE = 1.5


@dataclass(frozen=True)
class WatchEvent:
    action: str  # connected | swept | pushed | started | failed | lost | unreachable | stopped
    detail: str
    devbox: str | None = None
    hint: str | None = None
    time: str = field(default_factory=utc_now)

    def line(self) -> str:
        who = f" devbox {self.devbox}:" if self.devbox else ""
        hint = f" (fix: {self.hint})" if self.hint else ""
        return f"{self.time} {self.action}{who} {self.detail}{hint}"

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "action": self.action,
            "devbox": self.devbox,
            "detail": self.detail,
            "hint": self.hint,
        }


class Watcher:
    def __init__(
        self,
        engine: Callable[[], DockerBackend],
        healer: Healer,
        log: Callable[[WatchEvent], None],
        *,
        settle: float = SETTLE,
    ) -> None:
        self.engine = engine
        self.healer = healer
        self.settle = settle
        self._log = log
        self._log_lock = threading.Lock()
        self._stop = threading.Event()
        self._stream: EventStream | None = None
        # Devboxes with a heal to come: True when one more is wanted after the running one.
        self._pending: dict[str, bool] = {}
        self._healing: set[str] = set()
        self._pending_lock = threading.Lock()

    def stop(self) -> None:
        """End run() soon; safe from another thread or a signal handler."""
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.close()

    def run(self) -> None:
        """Watch until stop(): connect, sweep, follow events; reconnect when the engine goes."""
        delay = MIN_BACKOFF
        with ThreadPoolExecutor(max_workers=4) as pool:
            try:
                while not self._stop.is_set():
                    try:
                        docker = self.engine()
                        self._stream = docker.events(
                            type=["container"],
                            event=["start", "die"],
                            label=[
                                f"{LABEL_ROLE}=proxy",
                                f"{LABEL_STORE}={self.healer.store.identity()}",
                            ],
                        )
                        version = docker.version().get("Version", "?")
                    except DevboxError as exc:
                        if self._stop.is_set():
                            break
                        self.log("unreachable", f"{exc.message}; retrying in {delay:g}s")
                        self._stop.wait(delay)
                        delay = min(delay * 2, MAX_BACKOFF)
                        continue
                    if self._stop.is_set():
                        break
                    delay = MIN_BACKOFF
                    self.log("connected", f"to Docker {version}; sweeping this store's devboxes")
                    pool.submit(self._sweep)
                    self._follow(self._stream, pool)
                    if not self._stop.is_set():
                        self.log("lost", "the engine's event stream ended; reconnecting")
            finally:
                self._stop.set()  # workers waiting to settle return at once
                pool.shutdown(wait=True, cancel_futures=True)
        self.log("stopped", "no longer watching")

    def log(
        self, action: str, detail: str, devbox: str | None = None, hint: str | None = None
    ) -> None:
        with self._log_lock:
            self._log(WatchEvent(action, detail, devbox, hint))

    def _follow(self, stream: EventStream, pool: ThreadPoolExecutor) -> None:
        try:
            for event in stream:
                if self._stop.is_set():
                    return
                attrs = (event.get("Actor") or {}).get("Attributes") or {}
                name = attrs.get(LABEL_NAME)
                if isinstance(name, str) and name:
                    self._later(name, pool)
        except DevboxError:
            return  # the engine went away mid-stream: run() reconnects

    def _later(self, name: str, pool: ThreadPoolExecutor) -> None:
        """Heal `name` once things settle. Events for it before the heal starts fold into
        it; one during the heal (its proxy restarted meanwhile) asks for one more after."""
        with self._pending_lock:
            if name in self._pending:
                self._pending[name] = self._pending[name] or self._running(name)
                return
            self._pending[name] = False

        def settle_then_heal() -> None:
            again = True
            while again:
                if self._stop.wait(self.settle):
                    return
                with self._pending_lock:
                    self._pending[name] = False
                    self._healing.add(name)
                try:
                    self._report(self.healer.heal(name))
                finally:
                    with self._pending_lock:
                        self._healing.discard(name)
                        again = self._pending.pop(name)
                        if again:
                            self._pending[name] = False

        pool.submit(settle_then_heal)

    def _running(self, name: str) -> bool:
        return name in self._healing

    def _sweep(self) -> None:
        try:
            results = self.healer.sweep()
        except DevboxError as exc:
            self.log("failed", f"sweeping the devboxes: {exc.message}", hint=exc.hint)
            return
        for result in results:
            self._report(result)
        healed = sum(r.action != NONE and not r.failed for r in results)
        failed = sum(r.failed for r in results)
        self.log("swept", f"{len(results)} devbox(es): {healed} healed, {failed} failed")

    def _report(self, result: HealResult) -> None:
        if result.action != NONE:
            self.log(result.action, result.detail, result.name, result.hint)
