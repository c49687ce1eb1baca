"""A devbox's workspace at create: its mounts and volumes checked (the host paths first,
without Docker; then the volumes and the image's user against the engine), the volumes
made on first use, and who the box's user becomes.

A devbox volume is a Docker volume named devbox-vol-NAME and labelled devbox.role=volume,
devbox.store, devbox.version and devbox.volume=NAME. One that another store made, or that
devbox did not make, is refused: its data is not this store's to hand to a box, and this
store's `volume list` and `volume delete` would never see it (README, "Workspace").
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from devbox_cli.engine.box_user import is_root
from devbox_cli.engine.views import LABEL_ROLE, LABEL_STORE, LABEL_VERSION, VERSION
from devbox_cli.engine.wire import docker_host
from devbox_cli.engine.workspace import (
    EMPTY,
    LABEL_VOLUME,
    BoxOwner,
    Mount,
    VolumeMount,
    Workspace,
)
from devbox_cli.errors import ConflictError
from devbox_cli.names import check_volume_name, volume_name
from devbox_cli.services.mounts import (
    check_destination,
    check_destinations,
    check_mounts,
    parse_volume_spec,
)

if TYPE_CHECKING:
    from devbox_cli.engine.docker_backend import DockerBackend
    from devbox_cli.engine.topology import Rollback

ROLE_VOLUME = "volume"


def volume_labels(name: str, store: str) -> dict[str, str]:
    return {LABEL_ROLE: ROLE_VOLUME, LABEL_VERSION: VERSION, LABEL_STORE: store, LABEL_VOLUME: name}


def foreign(volume: Mapping[str, Any], store: str) -> str:
    """Why a Docker volume is not this store's devbox volume; '' when it is."""
    labels = volume.get("Labels") or {}
    if labels.get(LABEL_ROLE) != ROLE_VOLUME:
        return "devbox did not make it"
    if labels.get(LABEL_STORE) != store:
        return "another devbox store (DEVBOX_HOME) made it"
    return ""


def refuse_foreign(name: str, reason: str) -> ConflictError:
    return ConflictError(
        f"refusing Docker volume {volume_name(name)} for volume {name}: {reason}",
        "pick another volume name; `devbox volume list` shows this store's volumes",
    )


def check_specs(
    mounts: Iterable[str | Mount], volumes: Iterable[str | VolumeMount], *, store_home: str
) -> tuple[tuple[Mount, ...], tuple[VolumeMount, ...]]:
    """Everything about --mount and --volume that needs no engine: specs, host paths,
    destinations (one mount per destination)."""
    checked = check_mounts(mounts, store=store_home, docker_host=docker_host())
    vols = tuple(
        VolumeMount(
            check_volume_name(v.name), check_destination(v.destination, "--volume"), v.read_only
        )
        for v in (v if isinstance(v, VolumeMount) else parse_volume_spec(v) for v in volumes)
    )
    check_destinations(m.destination for m in (*checked, *vols))
    return checked, vols


def plan_workspace(
    docker: DockerBackend,
    store: str,
    image: str,
    mounts: tuple[Mount, ...],
    volumes: tuple[VolumeMount, ...],
) -> Workspace:
    """The workspace of a devbox of `image`: its volumes must be this store's (or new), and
    with a mount and a non-root invoking user the box's user becomes that user."""
    if not mounts and not volumes:
        return EMPTY
    for v in volumes:
        found = docker.volume(volume_name(v.name))
        if found is not None and (reason := foreign(found, store)):
            raise refuse_foreign(v.name, reason)
    config = (docker.image(image) or {}).get("Config") or {}
    image_user = str(config.get("User") or "")
    owner = None
    # Root invoking: files the agent writes are the image user's (root reads them anyway).
    # A root image user: the agent is root and keeps root; it owns what it writes.
    if mounts and os.getuid() != 0 and not is_root(image_user):
        owner = BoxOwner(os.getuid(), os.getgid())
    return Workspace(
        mounts=mounts,
        volumes=volumes,
        owner=owner,
        image_user=image_user,
        workdir=str(config.get("WorkingDir") or ""),
    )


def make_volumes(
    docker: DockerBackend, made: Rollback, workspace: Workspace, store: str
) -> Workspace:
    """Create the workspace's volumes that do not exist yet (they outlive the devbox; only a
    failed create removes one it made). Returns the workspace with them as `fresh`."""
    fresh = []
    for v in workspace.volumes:
        docker_name = volume_name(v.name)
        if docker.volume(docker_name) is not None:
            continue
        created = docker.create_volume(docker_name, labels=volume_labels(v.name, store))
        # Another create (or store) may have made it between the look and now.
        if reason := foreign(created, store):
            raise refuse_foreign(v.name, reason)
        made.volume(docker_name)
        fresh.append(v.destination)
    return dataclasses.replace(workspace, fresh=tuple(fresh))
