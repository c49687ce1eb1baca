"""The names of the images devbox runs on, keyed by what they are built from.

An image's tag is the package version plus a digest of its build inputs (the proxy's code,
requirements and Dockerfile; the default image's Dockerfile; the base's package list), so a
changed proxy or image gets a new name and is never mistaken for an old build of the same
version: `devbox create` then finds it missing instead of running stale code, and two
checkouts with different proxies can share one engine. `devbox images build`
(services/image_build.py; `make images` and images/build.sh call it) builds under these names
(`python -m devbox_cli.engine.images` prints them). $DEVBOX_IMAGE_NAMESPACE replaces the
`devbox` in front of them: a test can build everything anew without touching the images
other checkouts run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from devbox_cli import __version__

ASSETS = Path(__file__).resolve().parents[1] / "images"
BASE_PACKAGES = ASSETS / "base-packages.txt"
DEFAULT_DOCKERFILE = ASSETS / "default.Dockerfile"
BASE_DOCKERFILE = ASSETS / "base.Dockerfile"
BASE_SUITE = "bookworm"
# The base on a machine that can pull: Debian's own small image of the same suite, with
# BASE_PACKAGES installed on top (debootstrap makes the same root offline).
STOCK_BASE = f"debian:{BASE_SUITE}-slim"
ROLES = ("base", "proxy", "default")


@dataclass(frozen=True)
class ImageRefs:
    base: str  # the Debian root made with debootstrap (BASE_PACKAGES installed)
    proxy: str
    default: str


def proxy_dir() -> Path:
    spec = importlib.util.find_spec("proxy")  # finds the package without importing it
    if spec is None or spec.origin is None:
        raise RuntimeError("the proxy package is not installed beside devbox_cli")
    return Path(spec.origin).parent


def proxy_inputs() -> list[Path]:
    """What the proxy image is built from: its code, its pins and its Dockerfile."""
    here = proxy_dir()
    return [*sorted(here.glob("*.py")), here / "requirements.txt", here / "Dockerfile"]


def build_inputs() -> dict[str, list[Path]]:
    """Every file each image's name is a digest of, by role."""
    return {
        "base": [BASE_PACKAGES],
        "proxy": proxy_inputs(),
        "default": [DEFAULT_DOCKERFILE],
    }


def namespace() -> str:
    """The repository prefix of every devbox image: $DEVBOX_IMAGE_NAMESPACE, else devbox."""
    return os.environ.get("DEVBOX_IMAGE_NAMESPACE") or "devbox"


def split_repo(ref: str) -> str:
    """`devbox/proxy:0.1.0-abc` -> `devbox/proxy`."""
    return ref.rpartition(":")[0] or ref


def digest(paths: list[Path], *extra: str) -> str:
    h = hashlib.sha256()
    for part in extra:
        h.update(part.encode() + b"\0")
    for path in paths:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def image_refs() -> ImageRefs:
    return refs_in(namespace())


@cache
def refs_in(ns: str) -> ImageRefs:
    """The names of the images under namespace `ns` (cached: the inputs are read once)."""
    inputs = build_inputs()
    # The digests never see the namespace: the same files make the same tags everywhere.
    base_tag = f"{BASE_SUITE}-{digest(inputs['base'], BASE_SUITE)}"
    base = f"devbox/base:{base_tag}"
    return ImageRefs(
        base=f"{ns}/base:{base_tag}",
        proxy=f"{ns}/proxy:{__version__}-{digest(inputs['proxy'], base)}",
        default=f"{ns}/default:{__version__}-{digest(inputs['default'], base)}",
    )


def proxy_image() -> str:
    """The proxy image devboxes run: $DEVBOX_PROXY_IMAGE, else this checkout's build."""
    return os.environ.get("DEVBOX_PROXY_IMAGE") or image_refs().proxy


def box_image() -> str:
    """The image of a devbox made without --image: $DEVBOX_IMAGE, else the default one."""
    return os.environ.get("DEVBOX_IMAGE") or image_refs().default


if __name__ == "__main__":
    refs = image_refs()
    print(f"base={refs.base}\nproxy={refs.proxy}\ndefault={refs.default}")
