"""Names for shell completion and the version report: quick and never failing.

Completion runs on every Tab, so it reads the store's files and asks the engine over its
socket by hand (engine/wire.py), with a short timeout; it never makes a key, never unseals,
and anything that goes wrong completes nothing rather than printing an error into a shell.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from devbox_cli.engine import wire
from devbox_cli.engine.views import LABEL_NAME, LABEL_ROLE, LABEL_STORE
from devbox_cli.errors import DevboxError
from devbox_cli.home import home_dir
from devbox_cli.names import SNAPSHOT_REPO

ENGINE_TIMEOUT = 1.0  # seconds: a Tab that waits longer than this is worse than no answer


def record_names(kind: str) -> list[str]:
    """The names of the store's records of `kind` (secrets, gateways, policies)."""
    from devbox_cli.store import Store

    try:
        return sorted(Store.open(home_dir()).read(kind))
    except Exception:
        return []


def store_identity() -> str | None:
    """The identity of the store at DEVBOX_HOME (Store.identity), or None when it has no key
    yet: completion must not make one."""
    home = Path(home_dir())
    if not (home / "key.json").is_file():
        return None
    from devbox_cli.store import Store

    try:
        return Store.open(home).identity()
    except Exception:
        return None


def engine_get(path: str, timeout: float = ENGINE_TIMEOUT) -> object:
    """GET `path` of the Engine API; raises on any failure (the caller decides)."""
    sock = wire.connect()
    sock.settimeout(timeout)
    try:
        wire.send(sock, "GET", path, None, upgrade=False)
    except BaseException:
        sock.close()
        raise
    status, data = wire.finish(sock)
    if status != 200:
        raise OSError(f"engine answered {status}")
    return data


def _filters(*labels: str) -> str:
    return quote(json.dumps({"label": list(labels)}))


def devbox_names() -> list[str]:
    """This store's devboxes, as the engine knows them."""
    store = store_identity()
    if store is None:
        return []
    try:
        found = engine_get(
            "/containers/json?all=1&filters="
            + _filters(f"{LABEL_ROLE}=box", f"{LABEL_STORE}={store}")
        )
    except (TimeoutError, OSError, ValueError, DevboxError):
        return []
    names = {(c.get("Labels") or {}).get(LABEL_NAME) for c in found or [] if isinstance(c, dict)}
    return sorted(n for n in names if isinstance(n, str))


def snapshot_names() -> list[str]:
    store = store_identity()
    if store is None:
        return []
    try:
        found = engine_get(
            "/images/json?filters=" + _filters(f"{LABEL_ROLE}=snapshot", f"{LABEL_STORE}={store}")
        )
    except (TimeoutError, OSError, ValueError, DevboxError):
        return []
    prefix = f"{SNAPSHOT_REPO}/{store}:"
    tags = [t for i in found or [] if isinstance(i, dict) for t in i.get("RepoTags") or []]
    return sorted(t[len(prefix) :] for t in tags if isinstance(t, str) and t.startswith(prefix))


def volume_names() -> list[str]:
    from devbox_cli.names import VOLUME_PREFIX

    try:
        found = engine_get("/volumes")
    except (TimeoutError, OSError, ValueError, DevboxError):
        return []
    volumes = (found or {}).get("Volumes") if isinstance(found, dict) else None
    names = [v.get("Name") for v in volumes or [] if isinstance(v, dict)]
    return sorted(n[len(VOLUME_PREFIX) :] for n in names if str(n).startswith(VOLUME_PREFIX))


SOURCES: dict[str, Callable[[], list[str]]] = {
    "devbox": devbox_names,
    "snapshot": snapshot_names,
    "volume": volume_names,
    "secret": lambda: record_names("secrets"),
    "gateway": lambda: record_names("gateways"),
    "policy": lambda: record_names("policies"),
}


def complete(kind: str, incomplete: str) -> list[str]:
    return [n for n in SOURCES[kind]() if n.startswith(incomplete)]


def engine_version() -> dict[str, str] | str:
    """The engine's `docker version` essentials, or why it could not be asked."""
    try:
        data = engine_get("/version", timeout=3.0)
    except DevboxError as exc:
        return exc.message
    except (OSError, ValueError) as exc:
        return f"cannot reach the Docker engine at {wire.docker_host()} ({exc})"
    if not isinstance(data, dict):
        return "the engine's /version answer is not an object"
    return {
        "version": str(data.get("Version", "")),
        "api_version": str(data.get("ApiVersion", "")),
        "os": str(data.get("Os", "")),
        "arch": str(data.get("Arch", "")),
    }
