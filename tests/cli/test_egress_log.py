"""The egress log as records (services/egress.py): the CLI's `logs --egress` consumes these."""

from __future__ import annotations

import json

from devbox_cli.services.egress import EgressRecord, egress_records


def test_records_across_chunk_boundaries_keep_each_line_as_written():
    one = json.dumps({"kind": "forward", "host": "a.com", "decision": "allow"})
    two = '{"kind":"connect","host":"b.com","decision":"deny"}'
    stream = [one[:7].encode(), (one[7:] + "\n" + two[:3]).encode(), (two[3:] + "\r\n").encode()]
    records = list(egress_records(stream))
    assert [r.line for r in records] == [one, two]
    assert [r.fields["host"] for r in records if r.fields] == ["a.com", "b.com"]


def test_a_line_that_is_not_a_json_object_has_no_fields():
    stream = [b"proxy starting\n", b"[1, 2]\n", b'"text"\n', b"{broken\n", b'{"ok": 1}']
    assert list(egress_records(stream)) == [
        EgressRecord("proxy starting", None),
        EgressRecord("[1, 2]", None),
        EgressRecord('"text"', None),
        EgressRecord("{broken", None),
        EgressRecord('{"ok": 1}', {"ok": 1}),
    ]


def test_undecodable_bytes_are_replaced_not_raised():
    [record] = egress_records([b'{"path": "/\xff"}\n'])
    assert record.fields == {"path": "/\ufffd"}


# -- the text log's cells and its filters (services/egress.py) ------------------------------

from datetime import UTC, datetime, timedelta  # noqa: E402

import pytest  # noqa: E402

from devbox_cli import render  # noqa: E402
from devbox_cli.errors import UsageError  # noqa: E402
from devbox_cli.services.egress import (  # noqa: E402
    COLUMNS,
    DROP,
    EgressFilter,
    egress_filter,
    egress_row,
)


def record(**over):
    base = {
        "time": "2026-12-02T08:01:02.345+00:00", "kind": "forward", "method": "GET",
        "host": "api.anthropic.com", "port": 443, "path": "/v1/messages", "status": 200,
        "decision": "allow", "rule": "*.anthropic.com", "bytes_in": 1000, "bytes_out": 536,
        "duration_ms": 12.4,
    }  # fmt: skip
    return {**base, **over}


def test_a_row_has_every_column_in_order():
    assert [c for c, _ in COLUMNS] == [
        "TIME", "DECISION", "METHOD", "HOST:PORT", "PATH", "STATUS", "RULE", "BYTES", "DURATION",
    ]  # fmt: skip
    assert egress_row(record()) == [
        "08:01:02", "allow", "GET", "api.anthropic.com:443", "/v1/messages", "200",
        "*.anthropic.com", "1.5k", "12ms",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("over", "column", "shown"),
    [
        ({"host": "::1", "port": 80}, 3, "[::1]:80"),
        ({"bytes_in": 3 << 20, "bytes_out": 0}, 7, "3.0M"),
        ({"bytes_in": 7, "bytes_out": 0}, 7, "7B"),
        ({"duration_ms": 2500.0}, 8, "2.5s"),
        ({"duration_ms": None}, 8, "-"),
        ({"rule": None, "path": None}, 6, "-"),
        ({"path": "/a\x1b[2Jb\r\n"}, 4, "/a?[2Jb??"),  # no escape reaches the terminal
        ({"time": "garbage"}, 0, "-"),
        ({"status": 0}, 5, "-"),
    ],
)
def test_cells_are_short_and_clean(over, column, shown):
    assert egress_row(record(**over))[column] == shown


def test_denied_keeps_only_what_was_refused():
    wanted = egress_filter(denied=True)
    assert not wanted.admits(record())
    assert wanted.admits(record(decision="deny", status=403))
    assert wanted.admits(record(decision="error", status=502))


@pytest.mark.parametrize(
    ("pattern", "admitted"),
    [
        ("*.anthropic.com", True),
        ("API.ANTHROPIC.COM", True),
        ("api.*", True),
        ("*:443", True),
        ("*:80", False),
        ("anthropic.com", False),
        ("evil.*", False),
    ],
)
def test_host_patterns_match_the_host_or_host_port(pattern, admitted):
    assert egress_filter(host=pattern).admits(record()) is admitted


def test_since_a_duration_or_a_time():
    now = datetime.now(UTC)
    recent = record(time=(now - timedelta(minutes=5)).isoformat())
    old = record(time=(now - timedelta(hours=3)).isoformat())
    wanted = egress_filter(since="1h")
    assert wanted.admits(recent) and not wanted.admits(old)
    at = egress_filter(since=(now - timedelta(hours=4)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert at.admits(recent) and at.admits(old)
    assert not egress_filter(since="1h").admits(record(time="garbage"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"since": "yesterday"}, "invalid --since 'yesterday'"),
        ({"since": "10"}, "invalid --since '10'"),
        ({"host": ""}, "invalid --host ''"),
        ({"host": "a\nb"}, "invalid --host"),
    ],
)
def test_bad_filters_are_usage_errors(kwargs, message):
    with pytest.raises(UsageError, match=message.replace("'", ".")):
        egress_filter(**kwargs)


def test_the_proxys_other_lines_show_only_without_filters():
    assert EgressFilter().admits(None)
    assert not egress_filter(denied=True).admits(None)


def test_the_column_printer_aligns_and_fits_80_columns(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    emit = render.column_printer(COLUMNS, drop=DROP)
    emit(egress_row(record()), False)
    long = record(host="a-very-long-host-name.example-of-a-company.com", path="/x" * 60)
    emit(egress_row(long), True)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(len(line) <= 80 for line in lines), lines
    assert lines[0].split() == ["TIME", "DECISION", "HOST:PORT", "PATH", "STATUS", "RULE"]
    starts = [line.index(" 200 ") + 1 for line in lines[1:]]  # STATUS lines up
    assert starts[0] == starts[1] == lines[0].index("STATUS")
    assert "…" in lines[2] and "*.anthropic.com" in lines[2]


def test_a_wide_terminal_keeps_every_column(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "160")
    render.column_printer(COLUMNS, drop=DROP)(egress_row(record()), False)
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == [c for c, _ in COLUMNS]
    assert row.split()[-2:] == ["1.5k", "12ms"]


def test_the_column_printer_keeps_cells_whole_off_a_terminal(monkeypatch, capsys):
    monkeypatch.delenv("COLUMNS", raising=False)
    emit = render.column_printer(COLUMNS, drop=DROP)
    emit(egress_row(record(path="/x" * 60)), False)
    assert "/x" * 60 in capsys.readouterr().out
