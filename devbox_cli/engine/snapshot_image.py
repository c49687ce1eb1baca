"""A snapshot's image, made clean. Pure: the Docker objects are passed in as inspected.

`docker commit` cannot make a snapshot by itself. The image it makes carries the box's
config: its environment (the gateway tokens, the proxy settings, every --env) and its
labels (devbox.name, devbox.gateways, devbox.store, devbox.expires ...). An override
passed to the commit does not help: the engine merges the container's config back into
it (every variable and label the override leaves out comes back), and on engines before
25 it also writes the whole container config into the image as `container_config`.

So a snapshot is the committed image's layers under a new config, written here from the
box's *image's* own config (its Env, Cmd, User, WorkingDir ... and its non-devbox labels)
plus the snapshot's labels, and registered with `docker load` of an archive holding only
that config and a manifest. The engine skips a layer it already has (the commit's layers,
the base image's), so the archive is a few kilobytes and the layers are shared, not
copied; the committed image is then removed.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from typing import Any

# The fields of an image's config (the OCI image spec's `config`); the container-only
# fields `docker inspect` shows beside them (Hostname, AttachStdin, Image ...) are dropped.
IMAGE_CONFIG_KEYS = (
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "Cmd",
    "Volumes",
    "WorkingDir",
    "StopSignal",
    "ArgsEscaped",
    "Healthcheck",
    "OnBuild",
    "Shell",
)
DEVBOX_LABELS = "devbox."


def snapshot_config(
    image_config: Mapping[str, Any] | None, labels: Mapping[str, str]
) -> dict[str, Any]:
    """The runtime config of a snapshot: the box image's own (never the box's: no token,
    no proxy setting, no devbox label of the box), with the snapshot's `labels`."""
    source = dict(image_config or {})
    config = {k: source[k] for k in IMAGE_CONFIG_KEYS if source.get(k) not in (None, "", [], {})}
    kept = {
        k: v
        for k, v in (source.get("Labels") or {}).items()
        if isinstance(k, str) and not k.startswith(DEVBOX_LABELS)
    }
    config["Labels"] = {**kept, **labels}
    return config


def image_json(
    committed: Mapping[str, Any], config: Mapping[str, Any], *, created: str, note: str
) -> bytes:
    """The image config document (what `docker save` stores as <id>.json) of a snapshot:
    the committed image's platform and layers, `config`, and a history entry per layer."""
    diff_ids = list((committed.get("RootFS") or {}).get("Layers") or [])
    if not diff_ids:
        raise ValueError("the committed image has no layers")
    doc: dict[str, Any] = {
        "architecture": committed.get("Architecture") or "amd64",
        "os": committed.get("Os") or "linux",
        "created": created,
        "config": dict(config),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": created, "created_by": "devbox snapshot: a layer of the box's image"}
            for _ in diff_ids[:-1]
        ]
        + [{"created": created, "created_by": note}],
    }
    if committed.get("Variant"):
        doc["variant"] = committed["Variant"]
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def image_id(config_json: bytes) -> str:
    """The id the engine gives an image: the digest of its config document."""
    return "sha256:" + hashlib.sha256(config_json).hexdigest()


def load_archive(config_json: bytes, diff_ids: Sequence[str], tag: str) -> bytes:
    """A `docker load` archive of the image `config_json` tagged `tag`, holding no layer:
    each one is named in the manifest and already in the engine."""
    config_name = image_id(config_json).removeprefix("sha256:") + ".json"
    manifest = [
        {
            "Config": config_name,
            "RepoTags": [tag],
            "Layers": [f"{d.removeprefix('sha256:')}/layer.tar" for d in diff_ids],
        }
    ]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in ((config_name, config_json), ("manifest.json", json.dumps(manifest))):
            raw = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(raw), 0o644
            tar.addfile(info, io.BytesIO(raw))
    return out.getvalue()
