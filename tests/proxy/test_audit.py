"""The audit line's timestamp: ISO 8601 UTC with milliseconds, formatted cheaply."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from proxy.audit import timestamp


@pytest.mark.parametrize("now", [0.0, 1764170429.3712, 1764170429.9991, 1764170430.0004, 4e9])
def test_timestamp_matches_isoformat(now):
    expected = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
    assert timestamp(now) == expected


def test_timestamp_follows_the_clock_across_seconds():
    assert timestamp(100.5) == "1970-01-01T00:01:40.500+00:00"
    assert timestamp(101.25) == "1970-01-01T00:01:41.250+00:00"
    assert timestamp(100.75) == "1970-01-01T00:01:40.750+00:00"  # going back works too
