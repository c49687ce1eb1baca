"""Where DEVBOX_HOME is, and the ledger of config pushes kept in it. Standard library only
and cheap to import: `devbox exec`'s fast path reads the ledger on every run.

A proxy container keeps its config on a tmpfs, so every start of the container (a daemon
restart, a reboot, `docker restart`, an OOM kill) leaves it unconfigured, refusing all
traffic. The ledger records, per proxy container, the start (`State.StartedAt`) that the
last successful push configured:

    home/proxies/<container id>    the StartedAt string, 0600

A proxy whose current StartedAt is not the one recorded has started since, so it needs its
config again. The record is read before the push (a restart during the push then reads as
"needs it", never the reverse), and it never says more than "nothing to do from here": a
wrong or missing record costs one extra push, and an unconfigured proxy still refuses
everything, so no record can open a way out.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

LEDGER_DIR = "proxies"
_HEX = frozenset("0123456789abcdef")


def home_dir() -> str:
    """$DEVBOX_HOME, else $XDG_DATA_HOME/devbox, else ~/.local/share/devbox."""
    if os.environ.get("DEVBOX_HOME"):
        return os.path.expanduser(os.environ["DEVBOX_HOME"])
    xdg = os.environ.get("XDG_DATA_HOME")
    base = (
        os.path.expanduser(xdg) if xdg else os.path.join(os.path.expanduser("~"), ".local", "share")
    )
    return os.path.join(base, "devbox")


def _is_id(container_id: object) -> bool:
    # The id comes from the engine: never let it name a path outside the ledger.
    return (
        isinstance(container_id, str) and len(container_id) == 64 and _HEX.issuperset(container_id)
    )


class PushLedger:
    """Which start of each proxy container holds the config last pushed to it."""

    __slots__ = ("directory",)

    def __init__(self, home: str | os.PathLike[str]) -> None:
        self.directory = os.path.join(os.fspath(home), LEDGER_DIR)

    def holds(self, container_id: object, started_at: object) -> bool | None:
        """True: this start of the container was configured (by a push recorded here).
        False: it was, but it has started again since. None: no push recorded here."""
        if not _is_id(container_id) or not isinstance(started_at, str):
            return None
        try:
            with open(os.path.join(self.directory, container_id), encoding="ascii") as f:
                recorded = f.read(100).strip()
        except (OSError, ValueError):
            return None
        return recorded == started_at

    def record(self, container_id: object, started_at: object) -> None:
        """Note that the container's start `started_at` holds its config (best effort: a
        record that cannot be written costs a push later, nothing else)."""
        if not _is_id(container_id) or not isinstance(started_at, str) or not started_at:
            return
        path = os.path.join(self.directory, container_id)
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(started_at[:100])
            os.replace(tmp, path)
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def forget(self, container_ids: Iterable[str]) -> None:
        for container_id in container_ids:
            if _is_id(container_id):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.directory, container_id))

    def recorded(self) -> list[str]:
        """The container ids with a record."""
        try:
            return [n for n in os.listdir(self.directory) if _is_id(n)]
        except OSError:
            return []
