"""A devbox's egress log: its proxy's audit log (one JSON object per line on the proxy's
stdout, proxy/audit.py), read back as records; the filters of `devbox logs --egress` and the cells
of its text form."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any

from devbox_cli.errors import UsageError
from devbox_cli.services.durations import parse_duration


@dataclass(frozen=True)
class EgressRecord:
    """One line of the audit log: `line` as the proxy wrote it, and `fields`, its JSON
    object (None for a line that is not one)."""

    line: str
    fields: Mapping[str, Any] | None


def egress_records(chunks: Iterable[bytes]) -> Iterator[EgressRecord]:
    for line in lines(chunks):
        try:
            fields = json.loads(line)
        except ValueError:
            fields = None
        yield EgressRecord(line, fields if isinstance(fields, dict) else None)


def lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Bytes chunks -> text lines, across chunk boundaries."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.decode("utf-8", "replace").rstrip("\r")
    if pending:
        yield pending.decode("utf-8", "replace")


@dataclass(frozen=True)
class EgressFilter:
    """Which records `devbox logs --egress` shows: only denials, only since a time, only
    hosts matching a glob (`*.anthropic.com`, `api.*`; against HOST and HOST:PORT)."""

    denied: bool = False
    since: datetime | None = None
    host: str | None = None

    @property
    def active(self) -> bool:
        return self.denied or self.since is not None or self.host is not None

    def admits(self, fields: Mapping[str, Any] | None) -> bool:
        if fields is None:
            return not self.active  # the proxy's other lines, only when nothing is asked
        if self.denied and fields.get("decision") == "allow":
            return False
        if self.since is not None:
            when = record_time(fields)
            if when is None or when < self.since:
                return False
        if self.host is not None:
            host = str(fields.get("host") or "").lower()
            pattern = self.host.lower()
            if not (fnmatchcase(host, pattern) or fnmatchcase(host_port(fields), pattern)):
                return False
        return True


def egress_filter(
    *, denied: bool = False, since: str | None = None, host: str | None = None
) -> EgressFilter:
    """The filter of `--denied`, `--since DURATION|TIME` and `--host PATTERN`."""
    start = None
    if since is not None:
        try:
            start = datetime.now(UTC) - parse_duration(since, "--since")
        except UsageError:
            try:
                start = datetime.fromisoformat(since.replace("Z", "+00:00"))
            except ValueError:
                raise UsageError(
                    f"invalid --since {since!r}",
                    "a duration (90s, 15m, 2h, 1d) or a time (2026-12-02T08:00:00Z)",
                ) from None
            if start.tzinfo is None:
                start = start.replace(tzinfo=UTC)
    if host is not None and (not host or any(c.isspace() or ord(c) < 32 for c in host)):
        raise UsageError(f"invalid --host {host!r}", "a host name or a glob, e.g. '*.example.com'")
    return EgressFilter(denied=denied, since=start, host=host)


def record_time(fields: Mapping[str, Any]) -> datetime | None:
    try:
        when = datetime.fromisoformat(str(fields.get("time")))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def host_port(fields: Mapping[str, Any]) -> str:
    host, port = fields.get("host") or "-", fields.get("port")
    host = f"[{host}]" if ":" in str(host) else str(host)
    return f"{host}:{port}" if port is not None else host


# The columns of the text log, with the width each keeps on a terminal (None: the rest).
COLUMNS = (
    ("TIME", 8),
    ("DECISION", 8),
    ("METHOD", 7),
    ("HOST:PORT", 25),
    ("PATH", None),
    ("STATUS", 6),
    ("RULE", 16),
    ("BYTES", 7),
    ("DURATION", 8),
)
# What a narrow terminal does without, first to last (`docker ps` drops columns too).
DROP = ("BYTES", "DURATION", "METHOD", "RULE")


def egress_row(fields: Mapping[str, Any]) -> list[str]:
    """One record as the text log's cells (COLUMNS), every cell clean of control
    characters (a hostile host or path must not move the terminal's cursor)."""
    when = record_time(fields)
    total = _int(fields.get("bytes_in")) + _int(fields.get("bytes_out"))
    duration = fields.get("duration_ms")
    cells = [
        when.strftime("%H:%M:%S") if when else "-",
        str(fields.get("decision") or "-"),
        str(fields.get("method") or "-"),
        host_port(fields),
        str(fields.get("path") or "-"),
        str(fields.get("status") or "-"),
        str(fields.get("rule") or "-"),
        short_bytes(total),
        short_duration(duration) if isinstance(duration, int | float) else "-",
    ]
    return [_clean(c) for c in cells]


def short_bytes(size: int) -> str:
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("k", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f}{unit}"
    return f"{size}B"


def short_duration(ms: float) -> str:
    if ms >= 60_000:
        return f"{ms / 60_000:.1f}m"
    return f"{ms / 1000:.1f}s" if ms >= 1000 else f"{ms:.0f}ms"


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _clean(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)
