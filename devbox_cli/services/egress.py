"""A devbox's egress log: its proxy's audit log (one JSON object per line on the proxy's
stdout, proxy/audit.py), read back as records."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any


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
