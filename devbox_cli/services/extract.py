"""Writing a tar stream from a box onto the host, treating every byte of it as hostile.

The agent is assumed compromised, so what it hands back is attacker-controlled: names,
link targets, modes and types. This is the only place such a stream is written to the
host, and it never uses tarfile's extraction. It refuses:

- a name outside the copied path: absolute, with a `..` segment, or not under its root;
- a symlink whose target is absolute or climbs out of the copy; a symlink as the copied
  path itself; a hard link to anything but a file this copy wrote;
- device files, FIFOs and other special files; a setuid bit, or setgid on a file;
- a name that would land in the devbox store.

A refused name stops the copy (no honest engine makes one); an entry a box's filesystem can
hold but the host must not get is skipped, and reported when the copy ends (Skipped).
Every directory below the destination is opened with O_NOFOLLOW relative to its parent's
descriptor, so no symlink is ever followed while writing, whether the stream planted it or
it was on the host before; a file or link replaces what was at its name (a symlink there
is removed, not written through; a hard-linked file is unlinked, not truncated). Owners in
the stream are ignored (files belong to the invoking user), as are extended attributes
(file capabilities included). Entries before a refused one stay written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from devbox_cli.errors import DevboxError

COPY_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class Refused(DevboxError):
    """An entry no honest engine makes (it would land outside the destination, or write
    through a symlink): the copy stops there."""


class Skipped(Refused):
    """An entry a box's filesystem can hold but the host must not get (a symlink out of
    the copy, a device, a setuid bit): left out, the rest copied, and reported."""


@dataclass
class Extracted:
    files: int = 0
    directories: int = 0
    links: int = 0
    bytes: int = 0  # of file content written
    skipped: list[str] = field(default_factory=list)  # why each Skipped entry was left out
    _dirs: list[tuple[tuple[str, ...], int, float]] = field(default_factory=list, repr=False)


def member_parts(name: str, root: str) -> tuple[str, ...]:
    """The segments of entry `name` below the archive's root `root` (the stat name of the
    copied path: `d`, `.`, or `/` for a box's whole filesystem); raises Refused."""
    if root == "/":
        rest = name.lstrip("/")
    elif name == root:
        rest = ""
    elif name.startswith(root + "/"):
        rest = name[len(root) + 1 :]
    elif name.startswith("/"):
        raise Refused(f"absolute path {name!r}")
    else:
        raise Refused(f"{name!r} is outside the copied path {root!r}")
    parts = tuple(p for p in rest.split("/") if p not in ("", "."))
    if ".." in parts:
        raise Refused(f"'..' in {name!r}")
    if any("\0" in p for p in parts):
        raise Refused(f"NUL in {name!r}")
    return parts


def check_link_target(target: str, depth: int) -> None:
    """A symlink `depth` directories below the copy's root may point only inside the copy:
    relative, its `..` segments all at its start and no more of them than `depth`. (A `..`
    after a name could climb out through a symlink the name turns out to be.)"""
    if not target or "\0" in target:
        raise Skipped("an empty symlink target")
    if target.startswith("/"):
        raise Skipped(f"symlink to absolute path {target!r}")
    climbing, climbs = True, 0
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not climbing:
                raise Skipped(f"symlink target {target!r} climbs after a name")
            climbs += 1
        else:
            climbing = False
    if climbs > depth:
        raise Skipped(f"symlink to {target!r} leaves the copy")


class Extractor:
    """Writes one archive under `parent` (an open, resolved host directory): its root as
    `name`, or with name=None its root's contents into `parent` itself."""

    def __init__(
        self, parent: str, name: str | None, root: str, *, refused_trees: Iterable[str] = ()
    ) -> None:
        self.parent = os.path.realpath(parent)
        self.name = name
        self.root = root
        self.refused_trees = tuple(refused_trees)
        self.result = Extracted()
        self._written: set[tuple[str, ...]] = set()
        self._base = os.open(self.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._cache: tuple[tuple[str, ...], int] | None = None

    def close(self) -> None:
        if self._cache is not None:
            os.close(self._cache[1])
            self._cache = None
        os.close(self._base)

    # -- paths -----------------------------------------------------------------------------

    def _host_parts(self, parts: tuple[str, ...]) -> tuple[str, ...]:
        return (self.name, *parts) if self.name is not None else parts

    def _host_path(self, parts: tuple[str, ...]) -> str:
        return os.path.join(self.parent, *parts)

    def _dir(self, parts: tuple[str, ...]) -> int:
        """An fd of directory `parts` below the base, made when missing, opened segment by
        segment without following a symlink. The fd is the extractor's; don't close it."""
        if self._cache is not None and self._cache[0] == parts:
            return self._cache[1]
        fd = os.dup(self._base)
        try:
            for i, part in enumerate(parts):
                try:
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    os.mkdir(part, 0o755, dir_fd=fd)
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        where = self._host_path(parts[: i + 1])
                        raise Refused(f"{where} is a symlink or not a directory") from None
                    raise
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        if self._cache is not None:
            os.close(self._cache[1])
        self._cache = (parts, fd)
        return fd

    def _clear(self, fd: int, leaf: str, parts: tuple[str, ...], *, keep_dir: bool) -> bool:
        """Make room at `leaf`: remove a non-directory there. True when a directory is
        there (kept when keep_dir, else refused)."""
        try:
            st = os.stat(leaf, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            raise Refused(f"{self._host_path(parts)} is a directory; an entry would replace it")
        os.unlink(leaf, dir_fd=fd)
        self._written.discard(parts)
        return False

    # -- entries ---------------------------------------------------------------------------

    def add(self, member: tarfile.TarInfo, content: BinaryIO | None) -> None:
        rel = member_parts(member.name, self.root)
        if self.name is None and not rel:
            return  # the root of a contents copy is the existing destination: left as it is
        parts = self._host_parts(rel)
        host = self._host_path(parts)
        if any(host == t or host.startswith(t.rstrip("/") + "/") for t in self.refused_trees):
            raise Refused(f"{host} is in the devbox store")
        if member.mode & stat.S_ISUID or (member.mode & stat.S_ISGID and not member.isdir()):
            raise Skipped(f"setuid or setgid bit on {member.name!r}")
        fd, leaf = self._dir(parts[:-1]), parts[-1]
        if member.isdir():
            if not self._clear(fd, leaf, parts, keep_dir=True):
                os.mkdir(leaf, 0o700, dir_fd=fd)  # opened up to its mode once it is filled
                self.result._dirs.append((parts, member.mode & 0o3777, member.mtime))
            self.result.directories += 1
        elif member.isreg():
            self._clear(fd, leaf, parts, keep_dir=False)
            self._write(fd, leaf, member, content)
            self._written.add(parts)
        elif member.issym():
            if not rel:
                raise Skipped("the copied path is a symlink (copy what it points to with -L)")
            try:
                check_link_target(member.linkname, len(rel) - 1)
            except Skipped as exc:
                raise Skipped(f"{member.name!r}: {exc.message}") from None
            self._clear(fd, leaf, parts, keep_dir=False)
            os.symlink(member.linkname, leaf, dir_fd=fd)
            self._utime(fd, leaf, member.mtime)
            self.result.links += 1
        elif member.islnk():
            self._hard_link(fd, leaf, parts, member)
        else:
            kind = "device file" if member.ischr() or member.isblk() else "special file"
            raise Skipped(f"{kind} {member.name!r}")

    def _write(self, fd: int, leaf: str, member: tarfile.TarInfo, content: BinaryIO | None) -> None:
        out = os.open(leaf, _FILE_FLAGS, 0o600, dir_fd=fd)
        try:
            while content is not None and (data := content.read(COPY_CHUNK)):
                view = memoryview(data)
                while view:
                    view = view[os.write(out, view) :]
                self.result.bytes += len(data)
            os.fchmod(out, member.mode & 0o1777)
            os.utime(out, (member.mtime, member.mtime))
        finally:
            os.close(out)
        self.result.files += 1

    def _hard_link(
        self, fd: int, leaf: str, parts: tuple[str, ...], member: tarfile.TarInfo
    ) -> None:
        try:
            target = self._host_parts(member_parts(member.linkname, self.root))
        except Refused as exc:
            raise Refused(f"hard link {member.name!r}: {exc.message}") from None
        if target not in self._written:
            raise Skipped(f"hard link {member.name!r} to {member.linkname!r}, not a file it wrote")
        self._clear(fd, leaf, parts, keep_dir=False)
        # One directory fd is cached at a time: hold the source's, then walk to the link's.
        source_fd = os.dup(self._dir(target[:-1]))
        try:
            os.link(target[-1], leaf, src_dir_fd=source_fd, dst_dir_fd=self._dir(parts[:-1]),
                    follow_symlinks=False)  # fmt: skip
        finally:
            os.close(source_fd)
        self._written.add(parts)
        self.result.files += 1

    @staticmethod
    def _utime(fd: int, leaf: str, mtime: float) -> None:
        with contextlib.suppress(OSError):  # a filesystem without symlink times
            os.utime(leaf, (mtime, mtime), dir_fd=fd, follow_symlinks=False)

    def finish(self) -> Extracted:
        """Give each directory this copy made its mode and time, deepest first (a read-only
        directory is filled before it is closed)."""
        for parts, mode, mtime in reversed(self.result._dirs):
            fd = self._dir(parts[:-1])
            sub = os.open(parts[-1], _DIR_FLAGS, dir_fd=fd)
            try:
                os.fchmod(sub, mode)
                os.utime(sub, (mtime, mtime))
            finally:
                os.close(sub)
        return self.result


def extract(
    stream: BinaryIO,
    parent: str,
    name: str | None,
    root: str,
    *,
    source: str,
    refused_trees: Iterable[str] = (),
) -> Extracted:
    """Write the tar `stream` (read sequentially, never whole) under `parent`; see
    Extractor. `source` names where it came from, for errors."""
    extractor = Extractor(parent, name, root, refused_trees=refused_trees)
    member = None
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                try:
                    extractor.add(member, tar.extractfile(member) if member.isreg() else None)
                except Skipped as exc:
                    extractor.result.skipped.append(exc.message)
        return extractor.finish()
    except Refused as exc:
        raise Refused(
            f"refused {source}: {exc.message}",
            "a devbox's files are not trusted, so devbox writes none that could leave the "
            "destination; the entries before this one were written",
        ) from None
    except tarfile.TarError as exc:
        raise DevboxError(f"the archive from {source} is malformed: {exc}") from None
    except OSError as exc:
        where = exc.filename or (member.name if member is not None else parent)
        raise DevboxError(
            f"writing {where} from {source}: {exc.strerror or exc}",
            "check the destination's permissions and free space",
        ) from None
    finally:
        extractor.close()
