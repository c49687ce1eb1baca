"""Snapshots end to end through the real CLI: the files are kept, the secret value and the
source devbox's gateway tokens are in no part of the image (`docker save`: every layer, the
config, the manifest), a devbox from a snapshot gets fresh tokens and its own labels and its
gateway works, and the bad inputs."""

from __future__ import annotations

import json
import secrets
import subprocess

import pytest

from tests.docker.conftest import DEVBOX, IMAGES, RUN, Cli, docker, residue
from tests.docker.days import (
    bearer,
    found_in_save,
    gateway_auth,
    leftovers,
    snapshot_images,
    store_id,
    with_gateway,
)

pytestmark = pytest.mark.docker

SECRET = "sk-ant-snap-" + secrets.token_hex(16)
MARK = "visible-env-" + secrets.token_hex(8)  # an --env value of the source devbox


@pytest.fixture(scope="module")
def store(module_cli: Cli):
    cli = with_gateway(module_cli, SECRET)
    try:
        yield cli
    finally:
        leftover = snapshot_images(cli)
        if leftover:
            docker("rmi", "-f", *leftover, check=False)
        assert leftover == []


def test_a_snapshot_keeps_the_files_and_nothing_of_the_boxs_config(store: Cli):
    source, copy = f"{RUN}-snap-src", f"{RUN}-snap-copy"
    ref = f"devbox-snapshot/{store_id(store)}:first"
    store("create", source, "--gateway", "P=gw:KEY", "--env", f"MARK={MARK}")
    try:
        token = store.sh(source, "echo $P").stdout.strip()
        assert token.startswith("gwt_")
        assert gateway_auth(store, source) == bearer(SECRET)
        work = (
            "mkdir -p project && echo 'def main(): pass' > project/main.py && echo day1 > ~/notes"
        )
        assert store.sh(source, work).returncode == 0

        snap = store.json("snapshot", "create", source, "first")
        assert (snap["name"], snap["image"], snap["source"]) == ("first", ref, source)
        assert snap["source_image"] == IMAGES.default and snap["created_at"].endswith("Z")
        assert store("exec", source, "--", "true").returncode == 0  # unpaused again

        image = json.loads(docker("image", "inspect", ref).stdout)[0]
        box_image = json.loads(docker("image", "inspect", IMAGES.default).stdout)[0]
        config = image["Config"]
        assert config["Env"] == box_image["Config"]["Env"]  # the image's own, not the box's
        assert (config["Cmd"], config["Entrypoint"]) == (
            box_image["Config"]["Cmd"], box_image["Config"]["Entrypoint"])  # fmt: skip
        assert (config["User"], config["WorkingDir"]) == ("agent", "/workspace")
        assert {k: v for k, v in config["Labels"].items() if k.startswith("devbox.")} == {
            "devbox.role": "snapshot",
            "devbox.version": "0.1.0",
            "devbox.store": store_id(store),
            "devbox.snapshot": "first",
            "devbox.snapshot.source": source,
            "devbox.snapshot.image": IMAGES.default,
            "devbox.snapshot.created": snap["created_at"],
        }
        # the engine's own record of the commit holds nothing of the box either
        assert token not in json.dumps(image) and MARK not in json.dumps(image)
        history = docker("history", "--no-trunc", ref).stdout
        assert token not in history and MARK not in history
        # the hunt finds what is there (the agent's file), and nothing of the box's config
        hits = found_in_save(ref, [SECRET, token, MARK, f"DEVBOX_NAME={source}", "def main()"])
        assert {needle for _, needle in hits} == {"def main()"}
        # the intermediate commit (it carried the box's config) is gone
        assert docker("images", "-aq", "--filter", f"label=devbox.name={source}").stdout == ""

        assert [s["name"] for s in store.json("snapshot", "list")] == ["first"]
        taken = store("snapshot", "create", source, "first", check=False)
        assert taken.returncode == 4 and "snapshot first already exists" in taken.stderr

        created = store.json("create", copy, "--from-snapshot", "first", "--gateway", "P=gw:KEY")
        assert created["image"] == ref
        assert store.sh(copy, "cat project/main.py ~/notes").stdout == "def main(): pass\nday1\n"
        fresh = store.sh(copy, "echo $P").stdout.strip()
        assert fresh.startswith("gwt_") and fresh != token
        assert store.sh(copy, "echo ${MARK:-unset}").stdout == "unset\n"
        assert gateway_auth(store, copy) == bearer(SECRET)
        labels = json.loads(docker("inspect", f"devbox-{copy}").stdout)[0]["Config"]["Labels"]
        assert (labels["devbox.name"], labels["devbox.role"]) == (copy, "box")
        assert labels["devbox.store"] == store_id(store)

        in_use = store("snapshot", "delete", "first", check=False)
        assert in_use.returncode == 4, in_use.stderr
        assert f"snapshot first is in use by devbox(es) {copy}" in in_use.stderr
        assert snapshot_images(store) != []
    finally:
        store("delete", source, copy, check=False)
    assert store.json("snapshot", "delete", "first", "never-made") == [
        {"name": "first", "removed": True},
        {"name": "never-made", "removed": False},
    ]
    assert store.json("snapshot", "list") == [] and snapshot_images(store) == []
    assert docker("image", "inspect", ref, check=False).returncode != 0
    assert leftovers(store, source, copy) == []


def test_a_stopped_devbox_can_be_snapshot_with_a_default_name(store: Cli):
    name = f"{RUN}-snap-stopped"
    store("create", name)
    try:
        assert store.sh(name, "echo kept > kept.txt").returncode == 0
        store("stop", name)
        snap = store.json("snapshot", "create", name)
        assert snap["name"].startswith(f"{name}-") and len(snap["name"]) == len(name) + 16
        assert store.json("show", name)["status"] == "stopped"  # a snapshot starts nothing
        store("create", f"{name}-2", "--from-snapshot", snap["name"])
        assert store.sh(f"{name}-2", "cat kept.txt").stdout == "kept\n"
    finally:
        store("delete", name, f"{name}-2", check=False)
        for s in store.json("snapshot", "list"):
            store("snapshot", "delete", s["name"])
    assert leftovers(store, name, f"{name}-2") == []


def test_two_snapshots_racing_for_one_name_one_wins_and_nothing_is_left(store: Cli):
    name = f"{RUN}-snap-race"
    store("create", name)
    try:
        racers = [
            subprocess.Popen([*DEVBOX, "snapshot", "create", name, "same"], env=store.env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]  # fmt: skip
        outcomes = sorted((p.wait(timeout=120), p.communicate()[1]) for p in racers)
        assert [code for code, _ in outcomes] == [0, 4], outcomes
        assert "snapshot same already exists" in outcomes[1][1]
        assert [s["name"] for s in store.json("snapshot", "list")] == ["same"]
        assert len(snapshot_images(store)) == 1
        # neither racer left its intermediate commit behind
        assert docker("images", "-aq", "--filter", f"label=devbox.name={name}").stdout == ""
    finally:
        store("delete", name, check=False)
        store("snapshot", "delete", "same", check=False)
    assert leftovers(store, name) == []


def test_bad_snapshot_inputs_are_clear(store: Cli, tmp_path_factory):
    name = f"{RUN}-snap-bad"
    neighbour = Cli(tmp_path_factory.mktemp("home-neighbour"), store.infra)
    theirs = f"{RUN}-snap-theirs"
    neighbour("create", theirs)
    try:
        neighbour("snapshot", "create", theirs, "shared-name")
        cases = [
            (["snapshot", "create", f"{RUN}-nope"], 3, f"no devbox {RUN}-nope"),
            (["snapshot", "create", theirs, "x"], 4, "made with another devbox store"),
            (["snapshot", "create", theirs, "bad name"], 2, "invalid snapshot name 'bad name'"),
            (["snapshot", "create", theirs, "a" * 64], 2, "invalid snapshot name"),
            (["create", name, "--from-snapshot", "nope"], 3, "no snapshot nope"),
            # another store's snapshot is not in this store's namespace
            (["create", name, "--from-snapshot", "shared-name"], 3, "no snapshot shared-name"),
            (["create", name, "--from-snapshot", "../x"], 2, "invalid snapshot name"),
            (["create", name, "--from-snapshot", "x", "--image", IMAGES.default], 2, "not both"),
            (["snapshot", "delete", "Bad:tag"], 2, "invalid snapshot name"),
        ]
        for args, code, message in cases:
            proc = store(*args, check=False)
            assert proc.returncode == code, (args, proc.stderr)
            assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert residue(name) == []
        assert store.json("snapshot", "delete", "shared-name") == [
            {"name": "shared-name", "removed": False}
        ]
        assert [s["name"] for s in neighbour.json("snapshot", "list")] == ["shared-name"]
    finally:
        neighbour("delete", theirs, check=False)
        neighbour("snapshot", "delete", "shared-name", check=False)
    assert leftovers(neighbour, theirs) == [] and leftovers(store, name) == []
