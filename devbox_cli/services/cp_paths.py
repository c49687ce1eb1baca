"""The path rules of `devbox cp`, docker cp's, kept pure: which argument is a box's path,
and where a copy lands given what already exists at its destination.

A path ends in `/.` to copy a directory's contents rather than the directory; a
destination that is an existing directory receives the source inside it; one that does
not exist becomes the copy (its parent must exist; with a trailing `/` a file has nowhere
to go). A box's path is relative to its `/`.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devbox_cli.errors import NotFoundError, UsageError
from devbox_cli.names import check_devbox_name

GO_DIR = 1 << 31  # Go's os.FileMode bits, as the engine reports a path's mode
GO_SYMLINK = 1 << 27


@dataclass(frozen=True)
class BoxPath:
    box: str
    path: str  # absolute in the box, with the trailing `/` or `/.` it was given


def parse_cp_arg(arg: str) -> BoxPath | str:
    """`NAME:PATH` is a box's path; `-`, an absolute path, one starting with `.`, or one
    without `:` is the host's (docker cp's rule: write ./a:b for a host path with ':')."""
    if arg == "-" or arg.startswith(("/", ".")) or ":" not in arg:
        if not arg:
            raise UsageError("an empty path", "give a host path, NAME:PATH, or -")
        return arg
    name, _, path = arg.partition(":")
    if not path:
        raise UsageError(
            f"no path after {name}:", f"give the path in the box, e.g. {name}:/workspace"
        )
    check_devbox_name(name)
    return BoxPath(name, path if path.startswith("/") else "/" + path)


def contents_of(path: str) -> bool:
    return path == "." or path.endswith("/.")


def is_dir(stat: dict[str, Any]) -> bool:
    return bool(int(stat.get("mode") or 0) & GO_DIR)


def host_target(
    dst: str, *, src_is_dir: bool, contents: bool, src_name: str
) -> tuple[str, str | None]:
    """Where a copy out of a box goes on the host: (an existing directory, the name the
    copy takes in it), or (the destination directory, None) to copy contents into it."""
    absolute = os.path.abspath(os.path.expanduser(dst))
    if os.path.islink(absolute):
        raise UsageError(
            f"refusing to write to {dst}: it is a symlink (to {os.readlink(absolute)})",
            "name the directory it points to; a box with a mount can plant symlinks",
        )
    if os.path.isdir(absolute):
        if src_is_dir and contents:
            return absolute, None
        return absolute, src_name
    if os.path.lexists(absolute):
        if src_is_dir:
            raise UsageError(
                f"cannot copy a directory to the file {dst}",
                "name a directory, or a path that does not exist yet",
            )
        return os.path.dirname(absolute), os.path.basename(absolute)
    parent = os.path.dirname(absolute)
    if (dst.endswith("/") and not src_is_dir) or not os.path.isdir(parent):
        missing = absolute if dst.endswith("/") else parent
        raise NotFoundError(
            f"no directory {missing} on the host", "the destination's directory must exist"
        )
    return parent, os.path.basename(absolute)


def box_target(
    stat: Callable[[str], dict[str, Any] | None], dst: str, *, src_is_dir: bool, contents: bool,
    src_name: str,
) -> tuple[str, str | None]:  # fmt: skip
    """Where a copy into a box goes: (an existing directory in the box, the name the copy
    takes there, or None to copy contents into it). `stat` answers for a box path."""
    path = dst.rstrip("/") or "/"
    found = stat(path)
    if found and int(found.get("mode") or 0) & GO_SYMLINK and found.get("linkTarget"):
        path = str(found["linkTarget"])  # the engine resolves it inside the box
        found = stat(path)
    if found and is_dir(found):
        return path, None if (src_is_dir and contents) else src_name
    if found:
        if src_is_dir:
            raise UsageError(
                f"cannot copy a directory to the file {dst} in the box",
                "name a directory, or a path that does not exist yet",
            )
        return posixpath.dirname(path), posixpath.basename(path)
    parent = posixpath.dirname(path)
    parent_stat = stat(parent)
    if (dst.endswith("/") and not src_is_dir) or not parent_stat or not is_dir(parent_stat):
        missing = path if dst.endswith("/") else parent
        raise NotFoundError(
            f"no directory {missing} in the box", "the destination's directory must exist"
        )
    return parent, posixpath.basename(path)
