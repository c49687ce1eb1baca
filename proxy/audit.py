"""The egress log: one JSON line per request or tunnel, on stdout (so `docker logs` shows it).

Fields: time, kind (gateway|forward|connect), method, host, port, path (never the query),
status, decision, rule, bytes_in, bytes_out, duration_ms, devbox, prefix. Nothing else goes
in, so no header, token, credential or query value can reach the log.

The forward side emits its records with `emit(ctx, kind="forward", ...)`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from proxy.context import ProxyContext

FIELDS = (
    "time",
    "kind",
    "method",
    "host",
    "port",
    "path",
    "status",
    "decision",
    "rule",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    "devbox",
    "prefix",
)


class AuditLog:
    """Writes each record as a JSON line; `keep=True` also keeps them (tests read `records`)."""

    def __init__(self, stream: IO[str] | None = None, *, keep: bool = False) -> None:
        self._stream = stream
        self.records: list[dict[str, Any]] | None = [] if keep else None

    def __call__(self, record: dict[str, Any]) -> None:
        if self.records is not None:
            self.records.append(record)
        stream = self._stream if self._stream is not None else sys.stdout
        try:
            stream.write(json.dumps(record, separators=(",", ":")) + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed stdout must not take a request down


_second: tuple[int, str] = (-1, "")


def timestamp(now: float) -> str:
    """ISO 8601 UTC with milliseconds, e.g. 2026-11-26T15:20:29.371+00:00. The part up to
    the second is formatted once per second: this runs for every request."""
    global _second
    whole = int(now)
    if _second[0] != whole:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_second[1]}.{int((now - whole) * 1000):03d}+00:00"


def strip_query(path: str) -> str:
    for sep in ("?", "#"):
        path = path.split(sep, 1)[0]
    return path


def emit(
    ctx: ProxyContext,
    *,
    kind: str,
    method: str,
    host: str | None,
    port: int | None,
    path: str | None,
    status: int,
    started: float,
    decision: str = "allow",
    rule: str | None = None,
    bytes_in: int = 0,
    bytes_out: int = 0,
    prefix: str | None = None,
) -> None:
    """Build and write one record. `started` is a time.monotonic() taken at the start."""
    state = ctx.state
    record = {
        "time": timestamp(time.time()),
        "kind": kind,
        "method": method,
        "host": host,
        "port": port,
        "path": strip_query(path) if path is not None else None,
        "status": status,
        "decision": decision,
        "rule": rule,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "duration_ms": round((time.monotonic() - started) * 1000, 3),
        "devbox": state.config.devbox if state is not None else None,
        "prefix": prefix,
    }
    sink: Callable[[dict[str, Any]], None] = ctx.audit
    sink(record)
