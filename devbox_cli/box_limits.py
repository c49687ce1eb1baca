"""A box's resource limits and hardening: the defaults, the `devbox create` flags and
DEVBOX_* variables that override them, the Docker host config they become, and the view
read back from `docker inspect`. Pure: the engine's facts (`docker info`) are passed in.

Why these defaults (README, "Limits of a devbox"): a coding agent compiles, links and runs
test suites, so a box gets what a developer laptop's container would (2 CPUs, 4 GiB, 4096
tasks), while one runaway box can no longer take the whole host, its proxy or its
neighbours with it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from devbox_cli.errors import NotFoundError, UsageError

DEFAULT_CPUS = 2.0  # at most the engine's CPU count
DEFAULT_MEMORY = 4 << 30
DEFAULT_PIDS = 4096
DEFAULT_TMP_SIZE = 2 << 30  # Debian 13's tmpfs /tmp is half the RAM; here half the memory
MIN_MEMORY = 32 << 20
MIN_PIDS = 32
MIN_TMP_SIZE = 1 << 20
MIN_DISK = 64 << 20
UNLIMITED = "unlimited"
TMP = "/tmp"  # noqa: S108 (a tmpfs of the box's own, not a file on this machine)

# Docker's default set minus what an agent (or root in its box) never needs: raw sockets
# (ping, packet crafting), device nodes, the host's audit log, chroot. Root in the box can
# still install packages (chown, setuid to _apt, ...).
CAP_DROP = ("AUDIT_WRITE", "MKNOD", "NET_RAW", "SYS_CHROOT")
NO_NEW_PRIVILEGES = {"no-new-privileges", "no-new-privileges:true", "no-new-privileges=true"}
# Under host memory pressure the kernel kills a box's processes before a proxy's or the
# host's. A process in the box may raise its own score, never lower it.
OOM_SCORE_ADJ = 500
# `docker logs` of a box is what its PID 1 writes, which any process in the box can reach
# (/proc/1/fd/1); without rotation that is a way to fill the host's disk.
BOX_LOG = {"type": "json-file", "config": {"max-size": "10m", "max-file": "2"}}
# Storage drivers that can cap a container's writable layer (`--storage-opt size`);
# overlay2 can only on xfs mounted with pquota, which `docker info` does not show.
DISK_QUOTA_DRIVERS = {"btrfs", "zfs", "devicemapper", "windowsfilter"}

# (field, flag, environment variable)
KNOBS = (
    ("cpus", "--cpus", "DEVBOX_CPUS"),
    ("memory", "--memory", "DEVBOX_MEMORY"),
    ("pids", "--pids-limit", "DEVBOX_PIDS_LIMIT"),
    ("tmp_size", "--tmp-size", "DEVBOX_TMP_SIZE"),
    ("disk", "--disk", "DEVBOX_DISK"),
    ("runtime", "--runtime", "DEVBOX_RUNTIME"),
)

_SIZE = re.compile(r"(\d+(?:\.\d+)?)([kmgt]?)(?:i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_RUNTIME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")


@dataclass(frozen=True)
class BoxLimits:
    """What a box may use. None means unlimited (cpus, memory, pids), not capped (disk),
    or the engine's default (runtime)."""

    cpus: float | None = DEFAULT_CPUS
    memory: int | None = DEFAULT_MEMORY  # bytes
    pids: int | None = DEFAULT_PIDS
    tmp_size: int | None = DEFAULT_TMP_SIZE  # bytes of the tmpfs at /tmp (None: no tmpfs)
    disk: int | None = None  # bytes of the writable layer
    runtime: str | None = None
    no_new_privileges: bool = True
    cap_drop: tuple[str, ...] = CAP_DROP
    # where each value came from (a flag, a variable or "default"), for error messages
    origin: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "cpus": self.cpus,
            "memory": self.memory,
            "pids": self.pids,
            "tmp_size": self.tmp_size,
            "disk": self.disk,
            "runtime": self.runtime,
            "no_new_privileges": self.no_new_privileges,
            "cap_drop": list(self.cap_drop),
        }

    def describe(self) -> str:
        """One line for `devbox show`."""
        cpus = UNLIMITED if self.cpus is None else f"{self.cpus:g}"
        return ", ".join(
            [
                f"cpus {cpus}",
                f"memory {format_size(self.memory)}",
                f"pids {UNLIMITED if self.pids is None else self.pids}",
                f"{TMP} {'on disk' if self.tmp_size is None else format_size(self.tmp_size)}",
                f"disk {'not capped' if self.disk is None else format_size(self.disk)}",
                f"runtime {self.runtime or 'default'}",
            ]
        )

    def hardening(self) -> str:
        nnp = "no-new-privileges" if self.no_new_privileges else "new privileges allowed"
        dropped = ", ".join(self.cap_drop) or "none"
        return f"{nnp}; dropped capabilities: {dropped}"


# -- parsing -------------------------------------------------------------------------------


def parse_size(value: str | int, what: str) -> int:
    """`512m`, `2g`, `1.5G`, `1024` (bytes) -> bytes; units are binary, as Docker's are."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise _bad(what, value, "a size above 0")
        return value
    match = _SIZE.fullmatch(str(value).strip())
    if not match:
        raise _bad(what, value, "a size like 512m or 2g")
    size = int(float(match[1]) * _UNITS[match[2].lower()])
    if size <= 0:
        raise _bad(what, value, "a size above 0")
    return size


def format_size(size: int | None) -> str:
    if size is None:
        return UNLIMITED
    for unit in "tgmk":
        scale = _UNITS[unit]
        if size >= scale and size % (scale // 8) == 0:
            return f"{size / scale:g}{unit}"
    return f"{size}b"


def _bad(what: str, value: object, expected: str) -> UsageError:
    return UsageError(f"invalid {what} {value!r}", f"use {expected}")


def _is_unlimited(value: object) -> bool:
    return isinstance(value, str) and value.strip().lower() == UNLIMITED


def _cpus(value: str | float, what: str) -> float | None:
    if _is_unlimited(value):
        return None
    try:
        cpus = float(value)
    except (TypeError, ValueError):
        raise _bad(what, value, "a number of CPUs like 1.5, or unlimited") from None
    if not math.isfinite(cpus) or cpus < 0.01:
        raise _bad(what, value, "a number of CPUs of at least 0.01, or unlimited")
    return round(cpus, 2)


def _memory(value: str | int, what: str) -> int | None:
    if _is_unlimited(value):
        return None
    size = parse_size(value, what)
    if size < MIN_MEMORY:
        raise _bad(what, value, f"at least {format_size(MIN_MEMORY)}, or unlimited")
    return size


def _pids(value: str | int, what: str) -> int | None:
    if _is_unlimited(value):
        return None
    try:
        pids = int(str(value).strip()) if not isinstance(value, bool) else 0
    except ValueError:
        raise _bad(what, value, f"a whole number of at least {MIN_PIDS}, or unlimited") from None
    if pids < MIN_PIDS:
        raise _bad(what, value, f"a whole number of at least {MIN_PIDS}, or unlimited")
    return pids


def _tmp_size(value: str | int, what: str) -> int:
    size = parse_size(value, what)
    if size < MIN_TMP_SIZE:
        raise _bad(what, value, f"at least {format_size(MIN_TMP_SIZE)}")
    return size


def _disk(value: str | int, what: str) -> int:
    size = parse_size(value, what)
    if size < MIN_DISK:
        raise _bad(what, value, f"at least {format_size(MIN_DISK)}")
    return size


def _runtime(value: str, what: str) -> str:
    text = str(value).strip()
    if not _RUNTIME.fullmatch(text):
        raise _bad(what, value, "the name of a runtime `docker info` lists, like runc or crun")
    return text


_PARSERS = {
    "cpus": _cpus,
    "memory": _memory,
    "pids": _pids,
    "tmp_size": _tmp_size,
    "disk": _disk,
    "runtime": _runtime,
}


def resolve_limits(
    *,
    cpus: str | float | None = None,
    memory: str | int | None = None,
    pids: str | int | None = None,
    tmp_size: str | int | None = None,
    disk: str | int | None = None,
    runtime: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> BoxLimits:
    """Each limit from its argument (a flag), else its DEVBOX_* variable, else the default.
    An empty variable counts as unset."""
    env = os.environ if environ is None else environ
    given = {
        "cpus": cpus,
        "memory": memory,
        "pids": pids,
        "tmp_size": tmp_size,
        "disk": disk,
        "runtime": runtime,
    }
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key, flag, var in KNOBS:
        if given[key] is not None:
            values[key] = _PARSERS[key](given[key], flag)
            origin[key] = flag
        elif env.get(var, "").strip():
            values[key] = _PARSERS[key](env[var], var)
            origin[key] = var
        else:
            origin[key] = "default"
    return BoxLimits(**values, origin=origin)


# -- the engine ----------------------------------------------------------------------------


def fit_to_engine(limits: BoxLimits, info: Mapping[str, Any]) -> BoxLimits:
    """Check the limits against what this engine has (`docker info`): its CPUs, runtimes
    and storage driver. The default CPU limit shrinks to a smaller engine."""
    cpus = limits.cpus
    ncpu = int(info.get("NCPU") or 0)
    if cpus is not None and ncpu and cpus > ncpu:
        if limits.origin.get("cpus", "default") == "default":
            cpus = float(ncpu)
        else:
            raise UsageError(
                f"{limits.origin['cpus']} {cpus:g} is more than the engine's {ncpu} CPUs",
                f"use at most {ncpu}, or unlimited",
            )
    runtimes = sorted(info.get("Runtimes") or {})
    if limits.runtime is not None and limits.runtime not in runtimes:
        raise NotFoundError(
            f"no Docker runtime {limits.runtime!r} in this engine "
            f"(it has: {', '.join(runtimes) or 'none listed'})",
            'install it and add it to "runtimes" in /etc/docker/daemon.json, reload dockerd '
            f"(kill -HUP), then check `docker info`; or drop {limits.origin.get('runtime')}",
        )
    if limits.disk is not None:
        driver, backing = storage_driver(info)
        if not disk_quota_possible(driver, backing):
            raise UsageError(
                f"{limits.origin.get('disk')} needs a storage driver that can cap a container's "
                f"writable layer; this engine's is {driver} on {backing or 'unknown'}",
                "run Docker's data root on xfs mounted with pquota (overlay2), btrfs or zfs; "
                "or drop it (README: Limits of a devbox)",
            )
    return dataclasses.replace(limits, cpus=cpus)


def storage_driver(info: Mapping[str, Any]) -> tuple[str, str]:
    status = dict(
        (str(k), str(v)) for k, v in (info.get("DriverStatus") or []) if isinstance(k, str)
    )
    return str(info.get("Driver") or "unknown"), status.get("Backing Filesystem", "")


def disk_quota_possible(driver: str, backing: str) -> bool:
    return driver in DISK_QUOTA_DRIVERS or (driver == "overlay2" and backing == "xfs")


# -- Docker --------------------------------------------------------------------------------


def box_host_config(limits: BoxLimits) -> dict[str, Any]:
    """docker-py create_host_config arguments for the box container."""
    tmp_opts = "mode=1777,exec,nosuid,nodev"  # exec: compilers and test runners run from /tmp
    host: dict[str, Any] = {
        "init": True,
        "restart_policy": {"Name": "unless-stopped"},
        "security_opt": ["no-new-privileges"],
        "cap_drop": list(CAP_DROP),
        "pids_limit": -1 if limits.pids is None else limits.pids,
        "oom_score_adj": OOM_SCORE_ADJ,
        "log_config": BOX_LOG,
    }
    if limits.tmp_size is not None:
        host["tmpfs"] = {TMP: f"size={limits.tmp_size},{tmp_opts}"}
    if limits.cpus is not None:
        host["nano_cpus"] = round(limits.cpus * 1e9)
    if limits.memory is not None:
        host["mem_limit"] = limits.memory
        host["memswap_limit"] = limits.memory  # no swap: a hog meets the limit, not the disk
    if limits.disk is not None:
        host["storage_opt"] = {"size": str(limits.disk)}
    if limits.runtime is not None:
        host["runtime"] = limits.runtime
    return host


def limits_of(host_config: Mapping[str, Any]) -> BoxLimits:
    """Read a box's limits back from `docker inspect`'s HostConfig (Docker is the truth)."""
    nano = host_config.get("NanoCpus") or 0
    pids = host_config.get("PidsLimit") or 0
    tmp = (host_config.get("Tmpfs") or {}).get(TMP)
    tmp_size = None
    if isinstance(tmp, str):
        for opt in tmp.split(","):
            key, _, value = opt.partition("=")
            if key == "size":
                try:
                    tmp_size = parse_size(value, "size")
                except UsageError:
                    tmp_size = None
    disk = (host_config.get("StorageOpt") or {}).get("size")
    try:
        disk_size = parse_size(disk, "size") if disk else None
    except UsageError:
        disk_size = None
    security = host_config.get("SecurityOpt") or []
    return BoxLimits(
        cpus=nano / 1e9 if nano > 0 else None,
        memory=host_config.get("Memory") or None,
        pids=pids if pids > 0 else None,
        tmp_size=tmp_size,
        disk=disk_size,
        runtime=host_config.get("Runtime") or None,
        no_new_privileges=bool(NO_NEW_PRIVILEGES.intersection(security)),
        cap_drop=tuple(sorted(host_config.get("CapDrop") or ())),
    )
