"""SnapshotService: a devbox's filesystem saved as a local image, listed, deleted, and the
image `devbox create --from-snapshot` starts from.

A snapshot is the box only (never the proxy, which holds the credentials), and never the
box's config: engine/snapshot_image.py says why a plain `docker commit` would carry the
gateway tokens and devbox labels, and how the snapshot is made without them. What the box
had in tmpfs (/tmp) or in mounts is not part of its filesystem, so not of a snapshot.

Names: snapshot SNAP of a store is the image devbox-snapshot/<store identity>:SNAP
(names.snapshot_image), labelled devbox.role=snapshot and devbox.store, so each store
lists, deletes and creates from its own snapshots only, and `docker images` shows them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from devbox_cli.engine.snapshot_image import (
    image_id,
    image_json,
    load_archive,
    snapshot_config,
)
from devbox_cli.engine.views import (
    LABEL_NAME,
    LABEL_ROLE,
    LABEL_SNAPSHOT,
    LABEL_SNAPSHOT_CREATED,
    LABEL_SNAPSHOT_IMAGE,
    LABEL_SNAPSHOT_SOURCE,
    LABEL_STORE,
    LABEL_VERSION,
    VERSION,
    DeleteResult,
    Snapshot,
    iso_time,
    utc_label,
)
from devbox_cli.errors import ConflictError, DevboxError, DevboxRuntimeError, NotFoundError
from devbox_cli.names import (
    box_container,
    check_devbox_name,
    check_snapshot_name,
    is_name,
    snapshot_image,
)
from devbox_cli.services.proxy_push import check_store

if TYPE_CHECKING:
    from devbox_cli.engine.docker_backend import DockerBackend
    from devbox_cli.store import Store

Progress = Callable[[str], None]
ROLE = "snapshot"
# The load names layers without holding them: Docker's classic image store takes that (it
# has them), the containerd image store wants every layer in the archive.
STORE_HINT = (
    "snapshots need Docker's classic image store; `docker info` shows whether this engine "
    "uses the containerd image store (driver-type io.containerd.snapshotter.v1)"
)


def not_found(snapshot: str) -> NotFoundError:
    return NotFoundError(f"no snapshot {snapshot}", "`devbox snapshot list` shows the snapshots")


def resolve_snapshot(docker: DockerBackend, store: str, snapshot: str) -> str:
    """The image of this store's snapshot `snapshot`, checked to be one."""
    ref = snapshot_image(store, check_snapshot_name(snapshot))
    labels = ((docker.image(ref) or {}).get("Config") or {}).get("Labels") or {}
    if labels.get(LABEL_ROLE) != ROLE or labels.get(LABEL_STORE) != store:
        raise not_found(snapshot)
    return ref


def default_name(devbox: str, now: datetime) -> str:
    """NAME-YYYYmmdd-HHMMSS (UTC), within the 63 characters of a name."""
    return f"{devbox[:47]}-{now:%Y%m%d-%H%M%S}"


class SnapshotService:
    def __init__(self, engine: Callable[[], DockerBackend], store: Store) -> None:
        self.engine = engine
        self.store = store

    def create(
        self, name: str, snapshot: str | None = None, *, progress: Progress | None = None
    ) -> Snapshot:
        """Save devbox `name`'s filesystem as snapshot `snapshot` (default NAME-<UTC time>).
        A running box is paused while its filesystem is read (a moment; exec waits or is
        refused meanwhile). Refuses a name that exists (ConflictError)."""
        say = progress or (lambda _text: None)
        check_devbox_name(name)
        now = datetime.now(UTC)
        snapshot = check_snapshot_name(snapshot) if snapshot else default_name(name, now)
        docker, store = self.engine(), self.store.identity()
        box = docker.container(box_container(name))
        if box is None:
            raise NotFoundError(f"no devbox {name}", "`devbox list` shows the devboxes")
        check_store(name, (box.get("Config") or {}).get("Labels") or {}, self.store)
        ref = snapshot_image(store, snapshot)
        self._check_free(docker, ref, snapshot)
        source = docker.image(str(box.get("Image"))) or {}
        source_ref = (box.get("Config") or {}).get("Image") or source.get("Id")
        labels = {
            LABEL_ROLE: ROLE,
            LABEL_VERSION: VERSION,
            LABEL_STORE: store,
            LABEL_SNAPSHOT: snapshot,
            LABEL_SNAPSHOT_SOURCE: name,
            LABEL_SNAPSHOT_IMAGE: str(source_ref or ""),
            LABEL_SNAPSHOT_CREATED: utc_label(now),
        }
        say(f"saving the filesystem of devbox {name}")
        committed = docker.commit(box["Id"])
        try:
            say("writing the snapshot's image")
            layers_of = docker.image(committed) or {}
            doc = image_json(
                layers_of,
                snapshot_config(source.get("Config"), labels),
                created=utc_label(now),
                note=f"devbox snapshot create {name} {snapshot}",
            )
            layers = [str(d) for d in layers_of["RootFS"]["Layers"]]
            with self.store.lock():  # no other snapshot of this store takes the name meanwhile
                self._check_free(docker, ref, snapshot)
                try:
                    docker.load_image(load_archive(doc, layers, ref))
                except DevboxRuntimeError as exc:
                    raise DevboxRuntimeError(
                        f"the engine did not take snapshot {snapshot}: {exc.message}", STORE_HINT
                    ) from None
        finally:
            with contextlib.suppress(DevboxError):  # its layers stay: the snapshot holds them
                docker.remove_image(committed)
        made = docker.image(ref)
        if made is None or made.get("Id") != image_id(doc):
            raise DevboxRuntimeError(
                f"the engine did not keep snapshot {snapshot} as written", STORE_HINT
            )
        return _view(made, ref, snapshot)

    def list(self) -> list[Snapshot]:
        """This store's snapshots, by name."""
        store = self.store.identity()
        out = []
        for image in self.engine().images(f"{LABEL_ROLE}={ROLE}", f"{LABEL_STORE}={store}"):
            for tag in image.get("RepoTags") or []:
                repo, _, snapshot = str(tag).rpartition(":")
                if is_name(snapshot) and tag == snapshot_image(store, snapshot) and repo:
                    out.append(_view(image, tag, snapshot))
        return sorted(out, key=lambda s: s.name)

    def get(self, snapshot: str) -> Snapshot:
        docker = self.engine()
        ref = resolve_snapshot(docker, self.store.identity(), snapshot)
        return _view(docker.image(ref) or {}, ref, snapshot)

    def delete(self, snapshots: Iterable[str]) -> list[DeleteResult]:
        """Remove each snapshot's image (its layers stay while another image holds them).
        A missing one is reported (removed=False), not an error; one a devbox was created
        from is refused, before anything is removed (ConflictError)."""
        docker, store = self.engine(), self.store.identity()
        found: dict[str, Mapping[str, Any] | None] = {}
        for snapshot in dict.fromkeys(snapshots):
            ref = snapshot_image(store, check_snapshot_name(snapshot))
            image = docker.image(ref)
            labels = ((image or {}).get("Config") or {}).get("Labels") or {}
            mine = labels.get(LABEL_ROLE) == ROLE and labels.get(LABEL_STORE) == store
            found[snapshot] = image if mine else None
        boxes = docker.containers(LABEL_NAME, f"{LABEL_ROLE}=box") if any(found.values()) else []
        for snapshot, image in found.items():
            users = sorted(
                b["Labels"][LABEL_NAME] for b in boxes if image and b.get("ImageID") == image["Id"]
            )
            if users:
                raise ConflictError(
                    f"snapshot {snapshot} is in use by devbox(es) {', '.join(users)}",
                    f"delete them first (`devbox delete {' '.join(users)}`); nothing was deleted",
                )
        return [
            DeleteResult(s, bool(image) and docker.remove_image(snapshot_image(store, s)))
            for s, image in found.items()
        ]

    def _check_free(self, docker: DockerBackend, ref: str, snapshot: str) -> None:
        if docker.image(ref) is not None:
            raise ConflictError(
                f"snapshot {snapshot} already exists",
                f"pick another name, or remove it with `devbox snapshot delete {snapshot}`",
            )


def _view(image: Mapping[str, Any], ref: str, snapshot: str) -> Snapshot:
    labels = image.get("Labels") or (image.get("Config") or {}).get("Labels") or {}
    return Snapshot(
        name=snapshot,
        image=ref,
        id=str(image.get("Id", "")).removeprefix("sha256:")[:12],
        source=labels.get(LABEL_SNAPSHOT_SOURCE) or None,
        source_image=labels.get(LABEL_SNAPSHOT_IMAGE) or None,
        created_at=iso_time(image.get("Created")),
        size=image.get("Size") if isinstance(image.get("Size"), int) else None,
    )
