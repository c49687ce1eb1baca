"""The push ledger (devbox_cli/home.py): which start of each proxy container holds its config.
Its input comes from the engine, so hostile ids and values must never name a path or break
a read; and a record that cannot be written costs a push later, never an error."""

from __future__ import annotations

import stat

import pytest

from devbox_cli.home import PushLedger

ID = "0123456789abcdef" * 4


def test_a_record_holds_for_that_start_only(tmp_path):
    ledger = PushLedger(tmp_path)
    assert ledger.holds(ID, "2026-01-01T00:00:00.1Z") is None  # nothing pushed from here
    ledger.record(ID, "2026-01-01T00:00:00.1Z")
    assert ledger.holds(ID, "2026-01-01T00:00:00.1Z") is True
    assert ledger.holds(ID, "2026-01-01T00:00:09.9Z") is False  # started again since
    assert ledger.recorded() == [ID]
    ledger.forget([ID, "not-an-id"])
    assert ledger.holds(ID, "2026-01-01T00:00:00.1Z") is None
    assert ledger.recorded() == []


def test_records_are_private(tmp_path):
    PushLedger(tmp_path).record(ID, "T")
    assert stat.S_IMODE((tmp_path / "proxies").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "proxies" / ID).stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "bad_id",
    ["../../outside", "/etc/passwd", ID.upper(), ID[:-1], ID + "0", "", None, 42, ["x"],
     ("0" * 63) + "/"],
)  # fmt: skip
def test_an_id_that_is_not_a_container_id_is_never_a_path(tmp_path, bad_id):
    ledger = PushLedger(tmp_path / "home")
    ledger.record(bad_id, "T")
    assert ledger.holds(bad_id, "T") is None
    assert list(tmp_path.rglob("*")) == []  # nothing written anywhere


@pytest.mark.parametrize("started", ["", None, 7, {"a": 1}])
def test_a_start_that_is_not_a_string_is_not_recorded(tmp_path, started):
    ledger = PushLedger(tmp_path)
    ledger.record(ID, started)
    assert ledger.holds(ID, started) is None
    assert ledger.recorded() == []


def test_a_record_that_cannot_be_written_is_no_error(tmp_path):
    home = tmp_path / "home"
    home.write_text("a file, not a directory")
    ledger = PushLedger(home)
    ledger.record(ID, "T")  # no exception
    assert ledger.holds(ID, "T") is None
    assert ledger.recorded() == []


def test_a_long_or_binary_record_never_matches(tmp_path):
    ledger = PushLedger(tmp_path)
    (tmp_path / "proxies").mkdir()
    (tmp_path / "proxies" / ID).write_bytes(b"\xff\xfe" + b"T" * 500)
    assert ledger.holds(ID, "T") is None  # unreadable: as if nothing was recorded
    ledger.record(ID, "T" * 500)  # capped, so a huge value is not written whole
    assert (tmp_path / "proxies" / ID).stat().st_size == 100
