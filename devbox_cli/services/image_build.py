"""`devbox images build` and `devbox images list`: the images devbox runs, built from what
the installed package carries (devbox_cli/images/, the proxy package). The one build path:
`make images` and images/build.sh run `devbox images build` too.

    base     devbox/base:bookworm-H      Debian bookworm with BASE_PACKAGES, made one of two ways:
             - pull: debian:bookworm-slim (or --base IMAGE) with the packages apt-installed;
             - offline: debootstrap on the host (root), the root imported (`docker import`);
    proxy    devbox/proxy:VERSION-H      the proxy package, its wheels downloaded on the host
                                         (containers here need not reach PyPI), no network
    default  devbox/default:VERSION-H    the default devbox image, no network

A tag names its inputs (engine/images.py), so an image already there is current and is kept
unless rebuild is asked for.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from devbox_cli.engine import images
from devbox_cli.errors import DevboxError, DevboxRuntimeError

if TYPE_CHECKING:
    from devbox_cli.engine.docker_backend import DockerBackend

Say = Callable[[str], None]
BUILD_HINT = "build them with `devbox images build`"
TAR_EXCLUDES = ("./.complete", "./proc/*", "./sys/*", "./dev/*", "./var/cache/apt/archives/*.deb")
BASE_CHANGES = ["ENV LANG=C.UTF-8", 'CMD ["/bin/bash"]']
PIP_TIMEOUT = 600


def _quiet(_text: str) -> None:
    pass


@dataclass(frozen=True)
class Built:
    """What became of one image: `how` it was made, or "present" when it was kept."""

    role: str
    ref: str
    how: str

    def to_json(self) -> dict[str, str]:
        return {"role": self.role, "image": self.ref, "how": self.how}


@dataclass(frozen=True)
class ImageInfo:
    """One devbox image in the engine, or one this version needs and the engine lacks."""

    role: str
    ref: str
    current: bool  # the name this version of devbox runs (its tag names these inputs)
    present: bool
    size: int | None
    created: str | None

    @property
    def state(self) -> str:
        if not self.present:
            return "missing"
        return "current" if self.current else "other version"

    def to_json(self) -> dict[str, object]:
        return {
            "role": self.role,
            "image": self.ref,
            "state": self.state,
            "current": self.current,
            "present": self.present,
            "size": self.size,
            "created": self.created,
        }


def cache_dir() -> Path:
    """Where downloads are kept between builds: $XDG_CACHE_HOME/devbox or ~/.cache/devbox."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg).expanduser() / "devbox" if xdg else Path.home() / ".cache" / "devbox"


def rootfs_cache() -> Path:
    """The debootstrap roots, one per package list: $DEVBOX_IMAGE_CACHE or /var/cache/devbox."""
    return Path(os.environ.get("DEVBOX_IMAGE_CACHE") or "/var/cache/devbox")


class ImageBuilder:
    def __init__(self, engine: Callable[[], DockerBackend]) -> None:
        self.engine = engine

    def list(self) -> list[ImageInfo]:
        """The devbox images in the engine (base, proxy, default), current ones first, and
        the ones this version needs but the engine lacks."""
        from devbox_cli.engine import image_builds

        refs = images.image_refs()
        wanted = {role: getattr(refs, role) for role in images.ROLES}
        repos = {images.split_repo(ref): role for role, ref in wanted.items()}
        found: list[ImageInfo] = []
        for image in image_builds.in_repositories(self.engine(), repos):
            for ref in image.get("RepoTags") or []:
                role = repos.get(images.split_repo(ref))
                if role is None or ref.endswith(":latest"):
                    continue
                found.append(
                    ImageInfo(role, ref, ref == wanted[role], True, image.get("Size"), _when(image))
                )
        have = {i.ref for i in found}
        found += [
            ImageInfo(r, ref, True, False, None, None)
            for r, ref in wanted.items()
            if ref not in have
        ]
        order = {role: n for n, role in enumerate(images.ROLES)}
        return sorted(found, key=lambda i: (not i.current, order[i.role], i.ref))

    def builds(self, ref: str) -> str | None:
        """The role of `ref` when it is an image this version builds (base, proxy, default)."""
        refs = images.image_refs()
        return next((r for r in images.ROLES if getattr(refs, r) == ref), None)

    def build(
        self,
        *,
        base: str | None = None,
        offline: bool = False,
        rebuild: bool = False,
        roles: tuple[str, ...] = images.ROLES,
        step: Say = _quiet,
        detail: Say = _quiet,
    ) -> list[Built]:
        """Build the images of `roles` (and the base they need) that the engine lacks, or
        all of them with rebuild. `base` is the image the base is made from on the pull path
        (default debian:bookworm-slim); `offline` goes straight to debootstrap."""
        from devbox_cli.engine import image_builds

        refs, docker = images.image_refs(), self.engine()
        done: list[Built] = []

        def needed(ref: str) -> bool:
            return rebuild or docker.image(ref) is None

        todo = [r for r in ("proxy", "default") if r in roles and needed(getattr(refs, r))]
        if ("base" in roles or todo) and needed(refs.base):
            done.append(
                Built("base", refs.base, self._base(refs.base, base, offline, step, detail))
            )
        elif "base" in roles:
            done.append(Built("base", refs.base, "present"))
        for role in ("proxy", "default"):
            ref = getattr(refs, role)
            if role not in roles:
                continue
            if role not in todo:
                done.append(Built(role, ref, "present"))
                continue
            step(f"building {ref}")
            with tempfile.TemporaryDirectory(prefix=f"devbox-{role}-") as tmp:
                context = Path(tmp)
                if role == "proxy":
                    self._proxy_context(context, step, detail)
                else:
                    shutil.copy(images.DEFAULT_DOCKERFILE, context / "Dockerfile")
                image_builds.build(
                    docker, context, ref, buildargs={"BASE": refs.base}, network="none",
                    labels={"devbox.image": role}, detail=detail,
                )  # fmt: skip
            done.append(Built(role, ref, "built"))
        return done

    # -- the base --------------------------------------------------------------------------

    def _base(self, ref: str, source: str | None, offline: bool, step: Say, detail: Say) -> str:
        from devbox_cli.engine import image_builds

        docker = self.engine()
        pulled: DevboxError | None = None
        if not offline:
            source = source or images.STOCK_BASE
            try:
                if docker.image(source) is None:
                    step(f"pulling {source}")
                    image_builds.pull(docker, source, detail)
            except DevboxError as exc:
                if source != images.STOCK_BASE or not can_debootstrap():
                    raise _no_base(source, exc) from None
                pulled = exc
            else:
                step(f"building {ref} from {source}")
                with tempfile.TemporaryDirectory(prefix="devbox-base-") as tmp:
                    context = Path(tmp)
                    shutil.copy(images.BASE_DOCKERFILE, context / "Dockerfile")
                    shutil.copy(images.BASE_PACKAGES, context / "base-packages.txt")
                    image_builds.build(
                        docker, context, ref, buildargs={"SOURCE": source}, network=None,
                        labels={"devbox.image": "base"}, detail=detail,
                    )  # fmt: skip
                return f"from {source}"
        if not can_debootstrap():
            raise _no_base(images.STOCK_BASE, pulled)
        if pulled is not None:
            step(f"{pulled.message.splitlines()[0]}; making the base offline with debootstrap")
        root = self._debootstrap(ref, step)
        step(f"importing {ref}")
        with _tar(root) as chunks:
            image_builds.import_tar(docker, chunks, ref, changes=BASE_CHANGES)
        return "debootstrap"

    def _debootstrap(self, ref: str, step: Say) -> Path:
        cache = rootfs_cache()
        root = cache / f"rootfs-{ref.rpartition(':')[2]}"
        if (root / ".complete").is_file():
            return root
        packages = ",".join(images.BASE_PACKAGES.read_text().split())
        mirror = os.environ.get("DEBIAN_MIRROR") or "http://deb.debian.org/debian"
        step(f"debootstrap {images.BASE_SUITE} ({packages}) into {root}")
        shutil.rmtree(root, ignore_errors=True)
        cache.mkdir(parents=True, exist_ok=True)
        log = cache / "debootstrap.log"
        with log.open("wb") as out:
            proc = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={packages}",
                 images.BASE_SUITE, str(root), mirror],
                stdout=out, stderr=subprocess.STDOUT, check=False,
            )  # fmt: skip
        if proc.returncode != 0:
            tail = log.read_text(errors="replace").splitlines()[-15:]
            raise DevboxRuntimeError(
                "debootstrap failed:\n" + "\n".join(tail),
                f"its whole log is {log}; DEBIAN_MIRROR names another Debian mirror",
            )
        (root / ".complete").touch()
        return root

    # -- the proxy's context ---------------------------------------------------------------

    def _proxy_context(self, context: Path, step: Say, detail: Say) -> None:
        source = images.proxy_dir()
        (context / "proxy").mkdir()
        for path in images.proxy_inputs():
            if path.suffix == ".py":
                shutil.copy(path, context / "proxy" / path.name)
        shutil.copy(source / "requirements.txt", context / "requirements.txt")
        shutil.copy(source / "Dockerfile", context / "Dockerfile")
        shutil.copytree(self._wheels(step, detail), context / "wheels")

    def _wheels(self, step: Say, detail: Say) -> Path:
        """The proxy's wheels for the engine's platform, downloaded on the host (once per
        set of pins and architecture) with this Python's pip."""
        requirements = images.proxy_dir() / "requirements.txt"
        arch = _engine_arch(self.engine())
        key = hashlib.sha256(requirements.read_bytes() + arch.encode()).hexdigest()[:12]
        wheels = cache_dir() / f"wheels-{key}"
        if (wheels / ".complete").is_file():
            return wheels
        step("downloading the proxy's wheels (pip download)")
        shutil.rmtree(wheels, ignore_errors=True)
        wheels.mkdir(parents=True)
        platforms = [
            f"--platform={p}_{arch}" for p in ("manylinux_2_28", "manylinux_2_17", "manylinux2014")
        ]
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
             "--only-binary=:all:", f"--python-version={BASE_PYTHON}", *platforms,
             "-d", str(wheels), "-r", str(requirements)],
            capture_output=True, text=True, timeout=PIP_TIMEOUT, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            shutil.rmtree(wheels, ignore_errors=True)
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
            raise DevboxRuntimeError(
                f"downloading the proxy's wheels failed:\n{tail}",
                "pip needs to reach PyPI (or PIP_INDEX_URL a mirror) from this host",
            )
        detail(f"{len(list(wheels.glob('*.whl')))} wheels in {wheels}")
        (wheels / ".complete").touch()
        return wheels


BASE_PYTHON = "3.11"  # bookworm's python3, which runs the proxy


def can_debootstrap() -> bool:
    return os.geteuid() == 0 and shutil.which("debootstrap") is not None


def _no_base(source: str, cause: DevboxError | None) -> DevboxError:
    why = cause.message.splitlines()[0] if cause else f"{source} is not here and was not pulled"
    return DevboxRuntimeError(
        f"cannot make the base image: {why}",
        f"either pull it: on a machine that reaches a registry, `devbox images build` uses "
        f"{images.STOCK_BASE} (or `--base IMAGE`, e.g. one you `docker load`ed); or build "
        "offline: as root with debootstrap installed (`apt-get install debootstrap`), "
        "`devbox images build --offline`",
    )


def _engine_arch(docker: DockerBackend) -> str:
    arch = str(docker.info().get("Architecture") or platform.machine())
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)


def _when(image: dict) -> str | None:
    from datetime import UTC, datetime

    created = image.get("Created")
    if not isinstance(created, int):
        return None
    return datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextmanager
def _tar(root: Path) -> Iterator[Iterator[bytes]]:
    """The root at `root` as a tar stream (the `tar` program, as `docker import` wants it)."""
    excludes = [f"--exclude={e}" for e in TAR_EXCLUDES]
    proc = subprocess.Popen(["tar", "-C", str(root), *excludes, "-c", "."], stdout=subprocess.PIPE)
    out = proc.stdout
    assert out is not None
    try:
        yield iter(lambda: out.read(1 << 20), b"")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        out.close()
    if proc.returncode not in (0, -9):
        raise DevboxRuntimeError(f"tar of {root} exited {proc.returncode}", "is the root whole?")
