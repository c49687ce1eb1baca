"""Lifetimes end to end through the real CLI: `create --ttl` records an expiry that list and
show print; `devbox gc` deletes this store's expired devboxes (and with --stopped-for the
long stopped), with --dry-run and -o json, and nothing else: not a devbox that a planted
container claims is expired, not one with a garbage expiry, not another store's."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.docker.conftest import PROXY_IMAGE, RUN, Cli, docker, residue
from tests.docker.days import leftovers, store_id

pytestmark = pytest.mark.docker


def wait_past(at: str) -> None:
    """Sleep until the clock is past a label time (second resolution). The clock, not the
    engine, decides expiry: this waits for a known instant, not for something to happen."""
    when = datetime.strptime(at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    while datetime.now(UTC) < when + timedelta(seconds=1):
        time.sleep(0.2)


def plant(name: str, container: str, labels: dict[str, str]) -> None:
    """A container another engine user made, with whatever labels they liked (not started)."""
    flags = [f"--label={k}={v}" for k, v in {**labels, "devbox.test": RUN}.items()]
    docker("create", "--name", container, *flags, "--entrypoint", "true", PROXY_IMAGE)


def test_ttl_is_shown_and_gc_deletes_exactly_what_is_due(module_cli: Cli, tmp_path_factory):
    cli = module_cli
    ours = store_id(cli)
    short, long, idle, kept = (f"{RUN}-ttl-{s}" for s in ("short", "long", "idle", "kept"))
    junk, planted = f"{RUN}-ttl-junk", f"{RUN}-ttl-planted"
    neighbour = Cli(tmp_path_factory.mktemp("home-neighbour"), cli.infra)
    theirs = f"{RUN}-ttl-theirs"
    try:
        created = cli.json("create", short, "--ttl", "1s")
        assert created["expires_at"].endswith("Z")
        before = datetime.now(UTC)
        cli("create", long, "--ttl", "3d")
        after = datetime.now(UTC)
        cli("create", idle)
        cli("create", kept)
        neighbour("create", theirs, "--ttl", "1s")
        shown = cli.json("show", long)
        expires = datetime.strptime(shown["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        # from the moment of create, to the second (labels have no fraction)
        assert before + timedelta(days=3, seconds=-1) <= expires <= after + timedelta(days=3)
        assert "(in 2d23h)" in cli("show", long).stdout
        assert cli.json("show", kept)["expires_at"] is None
        # planted: claims to be kept's box, expired; and a box-named one with a garbage expiry
        plant(kept, f"{RUN}-ttl-lookalike", {"devbox.name": kept, "devbox.role": "box",
              "devbox.store": ours, "devbox.expires": "2000-01-01T00:00:00Z"})  # fmt: skip
        plant(junk, f"devbox-{junk}", {"devbox.name": junk, "devbox.role": "box",
              "devbox.store": ours, "devbox.expires": "2000-13-99T99:99:99Z"})  # fmt: skip
        plant(planted, f"devbox-{planted}", {"devbox.name": planted, "devbox.role": "box",
              "devbox.store": ours, "devbox.expires": "x" * 4000})  # fmt: skip

        listed = {b["name"]: b for b in cli.json("list")}
        assert listed[long]["expires_at"] == shown["expires_at"]
        assert listed[junk]["expires_at"] is None and listed[planted]["expires_at"] is None
        assert cli("list").returncode == 0

        cli("stop", idle)
        wait_past(cli.json("show", idle)["stopped_at"])
        wait_past(created["expires_at"])
        dry = cli.json("gc", "--dry-run", "--stopped-for", "1s")
        assert [(d["name"], d["reason"], d["deleted"]) for d in dry] == [
            (idle, "stopped", False),
            (short, "expired", False),
        ]
        assert residue(short) != [] and residue(idle) != []  # a dry run deletes nothing
        text = cli("gc", "--dry-run")
        assert f"would delete devbox {short} (expired at {created['expires_at']})" in text.stderr

        assert cli.json("gc") == [
            {"name": short, "reason": "expired", "expires_at": created["expires_at"],
             "stopped_at": None, "deleted": True}
        ]  # fmt: skip
        assert residue(short) == [] and residue(idle) != []
        assert [d["name"] for d in cli.json("gc", "--stopped-for", "1s")] == [idle]
        assert residue(idle) == []
        assert cli.json("gc", "--stopped-for", "1s") == []
        assert "nothing to delete" in cli("gc").stderr
        # what was not due is all still there
        assert cli("exec", long, "--", "true").returncode == 0
        assert cli("exec", kept, "--", "true").returncode == 0
        assert residue(junk) != [] and residue(planted) != []
        assert [b["name"] for b in neighbour.json("list")] == [theirs]  # not this store's gc

        proc = cli("gc", "--stopped-for", "soon", check=False)
        assert proc.returncode == 2 and "invalid --stopped-for 'soon'" in proc.stderr
        proc = cli("create", f"{RUN}-ttl-bad", "--ttl", "0m", check=False)
        assert proc.returncode == 2 and "longer than zero" in proc.stderr
        assert residue(f"{RUN}-ttl-bad") == []
    finally:
        cli("delete", short, long, idle, kept, junk, planted, check=False)
        docker("rm", "-f", f"{RUN}-ttl-lookalike", check=False)
        neighbour("delete", theirs, check=False)
    assert leftovers(cli, short, long, idle, kept, junk, planted) == []
    assert leftovers(neighbour, theirs) == []
