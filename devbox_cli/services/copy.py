"""CopyService: `devbox cp`, files and directories between the host and a box, streamed as
tar over the Engine API in both directions and never held whole in memory. The path rules
are docker cp's (cp_paths.py); `-` is a tar stream on stdin or stdout. A stopped box can be
copied to and from, as with docker cp (the archive API needs no running process).

Into a box: the tar is made on a thread as it is sent; what it holds belongs to the box's
user, with its modes; the host path is checked as a mount's is (services/mounts.py: never
the store or an engine socket). Out of a box: the stream goes through services/extract.py,
which treats it as hostile. The last segment of a host destination may not be a symlink:
a box with a mount could have planted it there.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import sys
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from devbox_cli.engine.box_user import BoxUser, read_small_file, resolve_user
from devbox_cli.engine.tarpipe import CHUNK, ChunkReader, piped
from devbox_cli.engine.wire import docker_host
from devbox_cli.errors import DevboxError, NotFoundError, UsageError
from devbox_cli.names import box_container, check_devbox_name
from devbox_cli.services.cp_paths import (
    GO_SYMLINK,
    BoxPath,
    box_target,
    contents_of,
    host_target,
    is_dir,
    parse_cp_arg,
)
from devbox_cli.services.extract import extract
from devbox_cli.services.mounts import check_host_path, socket_paths

if TYPE_CHECKING:
    from devbox_cli.engine.docker_backend import DockerBackend
    from devbox_cli.store import Store

Progress = Callable[[int, "int | None"], None]  # (bytes so far, total when known)
_NUMERIC_USER = re.compile(r"\d{1,10}:\d{1,10}")


@dataclass(frozen=True)
class CopyResult:
    source: str
    destination: str
    bytes: int  # of tar stream moved

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "destination": self.destination, "bytes": self.bytes}


class CopyService:
    def __init__(
        self,
        engine: Callable[[], DockerBackend],
        store: Store,
        heal: Callable[[str], object] | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.heal = heal  # DevboxService.heal: a copy touches the devbox, as exec and show do

    def _box(self, docker: DockerBackend, name: str) -> dict[str, Any]:
        check_devbox_name(name)
        if self.heal is not None:
            # The archive API needs no proxy, but the agent's next step does: a proxy that
            # started again since its last push gets its config here, as on show and logs.
            # A failure is the heal's result, not the copy's.
            self.heal(name)
        info = docker.container(box_container(name))
        if info is None:
            raise NotFoundError(f"no devbox {name}", "`devbox list` shows the devboxes")
        return info

    @staticmethod
    def _reachable(info: dict[str, Any], name: str, path: str) -> None:
        """A tmpfs (the box's /tmp) lives in the box's memory, where the archive API never
        looks: docker cp would quietly use the empty directory under it."""
        normal = posixpath.normpath("/" + path.lstrip("/"))
        for tmpfs in (info.get("HostConfig") or {}).get("Tmpfs") or {}:
            if normal == tmpfs or normal.startswith(tmpfs.rstrip("/") + "/"):
                raise UsageError(
                    f"cannot copy {name}:{path}: {tmpfs} is a tmpfs in the box's memory, "
                    "which the engine's copy cannot reach",
                    f"copy through another directory: `devbox exec {name} -- cp` it to or "
                    "from /workspace",
                )

    def copy(
        self,
        source: str,
        destination: str,
        *,
        follow_link: bool = False,
        progress: Progress | None = None,
        stdin: BinaryIO | None = None,
        stdout: BinaryIO | None = None,
    ) -> CopyResult:
        """`devbox cp SOURCE DESTINATION`: exactly one side is NAME:PATH; `-` is a tar
        stream on `stdin` (as the source) or `stdout` (as the destination)."""
        src, dst = parse_cp_arg(source), parse_cp_arg(destination)
        if isinstance(src, BoxPath) == isinstance(dst, BoxPath):
            raise UsageError(
                "one side of cp must be NAME:PATH in a devbox, the other a host path or -",
                "copy between devboxes through the host",
            )
        if isinstance(dst, BoxPath):
            if src == "-":
                return self.import_tar(dst.box, dst.path, stdin or sys.stdin.buffer)
            return self.copy_to(
                str(src), dst.box, dst.path, follow_link=follow_link, progress=progress
            )
        assert isinstance(src, BoxPath)
        if dst == "-":
            out, sent = stdout or sys.stdout.buffer, 0
            for chunk in self.export_tar(src.box, src.path):
                out.write(chunk)
                sent += len(chunk)
            out.flush()
            return CopyResult(f"{src.box}:{src.path}", "-", sent)
        return self.copy_from(
            src.box, src.path, str(dst), follow_link=follow_link, progress=progress
        )

    # -- into a box ------------------------------------------------------------------------

    def _box_user(self, docker: DockerBackend, name: str, info: dict[str, Any]) -> BoxUser:
        spec = str((info.get("Config") or {}).get("User") or "")
        if _NUMERIC_USER.fullmatch(spec):
            uid, gid = spec.split(":")
            return BoxUser(int(uid), int(gid))
        if spec.partition(":")[0] in ("", "root", "0") and not spec.partition(":")[2]:
            return BoxUser(0, 0)
        passwd = read_small_file(docker, box_container(name), "/etc/passwd")
        group = read_small_file(docker, box_container(name), "/etc/group")
        return resolve_user(spec, passwd.text if passwd else "", group.text if group else "")

    def copy_to(
        self,
        source: str,
        name: str,
        path: str,
        *,
        follow_link: bool = False,
        progress: Progress | None = None,
    ) -> CopyResult:
        """Copy host file or directory `source` to `path` in devbox `name`; the copy belongs
        to the box's user and keeps its modes. Returns once the engine has written it."""
        sockets = socket_paths(docker_host())
        resolved = check_host_path(
            source, store=self.store.home, sockets=sockets, what="copy", directory=False
        )
        absolute = os.path.abspath(os.path.expanduser(source))
        is_link = os.path.islink(absolute) and not follow_link
        top = absolute if is_link else resolved
        src_is_dir = not is_link and os.path.isdir(top)
        if source.endswith("/") and not src_is_dir:
            raise UsageError(f"{source} is not a directory", "drop the trailing / to copy the file")
        docker = self.engine()
        info = self._box(docker, name)
        self._reachable(info, name, path)
        where, as_name = box_target(
            lambda p: docker.path_stat(box_container(name), p),
            path if path.startswith("/") else "/" + path,
            src_is_dir=src_is_dir,
            contents=contents_of(source),
            src_name=os.path.basename(absolute),
        )
        self._reachable(info, name, where)
        entries = (
            [(top, as_name)]
            if as_name
            else [(os.path.join(top, c), c) for c in sorted(os.listdir(top))]
        )
        user = self._box_user(docker, name, info)
        total = _size(top) if progress else None
        sent = 0

        def produce(out: BinaryIO) -> None:
            _write_tar(out, entries, user)

        def counted(chunks: Iterable[bytes]) -> Iterator[bytes]:
            nonlocal sent
            for chunk in chunks:
                sent += len(chunk)
                if progress:
                    progress(sent, total)
                yield chunk

        stream = piped(produce)
        docker.put_archive(box_container(name), where, counted(stream))
        return CopyResult(source, f"{name}:{path}", sent)

    def import_tar(self, name: str, path: str, stream: BinaryIO | Iterable[bytes]) -> CopyResult:
        """Extract a tar stream into directory `path` of devbox `name` (`devbox cp - NAME:DIR`),
        as the engine has it: owners and modes as the stream says."""
        docker = self.engine()
        info = self._box(docker, name)
        self._reachable(info, name, path)
        found = docker.path_stat(box_container(name), path)
        if found and int(found.get("mode") or 0) & GO_SYMLINK and found.get("linkTarget"):
            self._reachable(info, name, str(found["linkTarget"]))
            path, found = (
                str(found["linkTarget"]),
                docker.path_stat(box_container(name), str(found["linkTarget"])),
            )
        if not found or not is_dir(found):
            raise NotFoundError(
                f"no directory {path} in devbox {name}",
                "a tar stream goes into an existing directory",
            )
        chunks: Iterable[bytes] = (
            iter(lambda: stream.read(CHUNK), b"") if hasattr(stream, "read") else stream  # type: ignore[union-attr]
        )
        sent = 0

        def counted() -> Iterator[bytes]:
            nonlocal sent
            for chunk in chunks:
                sent += len(chunk)
                yield chunk

        docker.put_archive(box_container(name), path, counted())
        return CopyResult("-", f"{name}:{path}", sent)

    # -- out of a box ----------------------------------------------------------------------

    def _source(
        self, docker: DockerBackend, name: str, path: str, follow_link: bool
    ) -> tuple[str, str, dict[str, Any]]:
        info = self._box(docker, name)
        self._reachable(info, name, path)
        # The engine fails (500) on a trailing / after a file: look the path up without it.
        found = docker.path_stat(box_container(name), path.rstrip("/") or "/")
        if found is None:
            raise NotFoundError(
                f"no {path} in devbox {name}", f"`devbox exec {name} -- ls` shows what is there"
            )
        trailing = path.endswith("/") and path != "/"
        is_link = int(found.get("mode") or 0) & GO_SYMLINK and found.get("linkTarget")
        if is_link and (follow_link or trailing):  # `link/` means what it points to
            path = str(found["linkTarget"])
            self._reachable(info, name, path)
            found = docker.path_stat(box_container(name), path)
            if found is None:
                raise NotFoundError(
                    f"no {path} in devbox {name} (a symlink's target)",
                    "copy the symlink itself without -L",
                )
        if path.endswith("/") and not contents_of(path) and not is_dir(found):
            raise UsageError(
                f"{path} in devbox {name} is not a directory",
                "drop the trailing / to copy the file",
            )
        return box_container(name), path, found

    def export_tar(self, name: str, path: str) -> Iterator[bytes]:
        """`path` in devbox `name` as a tar stream, as the engine makes it (`devbox cp
        NAME:PATH -`): nothing of it is checked, so extract it with care."""
        docker = self.engine()
        container, path, _ = self._source(docker, name, path, False)
        chunks, _stat = docker.get_archive(container, path)
        return chunks

    def copy_from(
        self,
        name: str,
        path: str,
        destination: str,
        *,
        follow_link: bool = False,
        progress: Progress | None = None,
    ) -> CopyResult:
        """Copy `path` of devbox `name` to host path `destination`, which nothing in the
        box can make devbox write outside of (services/extract.py)."""
        docker = self.engine()
        container, path, found = self._source(docker, name, path, follow_link)
        src_is_dir = is_dir(found)
        root = str(found.get("name") or posixpath.basename(path.rstrip("/")) or "/")
        contents = contents_of(path) or root == "/"
        parent, as_name = host_target(
            destination, src_is_dir=src_is_dir, contents=contents, src_name=root
        )
        chunks, stat = docker.get_archive(container, path)
        total = None if src_is_dir else int(found.get("size") or 0) or None
        reader = ChunkReader(
            chunks, on_read=(lambda _n: progress(reader.count, total)) if progress else None
        )
        done = extract(
            reader,  # type: ignore[arg-type]
            parent,
            as_name,
            str(stat.get("name") or root),
            source=f"devbox {name}",
            refused_trees={os.path.abspath(self.store.home), os.path.realpath(self.store.home)},
        )
        if done.skipped:
            more = f" (and {len(done.skipped) - 5} more)" if len(done.skipped) > 5 else ""
            raise DevboxError(
                f"copied {name}:{path} to {destination}, leaving out "
                f"{len(done.skipped)}: {'; '.join(done.skipped[:5])}{more}",
                "devbox writes no symlink leaving the copy, device file, FIFO or setuid bit "
                "on the host; copy what a symlink points to with -L, or pack it with "
                f"`devbox cp {name}:{path} - > copy.tar`",
            )
        return CopyResult(f"{name}:{path}", destination, reader.count)


def _size(path: str) -> int:
    if not os.path.isdir(path):
        return os.lstat(path).st_size
    total = 0
    for top, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):  # gone since the walk listed it
                total += os.lstat(os.path.join(top, f)).st_size
    return total


def _write_tar(out: BinaryIO, entries: list[tuple[str, str]], user: BoxUser) -> None:
    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
        if info.ischr() or info.isblk() or info.isfifo():
            raise DevboxError(
                f"cannot copy the special file {info.name}", "copy files, directories and symlinks"
            )
        info.uid, info.gid, info.uname, info.gname = user.uid, user.gid, "", ""
        return info

    try:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for path, arcname in entries:
                tar.add(path, arcname, recursive=True, filter=owned)
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        raise DevboxError(
            f"cannot read {exc.filename or entries[0][0]}: {exc.strerror or exc}",
            "check the host path's permissions",
        ) from None
