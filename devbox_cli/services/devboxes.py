"""DevboxService: devboxes on Docker (create, exec, list, show, logs, delete, repair).

One devbox NAME is three Docker objects (docs/architecture.md):

    devbox-NAME-net     internal bridge with inhibit_ipv4: no route out, and the host has no
                        address on it, so the box cannot reach any host address either
    devbox-NAME-proxy   the proxy, on that network (alias `proxy`) and on the egress network
    devbox-NAME         the box, on devbox-NAME-net only

Docker is the source of truth: everything list/show/delete need is read back from labels
and the box's environment (its gateway tokens). The real credentials reach the proxy only
over the Docker API, on the stdin of `python -m proxy.admin load` inside the proxy.

Creating one is create.py (a plan, then its objects under a rollback); the Docker objects
are engine/topology.py, what callers get back engine/views.py; pushing proxy configs is
proxy_push.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from devbox_cli.engine.fastexec import ExecOptions, run
from devbox_cli.engine.limits import limits_of, resolve_limits
from devbox_cli.engine.topology import remove_default_egress
from devbox_cli.engine.views import (
    LABEL_EGRESS,
    LABEL_EXPIRES,
    LABEL_NAME,
    LABEL_POLICY,
    LABEL_ROLE,
    LABEL_STORE,
    DeleteResult,
    Devbox,
    ExecResult,
    ProxyView,
    bindings_of,
    devbox_status,
    expiry_text,
    iso_time,
    state_of,
    stopped_text,
    utc_label,
)
from devbox_cli.engine.workspace import Mount, VolumeMount, mounts_of
from devbox_cli.errors import NotFoundError, UsageError
from devbox_cli.names import box_container, box_network, check_devbox_name, proxy_container
from devbox_cli.services.box_env import box_environment, to_bindings
from devbox_cli.services.create import carry_out, plan_create
from devbox_cli.services.durations import parse_duration
from devbox_cli.services.egress import EgressRecord, egress_records
from devbox_cli.services.healing import Healer, HealResult
from devbox_cli.services.proxy_push import PROXY_PYTHON
from devbox_cli.services.snapshots import resolve_snapshot
from devbox_cli.services.workspace import check_specs

if TYPE_CHECKING:
    from devbox_cli.engine.docker_backend import DockerBackend
    from devbox_cli.services.proxy_config import ProxyConfigs
    from devbox_cli.services.proxy_push import ProxyPusher

Progress = Callable[[str], None]


def not_found(name: str) -> NotFoundError:
    return NotFoundError(f"no devbox {name}", "`devbox list` shows the devboxes")


class DevboxService:
    def __init__(
        self,
        engine: Callable[[], DockerBackend],
        configs: ProxyConfigs,
        proxies: ProxyPusher,
        healer: Healer | None = None,
    ) -> None:
        self.engine = engine
        self.configs = configs
        self.proxies = proxies
        self.healer = healer or Healer(engine, proxies)

    # -- create ----------------------------------------------------------------------------

    def create(
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
        mounts: Sequence[str | Mount] = (),
        volumes: Sequence[str | VolumeMount] = (),
        ttl: str | timedelta | None = None,
        from_snapshot: str | None = None,
        progress: Progress | None = None,
    ) -> Devbox:
        """Create a devbox and return once it can run commands (proxy configured, box up).
        Everything is validated before anything is created; on a later failure whatever was
        made is removed again. Each limit not given comes from its DEVBOX_* variable, else
        the default (engine/limits.py; README: Limits of a devbox). `mounts` are host
        directories (`SRC[:DST][:ro]` or Mount), `volumes` devbox volumes (`NAME[:DST][:ro]`
        or VolumeMount), made on first use (README: Workspace).

        ttl (e.g. "8h", "3d", or a timedelta) records an expiry, after which `devbox gc`
        deletes it; from_snapshot starts the box from this store's snapshot of that name
        (its files; gateways, policy, env and limits are given here, tokens are fresh)."""
        say = progress or (lambda _text: None)
        if from_snapshot is not None and image is not None:
            raise UsageError("give --image or --from-snapshot, not both")
        labels: dict[str, str] = {}  # the box's own, beside the ones every box has
        if ttl is not None:
            expires = datetime.now(UTC) + parse_duration(ttl, "--ttl")
            labels[LABEL_EXPIRES] = utc_label(expires)
        bindings = to_bindings(gateways or {})
        box_environment(name or "", bindings, dict(env or {}))  # clashes fail first
        limits = resolve_limits(
            cpus=cpus, memory=memory, pids=pids_limit, tmp_size=tmp_size, disk=disk, runtime=runtime
        )
        binds, vols = check_specs(mounts, volumes, store_home=str(self.configs.store.home))
        docker = self.engine()
        if from_snapshot is not None:
            image = resolve_snapshot(docker, self.configs.store.identity(), from_snapshot)
        plan = plan_create(
            docker,
            self.configs,
            name=name,
            image=image,
            bindings=bindings,
            policy=policy,
            env=env or {},
            limits=limits,
            say=say,
            mounts=binds,
            volumes=vols,
            labels=labels,
        )
        ledger = self.proxies.ledger
        if plan.ca is None:
            return carry_out(docker, plan, say, ledger=ledger)
        authorities = self.configs.authorities
        saved = authorities.save(plan.ca)  # sealed; `repair` and live updates read it back
        try:
            made = carry_out(docker, plan, say, ledger=ledger)
        except BaseException:
            authorities.discard(saved)
            raise
        return replace(made, ca=saved.view())

    # -- read ------------------------------------------------------------------------------

    def _mine(self) -> str:
        """The label filter for what this store made (other stores' devboxes, say another
        user's on a shared engine, are not listed, updated or deleted by --all)."""
        return f"{LABEL_STORE}={self.configs.store.identity()}"

    def list(self) -> list[Devbox]:
        docker = self.engine()
        by_name: dict[str, dict[str, Any]] = {}
        for c in docker.containers(LABEL_NAME, self._mine()):
            labels = c.get("Labels") or {}
            by_name.setdefault(labels[LABEL_NAME], {})[labels.get(LABEL_ROLE, "")] = c
        for n in docker.networks(LABEL_NAME, self._mine()):
            by_name.setdefault(n["Labels"][LABEL_NAME], {})
        configured = self._configured(docker, [p.get("proxy") for p in by_name.values()])
        out = []
        for name, parts in sorted(by_name.items()):
            box, proxy = parts.get("box"), parts.get("proxy")
            labels = (box or {}).get("Labels") or {}
            # the list has no State.FinishedAt: a stopped box is inspected for it
            stopped = docker.container(box["Id"]) if state_of(box) == "exited" else None
            out.append(
                Devbox(
                    name=name,
                    id=box["Id"][:12] if box else None,
                    status=devbox_status(box),
                    image=box.get("Image") if box else None,
                    policy=labels.get(LABEL_POLICY) or None,
                    gateways=bindings_of(labels),
                    proxy=ProxyView(
                        proxy["Id"][:12] if proxy else None,
                        state_of(proxy),
                        configured=configured.get(proxy["Id"]) if proxy else None,
                    ),
                    created_at=iso_time(box.get("Created")) if box else None,
                    egress_network=((proxy or {}).get("Labels") or {}).get(LABEL_EGRESS),
                    mounts=mounts_of(box or {}),
                    stopped_at=stopped_text(stopped),
                    expires_at=expiry_text(labels),
                )
            )
        return out

    def _configured(
        self, docker: DockerBackend, proxies: list[dict[str, Any] | None]
    ) -> dict[str, bool | None]:
        """Whether each running proxy (of a container listing) holds its config, from one
        inspect each (in parallel) and the push ledger: never an exec."""
        running = [p["Id"] for p in proxies if p and p.get("State") == "running"]
        with ThreadPoolExecutor(max_workers=8) as pool:
            found = pool.map(docker.container, running)
            return {i: self.healer.configured(c) for i, c in zip(running, found, strict=True)}

    def heal(self, name: str) -> HealResult:
        """Give the devbox's proxy its config again if it started since the last push (it
        then refuses all traffic), or start it if it stopped while the box runs. exec,
        shell, show, logs and cp do this first; `devbox watch` on the engine's events."""
        check_devbox_name(name)
        return self.healer.heal(name)

    def get(self, name: str, *, health: bool = True, heal: bool = True) -> Devbox:
        """One devbox, with its proxy's health (configured or not) unless health=False.
        With heal (the default) a proxy that needs its config gets it first."""
        check_devbox_name(name)
        if heal:
            self.healer.heal(name)
        docker = self.engine()
        box = docker.container(box_container(name))
        proxy = docker.container(proxy_container(name))
        if box is None and proxy is None and docker.network(box_network(name)) is None:
            raise not_found(name)
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
            status=devbox_status(box),
            image=(box.get("Config") or {}).get("Image") if box else None,
            policy=labels.get(LABEL_POLICY) or None,
            gateways=bindings_of(labels),
            proxy=ProxyView(
                proxy["Id"][:12] if proxy else None,
                state,
                checked,
                configured=self.healer.configured(proxy),
            ),
            created_at=iso_time(box.get("Created")) if box else None,
            egress_network=((proxy or {}).get("Config", {}).get("Labels") or {}).get(LABEL_EGRESS),
            limits=limits_of(box.get("HostConfig") or {}) if box else None,
            mounts=mounts_of(box or {}),
            stopped_at=stopped_text(box),
            expires_at=expiry_text(labels),
            ca=ca.view() if (ca := self.configs.authorities.summary(name)) else None,
        )

    def repair(self, name: str) -> Devbox:
        """Start whatever of the devbox is stopped and push its proxy config again (after the
        proxy container restarted its tmpfs is empty, so it refuses all traffic until then)."""
        self.proxies.repair(name)
        return self.get(name)

    def logs(
        self, name: str, *, egress: bool = False, follow: bool = False, tail: int | str = "all"
    ) -> Iterator[bytes]:
        """The box's output, or with egress=True the proxy's audit log (JSON lines). A proxy
        that needs its config gets it first."""
        check_devbox_name(name)
        self.healer.heal(name)
        docker = self.engine()
        container = proxy_container(name) if egress else box_container(name)
        if docker.container(container) is None:
            raise not_found(name)
        # The audit log is the proxy's stdout; its stderr holds diagnostics.
        return docker.logs(container, follow=follow, stderr=not egress, tail=tail)

    def egress_log(
        self, name: str, *, follow: bool = False, tail: int | str = "all"
    ) -> Iterator[EgressRecord]:
        """The proxy's audit log: one record per request or tunnel it decided on."""
        return egress_records(self.logs(name, egress=True, follow=follow, tail=tail))

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
        argv = list(cmd)
        if not argv:
            raise UsageError("exec needs a command")
        opts = ExecOptions(
            name, argv, env=[f"{k}={v}" for k, v in (env or {}).items()], workdir=workdir, user=user
        )
        data = stdin.encode() if isinstance(stdin, str) else stdin
        code, out, err = run(opts, data, heal=self.healer.heal, ledger=self.healer.ledger)
        return ExecResult(code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    # -- delete ----------------------------------------------------------------------------

    def delete(self, names: Iterable[str] = (), *, all: bool = False) -> list[DeleteResult]:
        """Remove each devbox's containers and network. Deleting a missing one is not an
        error: its result says removed=False."""
        docker = self.engine()
        wanted = [check_devbox_name(n) for n in names]
        if all:
            found = {c["Labels"][LABEL_NAME] for c in docker.containers(LABEL_NAME, self._mine())}
            found |= {n["Labels"][LABEL_NAME] for n in docker.networks(LABEL_NAME, self._mine())}
            wanted += sorted(found - set(wanted))
        results = []
        with ThreadPoolExecutor(max_workers=4) as pool:
            for name in dict.fromkeys(wanted):
                containers = docker.containers(f"{LABEL_NAME}={name}")
                removed = any(
                    list(pool.map(lambda c: docker.remove_container(c["Id"]), containers))
                )
                self.healer.ledger.forget([c["Id"] for c in containers])
                for net in docker.networks(f"{LABEL_NAME}={name}"):
                    removed = docker.remove_network(net["Id"]) or removed
                results.append(DeleteResult(name, removed))
        # the CA goes with its devbox (a devbox made again under the name gets a new one)
        self.configs.authorities.delete(r.name for r in results)
        if all:
            remove_default_egress(docker)
        return results
