"""`devbox gc` and `list` against labels anyone could have written, without Docker.

Any user of the engine can create a container carrying devbox labels, this store's
identity (it is on every devbox's labels) and any expiry. `Engine` stands in for
DockerBackend with what list, gc and delete use, filtering by label as Docker does; the
Client, its store and its services are the real ones. What must hold: nothing crashes,
and gc deletes exactly the devboxes that are due, judged by their real box (the container
named devbox-NAME), never by a container that only claims to be one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devbox_cli import Client
from devbox_cli.engine.views import LABEL_EXPIRES, LABEL_NAME, LABEL_ROLE, LABEL_STORE
from devbox_cli.errors import DevboxError, UsageError

NOW = datetime.now(UTC)
PAST = "2000-01-01T00:00:00Z"
FUTURE = "2999-01-01T00:00:00Z"


def docker_time(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.123456789Z")


class Engine:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.removed: list[str] = []
        self.stopped: list[tuple[str, int]] = []

    def add(
        self,
        ident: str,
        name: str,
        labels: dict[str, Any],
        *,
        state: str = "running",
        finished: str = "0001-01-01T00:00:00Z",
    ) -> None:
        self.items.append(
            {"Id": ident, "Names": [f"/{name}"], "Labels": labels, "State": state,
             "FinishedAt": finished, "Created": 1_700_000_000, "Image": "img"}
        )  # fmt: skip

    def containers(self, *filters: str) -> list[dict[str, Any]]:
        def matches(have: dict[str, Any], wanted: str) -> bool:
            key, eq, value = wanted.partition("=")
            return key in have and (not eq or have[key] == value)

        return [
            {k: v for k, v in c.items() if k != "FinishedAt"}
            for c in self.items
            if c["Id"] not in self.removed and all(matches(c["Labels"], f) for f in filters)
        ]

    def container(self, ref: str) -> dict[str, Any] | None:
        for c in self.items:
            if c["Id"] not in self.removed and ref in (c["Id"], c["Names"][0][1:]):
                return {
                    "Id": c["Id"],
                    "Name": c["Names"][0],
                    "Created": "2025-01-01T00:00:00.1Z",
                    "Config": {"Labels": c["Labels"], "Image": "img", "Env": []},
                    "State": {"Status": c["State"], "FinishedAt": c["FinishedAt"]},
                }
        return None

    def networks(self, *filters: str) -> list[dict[str, Any]]:
        return []

    def network(self, name: str) -> None:
        return None

    def remove_container(self, ident: str) -> bool:
        self.removed.append(ident)
        return True

    def stop(self, ident: str, *, timeout: int) -> None:
        self.stopped.append((ident, timeout))
        next(c for c in self.items if c["Id"] == ident)["State"] = "exited"


@pytest.fixture
def setup():
    client = Client()
    engine = Engine()
    client._engine = engine  # type: ignore[assignment]
    ours = client.store.identity()

    def box(name: str, *, ident: str | None = None, container: str | None = None, **extra: Any):
        state = extra.pop("state", "running")
        finished = extra.pop("finished", "0001-01-01T00:00:00Z")
        labels = {LABEL_NAME: name, LABEL_ROLE: "box", LABEL_STORE: ours, **extra}
        engine.add(ident or name, container or f"devbox-{name}", labels, state=state,
                   finished=finished)  # fmt: skip

    return client, engine, box


HOSTILE = ["", "garbage", "2000-01-01", "2000-01-01T00:00:00+00:00", "0000-00-00T00:00:00Z",
           "x" * 10_000, "2000-01-01t00:00:00z", "-1", "null"]  # fmt: skip


def test_garbage_expiry_labels_crash_nothing_and_expire_nothing(setup):
    client, engine, box = setup
    box("old", **{LABEL_EXPIRES: PAST})
    box("future", **{LABEL_EXPIRES: FUTURE})
    for i, value in enumerate(HOSTILE):
        box(f"junk{i}", **{LABEL_EXPIRES: value})
    listed = {b.name: b for b in client.list_devboxes()}
    assert listed["old"].expires_at == PAST and listed["future"].expires_at == FUTURE
    assert all(listed[f"junk{i}"].expires_at is None for i in range(len(HOSTILE)))
    assert client.get_devbox("junk1", health=False).expires_at is None

    assert [(d.name, d.reason, d.deleted) for d in client.gc(dry_run=True)] == [
        ("old", "expired", False)
    ]
    assert engine.removed == []  # a dry run deletes nothing
    [due] = client.gc()
    assert (due.name, due.deleted, due.expires_at) == ("old", True, PAST)
    assert engine.removed == ["old"]


def test_a_container_that_only_claims_to_be_an_expired_box_deletes_nothing(setup):
    client, engine, box = setup
    box("victim")  # a real devbox, no expiry
    # another engine user's container: labelled as victim's box, expired, this store's
    box("victim", ident="evil", container="evil-lookalike", **{LABEL_EXPIRES: PAST})
    # labels no devbox name could have: skipped, never passed on to delete
    for i, name in enumerate(["../x", "", "a" * 64, "-x", "x y"]):
        box(name, ident=f"odd{i}", container=f"devbox-{name}", **{LABEL_EXPIRES: PAST})
    assert client.gc(stopped_for="1s") == []
    assert engine.removed == []
    assert "victim" in {b.name for b in client.list_devboxes()}


def test_another_stores_expired_devbox_is_not_this_gcs(setup):
    client, engine, box = setup
    box("theirs", **{LABEL_EXPIRES: PAST, LABEL_STORE: "0000000000000000"})
    assert client.gc() == []
    assert engine.removed == []


def test_stopped_for_counts_from_the_real_boxs_finished_at(setup):
    client, engine, box = setup
    long_ago, lately = docker_time(NOW - timedelta(days=10)), docker_time(NOW - timedelta(hours=1))
    box("idle", state="exited", finished=long_ago)
    box("lately", state="exited", finished=lately)
    box("busy", state="running", finished=long_ago)  # stopped once, running again
    box("never", state="exited")  # FinishedAt 0001-01-01
    box("weird", state="exited", finished="garbage")
    assert client.gc(dry_run=True) == []  # without --stopped-for, stopped is not due
    due = client.gc(stopped_for="7d", dry_run=True)
    assert [(d.name, d.reason) for d in due] == [("idle", "stopped")]
    assert due[0].stopped_at == long_ago[:19] + "Z"
    assert [d.name for d in client.gc(stopped_for="30m")] == ["idle", "lately"]
    assert sorted(engine.removed) == ["idle", "lately"]
    listed = {b.name: b for b in client.list_devboxes()}
    assert listed["busy"].status == "running" and listed["busy"].stopped_at is None
    assert listed["never"].status == "stopped" and listed["never"].stopped_at is None


def test_a_bad_stopped_for_is_a_usage_error_before_docker_is_asked(setup):
    client, engine, box = setup
    box("old", **{LABEL_EXPIRES: PAST})
    with pytest.raises(UsageError, match="invalid --stopped-for '3'"):
        client.gc(stopped_for="3")
    assert engine.removed == []


def test_the_python_api_stops_what_it_can_then_raises_naming_the_rest(setup):
    client, engine, box = setup
    box("a")
    box("theirs", **{LABEL_STORE: "0000000000000000"})
    with pytest.raises(DevboxError) as info:
        client.stop_devboxes(["a", "gone", "theirs", "a"])
    err = info.value
    assert err.exit_code == 3  # the first failure's: no devbox gone
    assert err.message == (
        "could not stop devbox(es) gone (no devbox gone), theirs (devbox theirs was made "
        f"with another devbox store, not {client.store.home})"
    )
    assert err.hint == "retry with `devbox stop gone theirs`"
    assert engine.stopped == [("a", 0)]  # once, at once (its PID 1 ignores SIGTERM)
    results = client.stop_devboxes(["a", "gone"], check=False)
    assert [(r.name, r.ok, r.status, r.changed) for r in results] == [
        ("a", True, "stopped", False),
        ("gone", False, "missing", False),
    ]
    with pytest.raises(UsageError, match="name the devboxes to start"):
        client.start_devboxes([])
