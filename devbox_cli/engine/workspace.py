"""What a box gets of the host and of named volumes: its bind mounts and volume mounts as
Docker's `Mounts` host config, the box user they are prepared for, and the view of them
read back from `docker inspect`. Pure: the checks happen in services/mounts.py first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from devbox_cli.names import VOLUME_PREFIX, volume_name

LABEL_VOLUME = "devbox.volume"  # on a devbox volume: its devbox name (NAME of devbox-vol-NAME)


@dataclass(frozen=True)
class Mount:
    """A host directory bind-mounted into the box. `source` is the resolved path (every
    symlink followed) that the checks were made on; the one Docker mounts."""

    source: str
    destination: str
    read_only: bool = False


@dataclass(frozen=True)
class VolumeMount:
    """The devbox volume `name` (Docker volume devbox-vol-NAME) mounted into the box."""

    name: str
    destination: str
    read_only: bool = False


@dataclass(frozen=True)
class BoxOwner:
    """The invoking user's ids: the box's user becomes them when the box has a mount, so
    what the agent writes there belongs to that user on the host."""

    uid: int
    gid: int

    @property
    def user(self) -> str:
        return f"{self.uid}:{self.gid}"


@dataclass(frozen=True)
class Workspace:
    mounts: tuple[Mount, ...] = ()
    volumes: tuple[VolumeMount, ...] = ()
    owner: BoxOwner | None = None  # None: the image's own user
    image_user: str = ""  # the image's USER, whose passwd entry the owner takes over
    workdir: str = ""  # the image's WORKDIR
    fresh: tuple[str, ...] = ()  # volumes this create made (their root goes to the box user)

    @property
    def destinations(self) -> tuple[str, ...]:
        return tuple(m.destination for m in (*self.mounts, *self.volumes))

    def __bool__(self) -> bool:
        return bool(self.mounts or self.volumes)


EMPTY = Workspace()


def host_mounts(workspace: Workspace) -> list[dict[str, Any]]:
    """HostConfig.Mounts: the structured form, so a path with ':' or ',' means itself and a
    missing bind source is an error instead of a directory Docker makes."""
    binds = [
        {
            "Type": "bind",
            "Source": m.source,
            "Target": m.destination,
            "ReadOnly": m.read_only,
            # A mount of the host below the source (a USB disk, another bind) is not
            # passed on: the box gets what was checked, not what is mounted under it.
            "BindOptions": {"Propagation": "rprivate", "NonRecursive": True},
        }
        for m in workspace.mounts
    ]
    volumes = [
        {
            "Type": "volume",
            "Source": volume_name(v.name),
            "Target": v.destination,
            "ReadOnly": v.read_only,
        }
        for v in workspace.volumes
    ]
    return binds + volumes


@dataclass(frozen=True)
class MountView:
    """A mount as `devbox show` reports it: kind bind (source: a host path) or volume
    (source: the devbox volume's name, or the Docker volume's for one devbox did not make)."""

    kind: str
    source: str
    destination: str
    read_only: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "destination": self.destination,
            "read_only": self.read_only,
        }

    def describe(self) -> str:
        return f"{self.source} -> {self.destination}{' (read-only)' if self.read_only else ''}"


def mounts_of(container: Mapping[str, Any]) -> tuple[MountView, ...]:
    """The bind and volume mounts of a container, from `docker inspect` or `docker ps`."""
    out = []
    for m in container.get("Mounts") or []:
        if not isinstance(m, dict) or m.get("Type") not in ("bind", "volume"):
            continue
        source = str(m.get("Source") or "")
        if m.get("Type") == "volume":
            source = str(m.get("Name") or source)
            source = source.removeprefix(VOLUME_PREFIX)
        out.append(
            MountView(
                kind=str(m["Type"]),
                source=source,
                destination=str(m.get("Destination") or ""),
                read_only=not m.get("RW", True),
            )
        )
    return tuple(sorted(out, key=lambda v: v.destination))
