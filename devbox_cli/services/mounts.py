"""`--mount SRC[:DST][:ro]` and `--volume NAME[:DST][:ro]`: the specs parsed, and every path
checked before Docker is asked. Pure apart from reading the host's filesystem (realpath,
exists); `devbox cp` checks what it sends into a box with the same `check_host_path`.

What a host path may not be, after every symlink in it is resolved (README, "Workspace"):
`/`; the Docker socket or a directory holding one (the engine's socket is root on the
host: a box holding it could start a privileged container); the devbox store, anything in
it or anything holding it (the sealed secrets and the private key that opens them). Where
a box may not mount something: at or under the box's system trees, since a mount there
replaces the box's own programs, libraries, kernel interfaces or Docker's /etc/hosts and
resolv.conf instead of bringing a workspace in.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from devbox_cli.engine.workspace import Mount, VolumeMount
from devbox_cli.errors import NotFoundError, UsageError
from devbox_cli.names import check_volume_name

DEFAULT_DESTINATION = "/workspace"

# A mount at or below one of these would replace the box's system rather than add to it.
SYSTEM_TREES = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run",
    "/sbin", "/sys", "/usr", "/var/run",
)  # fmt: skip
# Exactly these: /tmp is the box's own tmpfs (engine/limits.py), /var its package state.
SYSTEM_EXACT = ("/", "/tmp", "/var")  # noqa: S108
# Where engine sockets live when nothing says otherwise; any of them is root on the host.
STANDARD_SOCKETS = (
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/run/podman/podman.sock",
)
# Socket paths of rootless and desktop engines, refused where they exist.
_USER_SOCKETS = ("{run}/docker.sock", "{run}/podman/podman.sock", "~/.docker/run/docker.sock",
                 "~/.docker/desktop/docker.sock")  # fmt: skip
_SEGMENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@+-")
MAX_DESTINATION = 1024


def parse_mount_spec(text: str) -> tuple[str, str, bool]:
    """SRC[:DST][:ro|rw] -> (SRC as given, DST checked, read-only)."""
    return _split(text, "--mount", "SRC[:DST][:ro]")


def parse_volume_spec(text: str) -> VolumeMount:
    name, destination, read_only = _split(text, "--volume", "NAME[:DST][:ro]")
    return VolumeMount(check_volume_name(name), destination, read_only)


def _split(text: str, flag: str, form: str) -> tuple[str, str, bool]:
    parts = str(text).split(":")
    read_only = False
    if len(parts) > 1 and parts[-1] in ("ro", "rw"):
        read_only = parts.pop() == "ro"
    if len(parts) > 2 or not parts[0]:
        raise UsageError(
            f"invalid {flag} {text!r}",
            f"use {form}; reach a host path holding ':' through a symlink without one",
        )
    destination = parts[1] if len(parts) == 2 else DEFAULT_DESTINATION
    return parts[0], check_destination(destination, flag), read_only


def check_destination(path: str, flag: str = "--mount") -> str:
    """An absolute path in the box, normalized (no trailing '/'), outside its system trees.
    Segments are letters, digits and `._@+-`: no '..', no space, no glob character."""
    bad = UsageError(
        f"invalid {flag} destination {path!r}",
        "use an absolute path in the box such as /workspace or /home/agent/cache, "
        "of letters, digits and ._@+-",
    )
    if not path.startswith("/") or len(path) > MAX_DESTINATION:
        raise bad
    segments = path.strip("/").split("/") if path.strip("/") else []
    for segment in segments:
        if segment in ("", ".", "..") or not _SEGMENT_CHARS.issuperset(segment):
            raise bad
    normal = "/" + "/".join(segments)
    if normal in SYSTEM_EXACT or any(_within(normal, tree) for tree in SYSTEM_TREES):
        raise UsageError(
            f"refusing {flag} destination {normal}: it is part of the box's system",
            f"mount somewhere else, such as {DEFAULT_DESTINATION} or a directory in $HOME "
            f"(refused: {', '.join(SYSTEM_EXACT)} and anything under "
            f"{', '.join(SYSTEM_TREES)})",
        )
    return normal


def check_destinations(destinations: Iterable[str]) -> None:
    seen: set[str] = set()
    for dst in destinations:
        if dst in seen:
            raise UsageError(
                f"two mounts at {dst}", "give each --mount and --volume its own destination"
            )
        seen.add(dst)


def socket_paths(docker_host: str, environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Every engine socket a box must never get: DOCKER_HOST's, the standard places, and
    the rootless or desktop ones that exist here."""
    env = os.environ if environ is None else environ
    found = list(STANDARD_SOCKETS)
    if docker_host.startswith("unix://"):
        found.append(docker_host[len("unix://") :])
    run = env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    for pattern in _USER_SOCKETS:
        path = os.path.expanduser(pattern.format(run=run))
        if os.path.lexists(path):
            found.append(path)
    return tuple(dict.fromkeys(found))


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _forms(path: str) -> set[str]:
    """A path as written (absolute) and as resolved: a refused path is refused under both
    names, so neither a symlink to it nor a symlink in it gets around the check."""
    absolute = os.path.abspath(os.path.expanduser(path))
    return {absolute, os.path.realpath(absolute)}


def check_host_path(
    path: str,
    *,
    store: str | os.PathLike[str],
    sockets: Iterable[str],
    what: str = "mount",
    directory: bool = True,
) -> str:
    """The resolved form of host path `path`, after the refusals above (NotFoundError for a
    path that does not exist, UsageError for a refused one)."""
    absolute = os.path.abspath(os.path.expanduser(path))
    if not os.path.lexists(absolute):
        raise NotFoundError(f"no such file or directory {path}", "give an existing host path")
    try:
        resolved = os.path.realpath(absolute, strict=True)
    except OSError as exc:  # a dangling symlink, a loop, no permission on a parent
        raise NotFoundError(
            f"cannot resolve {path}: {exc.strerror or exc}", "give an existing host path"
        ) from None
    shown = path if resolved == absolute else f"{path} (-> {resolved})"
    if directory and not os.path.isdir(resolved):
        raise UsageError(
            f"cannot {what} {shown}: not a directory",
            "mount a directory; bring a single file in with `devbox cp FILE NAME:/path`",
        )

    reason = _refusal(resolved, store, sockets)
    if reason:
        raise UsageError(
            f"refusing to {what} {shown}: {reason}",
            "name a directory that holds neither the devbox store nor an engine socket",
        )
    return resolved


def _refusal(resolved: str, store: str | os.PathLike[str], sockets: Iterable[str]) -> str:
    if resolved == "/":
        return "it is the host's root"
    for home in _forms(str(store)):
        if _within(resolved, home):
            return f"it is in the devbox store {home} (DEVBOX_HOME)"
        if _within(home, resolved):
            return f"it holds the devbox store {home} (DEVBOX_HOME)"
    for socket in sockets:
        for form in _forms(socket):
            if _within(form, resolved):
                return f"it is or holds the engine socket {form}"
    return ""


def check_mounts(
    specs: Iterable[str | Mount],
    *,
    store: str | os.PathLike[str],
    docker_host: str,
) -> tuple[Mount, ...]:
    """--mount specs (or Mounts) checked and resolved."""
    raw = [s if isinstance(s, Mount) else Mount(*parse_mount_spec(s)) for s in specs]
    if not raw:
        return ()
    if not docker_host.startswith("unix://"):
        raise UsageError(
            f"--mount needs an engine on this machine (DOCKER_HOST={docker_host}): a bind "
            "mount is of the engine host's filesystem, which devbox cannot check from here",
            "bring files in with `devbox cp`, or keep them in a --volume",
        )
    sockets = socket_paths(docker_host)
    return tuple(
        Mount(
            check_host_path(m.source, store=store, sockets=sockets),
            check_destination(m.destination),
            m.read_only,
        )
        for m in raw
    )
