"""The box's user, as the box's own /etc/passwd has it, and the remap that makes files the
agent writes in a mount the invoking user's on the host.

The remap is what VS Code dev containers' updateRemoteUserUID does, done on the new box
instead of a derived image: the box runs as the invoking uid:gid (its `User`), and the
image user's passwd entry takes those ids over, so its name, $HOME and groups still work.
What the image user owned in its home and the image's WORKDIR is handed over too. All of
it goes over the archive API, never a root exec: a root exec in a box whose user is not
root has no capabilities (it could not chown), and the box needs no tools for it. The
handover never touches a mount (a host directory keeps the owners it has).
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from devbox_cli.engine.tarpipe import ChunkReader, piped
from devbox_cli.engine.workspace import Workspace
from devbox_cli.errors import DevboxRuntimeError

if TYPE_CHECKING:
    from devbox_cli.engine.docker_backend import DockerBackend

MAX_ACCOUNT_FILE = 1 << 20  # /etc/passwd or /etc/group; the box's, so read with a cap
_PATH_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@+-/")


@dataclass(frozen=True)
class BoxUser:
    uid: int
    gid: int
    name: str | None = None  # None: the id has no passwd entry
    home: str | None = None


def is_root(spec: str) -> bool:
    """A container `User` that is root: empty, root or 0, with or without a group."""
    return spec.partition(":")[0] in ("", "root", "0")


def _entries(text: str, fields: int) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= fields and parts[2].isdigit() and len(parts[2]) <= 10:
            rows.append(parts)
    return rows


def resolve_user(spec: str, passwd: str, group: str = "") -> BoxUser:
    """The ids a container `User` (name or uid, optionally :group or :gid) runs as, the way
    runc reads them from the box's files; an unknown name is uid 0 as a last resort."""
    user, _, grp = spec.partition(":")
    user = user or "0"  # no User: root
    entry = next(
        (p for p in _entries(passwd, 7) if p[0] == user or (user.isdigit() and p[2] == user)),
        None,
    )
    if entry:
        gid = int(entry[3]) if entry[3].isdigit() else 0
        found = BoxUser(int(entry[2]), gid, entry[0], entry[5])
    elif user.isdigit():
        found = BoxUser(int(user), 0)
    else:
        found = BoxUser(0, 0)
    if grp.isdigit():
        return BoxUser(found.uid, int(grp), found.name, found.home)
    if grp:
        gid = next((int(g[2]) for g in _entries(group, 3) if g[0] == grp), found.gid)
        return BoxUser(found.uid, gid, found.name, found.home)
    return found


def remapped_passwd(passwd: str, name: str, uid: int, gid: int) -> str:
    lines = passwd.splitlines()
    for i, line in enumerate(lines):
        parts = line.split(":")
        if len(parts) >= 7 and parts[0] == name:
            parts[2], parts[3] = str(uid), str(gid)
            lines[i] = ":".join(parts)
            break
    return "\n".join(lines) + "\n"


def remapped_group(group: str, old_gid: int, gid: int) -> str | None:
    """The image user's primary group takes the new gid, unless a group has it already
    (then the user simply joins that one as its primary group); None: nothing to change."""
    rows = _entries(group, 3)
    if any(int(g[2]) == gid for g in rows):
        return None
    lines = group.splitlines()
    for i, line in enumerate(lines):
        parts = line.split(":")
        if len(parts) >= 3 and parts[2] == str(old_gid):
            parts[2] = str(gid)
            lines[i] = ":".join(parts)
            return "\n".join(lines) + "\n"
    return None


@dataclass
class BoxFile:
    """A small regular file of the box: its tar header (mode, owner) and its content."""

    info: tarfile.TarInfo
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


def read_small_file(docker: DockerBackend, container: str, path: str) -> BoxFile | None:
    """One regular file of the box (running or not); None when it is absent or not a
    regular file. The box writes these files, so they are read with a cap."""
    from devbox_cli.errors import NotFoundError

    try:
        chunks, _stat = docker.get_archive(container, path, chunk_size=64 << 10)
    except NotFoundError:
        return None
    data = bytearray()
    for chunk in chunks:
        data += chunk
        if len(data) > MAX_ACCOUNT_FILE + (64 << 10):
            raise DevboxRuntimeError(f"{path} in the box is larger than {MAX_ACCOUNT_FILE} bytes")
    with tarfile.open(fileobj=io.BytesIO(bytes(data)), mode="r:") as tar:
        member = tar.next()
        handle = tar.extractfile(member) if member is not None and member.isreg() else None
        return BoxFile(member, handle.read()) if member and handle else None


def _write_files(docker: DockerBackend, container: str, files: list[BoxFile]) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:", format=tarfile.PAX_FORMAT) as tar:
        for file in files:
            file.info.size = len(file.content)
            tar.addfile(file.info, io.BytesIO(file.content))
    docker.put_archive(container, "/etc", [out.getvalue()])


def _usable(path: str | None, workspace: Workspace) -> bool:
    """A directory the handover may walk: a plain path on the box's own filesystem."""
    if not path or path == "/" or not path.startswith("/") or not _PATH_CHARS.issuperset(path):
        return False
    return not any(path == d or path.startswith(d + "/") for d in workspace.destinations)


Rule = Callable[[tarfile.TarInfo, bool], bool]  # (member, is the start itself) -> changed


def handover_rule(old: BoxUser | None, new: BoxUser, *, root_too: bool) -> Rule:
    """What changes owner: what `old` owned goes to `new`; with root_too, the start itself
    too when root owns it (a fresh volume's root)."""

    def rule(member: tarfile.TarInfo, is_start: bool) -> bool:
        changed = False
        if old is not None and member.uid == old.uid:
            member.uid, changed = new.uid, True
        if old is not None and member.gid == old.gid:
            member.gid, changed = new.gid, True
        if root_too and is_start and member.uid == 0:
            member.uid, member.gid, changed = new.uid, new.gid, True
        return changed

    return rule


def _handover(
    docker: DockerBackend, container: str, start: str, skip: tuple[str, ...], rule: Rule
) -> None:
    """Rewrite the owners under `start` by reading it as a tar and writing back only the
    entries `rule` changed (the engine sets a header's owner as it extracts). Entries at or
    under `skip` (the mounts) are never read back, so never written."""
    chunks, stat = docker.get_archive(container, start)
    root = str(stat.get("name") or posixpath.basename(start))
    parent = posixpath.dirname(start)

    def produce(out: BinaryIO) -> None:
        with (
            tarfile.open(fileobj=ChunkReader(chunks), mode="r|") as src,  # type: ignore[arg-type]
            tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as dst,
        ):
            for member in src:
                path = posixpath.join(parent, member.name)
                if any(path == d or path.startswith(d + "/") for d in skip):
                    continue
                if rule(member, member.name == root):
                    dst.addfile(member, src.extractfile(member) if member.isreg() else None)

    docker.put_archive(container, parent, piped(produce))


def prepare(docker: DockerBackend, container: str, workspace: Workspace) -> None:
    """Run once the box has started: take the owner's ids over (workspace.owner) and give
    the box user the root of each volume this create made (a fresh volume is root's)."""
    if workspace.owner is None and not workspace.fresh:
        return
    passwd = read_small_file(docker, container, "/etc/passwd")
    group = read_small_file(docker, container, "/etc/group")
    user = resolve_user(
        workspace.image_user, passwd.text if passwd else "", group.text if group else ""
    )
    owner = workspace.owner
    box = BoxUser(owner.uid, owner.gid) if owner else user
    old = None
    if owner and user.name and passwd and (user.uid, user.gid) != (owner.uid, owner.gid):
        old = user
        passwd.content = remapped_passwd(passwd.text, user.name, owner.uid, owner.gid).encode()
        changed = [passwd]
        new_group = remapped_group(group.text, user.gid, owner.gid) if group else None
        if group and new_group is not None:
            group.content = new_group.encode()
            changed.append(group)
        _write_files(docker, container, changed)
        for start in dict.fromkeys((user.home, workspace.workdir)):
            if start and _usable(start, workspace):
                skip = workspace.destinations
                _handover(docker, container, start, skip, handover_rule(old, box, root_too=False))
    for start in workspace.fresh:
        if old is not None or box.uid != 0:
            skip = tuple(d for d in workspace.destinations if d != start)
            _handover(docker, container, start, skip, handover_rule(old, box, root_too=True))
