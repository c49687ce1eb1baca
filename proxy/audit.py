"""The egress log: one JSON line per request or tunnel, on stdout (so `docker logs` shows it).

Fields: time, kind (gateway|forward|connect|intercept), method, host, port, path (never the
query), status, decision, rule, bytes_in, bytes_out, duration_ms, devbox, prefix, credential
(whether the real credential was sent: gateway and intercepted requests; null elsewhere).
Nothing else goes in, so no header, token, credential or query value can reach the log.

Every handler fills one `Record` as it goes and writes it with `recorded` (exactly once,
whatever happens); the line is built in `Record.line` alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from proxy.context import ProxyContext
from proxy.errors import classify

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
    "credential",
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


@dataclass(slots=True)
class Record:
    """What the audit line of one request or tunnel will say; filled in as it goes.

    Byte counts keep the meaning each side has always logged: on a gateway route (and an
    intercepted request) bytes_in is the request body and bytes_out the response body; on
    the forward side bytes_out is what went to the upstream and bytes_in what came back.
    """

    kind: str
    method: str
    started: float  # time.monotonic() when the request arrived
    host: str | None = None
    port: int | None = None
    path: str | None = None
    status: int = 0
    decision: str = "deny"
    rule: str | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    prefix: str | None = None
    credential: bool | None = None

    def line(self, devbox: str | None) -> dict[str, Any]:
        return {
            "time": timestamp(time.time()),
            "kind": self.kind,
            "method": self.method,
            "host": self.host,
            "port": self.port,
            "path": strip_query(self.path) if self.path is not None else None,
            "status": self.status,
            "decision": self.decision,
            "rule": self.rule,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "duration_ms": round((time.monotonic() - self.started) * 1000, 3),
            "devbox": devbox,
            "prefix": self.prefix,
            "credential": self.credential,
        }


@contextlib.contextmanager
def recorded(ctx: ProxyContext, record: Record) -> Iterator[Record]:
    """Write `record` once when the block ends. A status already set (the response went
    out) stands; else a client that left is 499 and an error gets the status it maps to."""
    try:
        yield record
    except asyncio.CancelledError:
        record.status = record.status or 499
        raise
    except Exception as exc:
        record.status = record.status or classify(exc)[0]
        raise
    finally:
        state = ctx.state
        ctx.audit(record.line(state.config.devbox if state is not None else None))
