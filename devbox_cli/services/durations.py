"""Durations: the one parser of `--ttl` and `--stopped-for` (90m, 8h, 3d, 1h30m) and the
short form list and show print them in ("in 5h", "3d ago"). Pure."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from devbox_cli.errors import UsageError

UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
MAX_DURATION = timedelta(days=3650)
_PART = re.compile(r"(\d{1,12})([smhdw])")
_WHOLE = re.compile(r"(?:\d{1,12}[smhdw])+")


def parse_duration(value: str | timedelta, flag: str = "--ttl") -> timedelta:
    """`90m`, `8h`, `3d`, `2w` or a sum of them (`1h30m`); a timedelta passes through.
    Refuses a bare number (minutes or seconds?), zero, and more than ten years."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str) and _WHOLE.fullmatch(text := value.strip().lower()):
        seconds = sum(int(n) * UNITS[unit] for n, unit in _PART.findall(text))
    else:
        shown = value if isinstance(value, str) else type(value).__name__
        raise UsageError(
            f"invalid {flag} {shown!r}",
            "use a number and a unit (s, m, h, d or w), e.g. 90m, 8h, 3d or 1h30m",
        )
    if seconds <= 0:
        raise UsageError(f"invalid {flag} {value!r}: it must be longer than zero")
    if seconds > MAX_DURATION.total_seconds():
        raise UsageError(f"invalid {flag} {value!r}: at most {MAX_DURATION.days}d")
    return timedelta(seconds=seconds)


def short(span: timedelta) -> str:
    """At most two units, floored: 45s, 12m, 5h, 1h59m, 3d4h (weeks are shown as days)."""
    seconds = max(0, int(span.total_seconds()))
    for unit, sub in (("d", "h"), ("h", "m"), ("m", "")):
        if seconds >= UNITS[unit]:
            whole, rest = divmod(seconds, UNITS[unit])
            part = rest // UNITS[sub] if sub else 0
            return f"{whole}{unit}{part}{sub}" if part else f"{whole}{unit}"
    return f"{seconds}s"


def relative(when: datetime, now: datetime) -> str:
    """`in 5h` for a time to come, `3d ago` for one past."""
    return f"in {short(when - now)}" if when > now else f"{short(now - when)} ago"
