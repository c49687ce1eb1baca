"""VolumeService: this store's devbox volumes (`devbox volume list|delete`).

A volume is made the first time a devbox mounts it (`create --volume NAME:DST`, see
services/workspace.py) and outlives every devbox: deleting a devbox never deletes one.
Deleting a volume a devbox uses is refused unless forced, and forcing it deletes those
devboxes first (Docker cannot take a volume from a container, running or stopped).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from devbox_cli.engine.views import (
    LABEL_NAME,
    LABEL_ROLE,
    LABEL_STORE,
    DeleteResult,
    iso_time,
)
from devbox_cli.engine.workspace import LABEL_VOLUME
from devbox_cli.errors import ConflictError, NotFoundError
from devbox_cli.names import check_volume_name, volume_name
from devbox_cli.services.workspace import ROLE_VOLUME, foreign

if TYPE_CHECKING:
    from devbox_cli.engine.docker_backend import DockerBackend
    from devbox_cli.store import Store


@dataclass(frozen=True)
class Volume:
    name: str
    docker_name: str
    created_at: str | None
    used_by: tuple[str, ...]  # this store's devboxes that mount it

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "docker_name": self.docker_name,
            "created_at": self.created_at,
            "used_by": list(self.used_by),
        }


@dataclass(frozen=True)
class VolumeDeleted:
    name: str
    devboxes_deleted: tuple[str, ...] = ()  # with force: the devboxes that used it

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "deleted": True, "devboxes_deleted": list(self.devboxes_deleted)}


class VolumeService:
    def __init__(
        self,
        engine: Callable[[], DockerBackend],
        store: Store,
        delete_devboxes: Callable[[list[str]], list[DeleteResult]],
    ) -> None:
        self.engine = engine
        self.store = store
        self.delete_devboxes = delete_devboxes

    def _users(self, docker: DockerBackend) -> dict[str, list[str]]:
        """Docker volume name -> this store's devboxes mounting it."""
        users: dict[str, list[str]] = {}
        mine = f"{LABEL_STORE}={self.store.identity()}"
        for c in docker.containers(f"{LABEL_ROLE}=box", mine):
            for m in c.get("Mounts") or []:
                if m.get("Type") == "volume" and m.get("Name"):
                    users.setdefault(m["Name"], []).append(c["Labels"][LABEL_NAME])
        return users

    def list(self) -> list[Volume]:
        """This store's volumes, with the devboxes that mount them."""
        docker = self.engine()
        users = self._users(docker)
        mine = f"{LABEL_STORE}={self.store.identity()}"
        found = docker.volumes(f"{LABEL_ROLE}={ROLE_VOLUME}", mine)
        return sorted(
            (
                Volume(
                    name=(v.get("Labels") or {}).get(LABEL_VOLUME) or v["Name"],
                    docker_name=v["Name"],
                    created_at=iso_time(v.get("CreatedAt")),
                    used_by=tuple(sorted(users.get(v["Name"], []))),
                )
                for v in found
            ),
            key=lambda v: v.name,
        )

    def delete(self, names: Iterable[str], *, force: bool = False) -> list[VolumeDeleted]:
        """Delete volumes and their data. All are checked before any is deleted: each must
        exist and be this store's; one a devbox uses is refused (exit 4) unless `force`,
        which deletes those devboxes first. A container devbox cannot delete (another
        store's devbox, or not a devbox) always keeps its volume."""
        docker = self.engine()
        wanted = list(dict.fromkeys(check_volume_name(n) for n in names))
        mine = self.store.identity()
        plan: list[tuple[str, list[str]]] = []
        for name in wanted:
            found = docker.volume(volume_name(name))
            if found is None:
                raise NotFoundError(f"no volume {name}", "`devbox volume list` shows the volumes")
            if reason := foreign(found, mine):
                raise ConflictError(
                    f"refusing to delete Docker volume {volume_name(name)}: {reason}",
                    "devbox deletes only the volumes its own store made",
                )
            ours, others = [], []
            for c in docker.containers_using_volume(volume_name(name)):
                labels = c.get("Labels") or {}
                is_ours = labels.get(LABEL_ROLE) == "box" and labels.get(LABEL_STORE) == mine
                (ours if is_ours else others).append(
                    labels.get(LABEL_NAME) if is_ours else (c.get("Names") or [c["Id"][:12]])[0]
                )
            if others:
                raise ConflictError(
                    f"volume {name} is used by container(s) {', '.join(sorted(others))}, "
                    "which are not this store's devboxes",
                    "remove them first; devbox never deletes what it did not make",
                )
            if ours and not force:
                listed = " ".join(sorted(ours))
                raise ConflictError(
                    f"volume {name} is used by devbox(es) {', '.join(sorted(ours))}",
                    f"delete them first (`devbox delete {listed}`), or pass --force to "
                    "delete them with the volume",
                )
            plan.append((name, sorted(ours)))
        results, gone = [], set()
        for name, all_users in plan:
            users = [u for u in all_users if u not in gone]  # another volume's took it already
            if users:
                self.delete_devboxes(users)
                gone.update(users)
            docker.remove_volume(volume_name(name))
            results.append(VolumeDeleted(name, tuple(users)))
        return results
