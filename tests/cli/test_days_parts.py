"""The pure parts of stop/start, snapshots and lifetimes: the duration parser, the labels a
time is read back from (hostile values included: any engine user can label a container),
a snapshot's clean image config and its load archive, the partial-failure error."""

from __future__ import annotations

import io
import json
import tarfile
from datetime import UTC, datetime, timedelta

import pytest

from devbox_cli.engine.snapshot_image import (
    image_id,
    image_json,
    load_archive,
    snapshot_config,
)
from devbox_cli.engine.views import (
    LABEL_EXPIRES,
    LifecycleResult,
    devbox_status,
    expiry_of,
    expiry_text,
    finished_at,
    parse_utc,
    stopped_text,
    utc_label,
)
from devbox_cli.errors import DevboxRuntimeError, NotFoundError, UsageError
from devbox_cli.names import snapshot_image
from devbox_cli.services.durations import parse_duration, relative, short
from devbox_cli.services.lifecycle import raise_for_failures
from devbox_cli.services.snapshots import default_name

# -- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90m", 5400), ("8h", 8 * 3600), ("3d", 3 * 86400), ("2w", 14 * 86400),
        ("45s", 45), ("1h30m", 5400), (" 8H ", 8 * 3600), ("1d12h", 36 * 3600),
        ("3650d", 3650 * 86400), (timedelta(minutes=5), 300),
    ],
)  # fmt: skip
def test_durations_parse(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("90", "use a number and a unit"),  # minutes? seconds? refused
        ("", "use a number and a unit"),
        ("8x", "use a number and a unit"),
        ("h", "use a number and a unit"),
        ("-5m", "use a number and a unit"),
        ("1.5h", "use a number and a unit"),
        ("8 h", "use a number and a unit"),
        ("1h 30m", "use a number and a unit"),
        ("8h\n", None),  # surrounding space is dropped: this one is fine
        ("0m", "longer than zero"),
        ("0d0h", "longer than zero"),
        ("3651d", "at most 3650d"),
        ("9" * 12 + "w", "at most 3650d"),
        ("9" * 13 + "w", "use a number and a unit"),  # no unbounded integer parsing
        (timedelta(0), "longer than zero"),
        (timedelta(days=-1), "longer than zero"),
        (8, "use a number and a unit"),
        (None, "use a number and a unit"),
    ],
)
def test_bad_durations_are_clear_usage_errors(text, why):
    if why is None:
        assert parse_duration(text) == timedelta(hours=8)
        return
    with pytest.raises(UsageError) as info:
        parse_duration(text, "--stopped-for")
    assert info.value.exit_code == 2
    assert info.value.message.startswith("invalid --stopped-for ")
    assert why in str(info.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (45, "45s"), (60, "1m"), (61, "1m"), (3599, "59m"), (3600, "1h"),
     (7140 + 3600, "2h59m"), (86400, "1d"), (86400 * 3 + 3600 * 4 + 60, "3d4h"), (-5, "0s")],
)  # fmt: skip
def test_short_is_at_most_two_units(seconds, text):
    assert short(timedelta(seconds=seconds)) == text


def test_relative_says_which_side_of_now():
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert relative(now + timedelta(hours=5), now) == "in 5h"
    assert relative(now - timedelta(days=3), now) == "3d ago"
    assert relative(now, now) == "0s ago"


# -- times in labels and container state ----------------------------------------------------

WHEN = datetime(2025, 1, 31, 18, 0, tzinfo=UTC)


def test_a_label_time_round_trips_in_utc():
    assert utc_label(WHEN) == "2025-01-31T18:00:00Z"
    east = WHEN.astimezone(__import__("datetime").timezone(timedelta(hours=5)))
    assert utc_label(east) == "2025-01-31T18:00:00Z"
    assert parse_utc("2025-01-31T18:00:00Z") == WHEN
    assert expiry_of({LABEL_EXPIRES: "2025-01-31T18:00:00Z"}) == WHEN
    assert expiry_text({LABEL_EXPIRES: "2025-01-31T18:00:00Z"}) == "2025-01-31T18:00:00Z"


HOSTILE_TIMES = [
    "", "garbage", "2025-01-31", "2025-01-31T18:00:00", "2025-01-31T18:00:00+00:00",
    "2025-01-31 18:00:00Z", "2025-13-31T18:00:00Z", "2025-02-30T18:00:00Z",
    "9999-99-99T99:99:99Z", "0000-00-00T00:00:00Z", "-001-01-01T00:00:00Z",
    "2025-01-31T18:00:00.5Z", "x" * 100_000, "2025-01-31t18:00:00z",
    "\uff12\uff10\uff12\uff15-01-31T18:00:00Z",  # fullwidth digits: strptime takes them
    "\x002025-01-31T18:00:0Z", "1e10", "null", "[]", "{}",
]  # fmt: skip


@pytest.mark.parametrize("value", [*HOSTILE_TIMES, None, 12, 1.5, ["2025"], {"a": 1}])
def test_a_hostile_time_label_is_no_time_never_an_error(value):
    assert parse_utc(value) is None
    labels = {LABEL_EXPIRES: value} if value is not None else {}
    assert expiry_of(labels) is None  # type: ignore[arg-type]
    assert expiry_text(labels) is None  # type: ignore[arg-type]


def stopped_box(finished: object, status: str = "exited") -> dict:
    return {"State": {"Status": status, "FinishedAt": finished}}


def test_a_stopped_box_says_since_when_from_its_finished_at():
    box = stopped_box("2025-01-31T18:00:00.123456789Z")
    assert finished_at(box) == WHEN
    assert stopped_text(box) == "2025-01-31T18:00:00Z"
    assert devbox_status(box) == "stopped"
    assert devbox_status({"State": "exited"}) == "stopped"  # as the list endpoint says it


@pytest.mark.parametrize(
    "box",
    [
        stopped_box("0001-01-01T00:00:00Z"),  # never ran
        stopped_box("2025-01-31T18:00:00.1Z", status="running"),
        stopped_box(None), stopped_box(17), stopped_box("garbage"),
        stopped_box("2025-01-31T18:00:00+02:00"), {"State": "exited"}, {"State": None}, {}, None,
    ],
)  # fmt: skip
def test_no_stop_time_where_there_is_none(box):
    assert finished_at(box) is None and stopped_text(box) is None


@pytest.mark.parametrize(
    ("box", "status"),
    [(None, "missing"), ({"State": {"Status": "running"}}, "running"),
     ({"State": "paused"}, "paused"), ({"State": {"Status": "created"}}, "created")],
)  # fmt: skip
def test_other_states_are_dockers(box, status):
    assert devbox_status(box) == status


# -- snapshot images ------------------------------------------------------------------------

BOX_IMAGE_CONFIG = {
    "Hostname": "",
    "User": "agent",
    "AttachStdin": False,
    "Env": ["LANG=C.UTF-8", "PATH=/usr/bin:/bin"],
    "Cmd": ["sleep", "infinity"],
    "Image": "sha256:abc",
    "WorkingDir": "/workspace",
    "Entrypoint": None,
    "Labels": {
        "org.opencontainers.image.title": "default",
        "devbox.name": "planted",
        "devbox.expires": "2000-01-01T00:00:00Z",
    },
}
SNAP_LABELS = {"devbox.role": "snapshot", "devbox.snapshot": "s1"}


def test_a_snapshot_config_is_the_images_own_with_only_the_snapshots_devbox_labels():
    config = snapshot_config(BOX_IMAGE_CONFIG, SNAP_LABELS)
    assert config == {
        "User": "agent",
        "Env": ["LANG=C.UTF-8", "PATH=/usr/bin:/bin"],
        "Cmd": ["sleep", "infinity"],
        "WorkingDir": "/workspace",
        "Labels": {"org.opencontainers.image.title": "default", **SNAP_LABELS},
    }
    assert snapshot_config(None, SNAP_LABELS) == {"Labels": SNAP_LABELS}
    hostile = {"Labels": {1: "x", "devbox.store": "theirs"}, "Env": "not-a-list"}
    assert snapshot_config(hostile, {})["Labels"] == {}


COMMITTED = {
    "Architecture": "arm64",
    "Os": "linux",
    "Variant": "v8",
    "RootFS": {"Type": "layers", "Layers": ["sha256:" + "a" * 64, "sha256:" + "b" * 64]},
    "Config": {"Env": ["P=gwt_token_of_the_box"], "Labels": {"devbox.name": "src"}},
}


def test_the_image_document_takes_only_platform_and_layers_from_the_commit():
    config = snapshot_config(BOX_IMAGE_CONFIG, SNAP_LABELS)
    doc = image_json(COMMITTED, config, created="2025-01-31T18:00:00Z", note="devbox snapshot")
    parsed = json.loads(doc)
    assert parsed["rootfs"] == {"type": "layers", "diff_ids": COMMITTED["RootFS"]["Layers"]}
    assert (parsed["architecture"], parsed["os"], parsed["variant"]) == ("arm64", "linux", "v8")
    assert parsed["config"] == config
    assert [h["created_by"] for h in parsed["history"]][-1] == "devbox snapshot"
    assert len(parsed["history"]) == 2  # one per layer: `docker history` lines up
    assert b"gwt_token_of_the_box" not in doc and b"src" not in doc
    assert "container_config" not in parsed and "container" not in parsed
    with pytest.raises(ValueError, match="no layers"):
        image_json({"RootFS": {"Layers": []}}, config, created="x", note="n")


def test_the_load_archive_holds_a_manifest_and_the_config_and_no_layer():
    doc = image_json(COMMITTED, {"Labels": {}}, created="2025-01-31T18:00:00Z", note="n")
    tag = snapshot_image("0123456789abcdef", "s1")
    archive = load_archive(doc, COMMITTED["RootFS"]["Layers"], tag)
    assert len(archive) < 16 * 1024
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        names = tar.getnames()
        config_name = image_id(doc).removeprefix("sha256:") + ".json"
        assert names == [config_name, "manifest.json"]
        assert tar.extractfile(config_name).read() == doc  # type: ignore[union-attr]
        [manifest] = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert manifest == {
        "Config": config_name,
        "RepoTags": ["devbox-snapshot/0123456789abcdef:s1"],
        "Layers": ["a" * 64 + "/layer.tar", "b" * 64 + "/layer.tar"],
    }


def test_default_snapshot_names_fit_the_name_rule():
    now = datetime(2025, 1, 31, 18, 0, 5, tzinfo=UTC)
    assert default_name("agent", now) == "agent-20250131-180005"
    long = default_name("a" * 63, now)
    assert len(long) == 63 and long.endswith("-20250131-180005")


# -- stop/start results ---------------------------------------------------------------------


def test_a_partial_failure_names_each_and_what_to_retry_with_the_first_ones_code():
    results = [
        LifecycleResult("a", "stopped", changed=True),
        LifecycleResult("b", "missing", error=NotFoundError("no devbox b")),
        LifecycleResult("c", "running", error=DevboxRuntimeError("engine said no")),
    ]
    with pytest.raises(Exception) as info:
        raise_for_failures(results, "stop")
    err = info.value
    assert err.message == "could not stop devbox(es) b (no devbox b), c (engine said no)"  # type: ignore[attr-defined]
    assert err.hint == "retry with `devbox stop b c`"  # type: ignore[attr-defined]
    assert err.exit_code == 3  # type: ignore[attr-defined]
    raise_for_failures(results[:1], "stop")  # nothing failed: nothing raised
    assert [r.to_json() for r in results[:2]] == [
        {"name": "a", "ok": True, "status": "stopped", "changed": True, "error": None},
        {"name": "b", "ok": False, "status": "missing", "changed": False, "error": "no devbox b"},
    ]
