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
