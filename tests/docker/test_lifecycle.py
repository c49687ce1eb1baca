"""Create failures leave nothing behind; list/show/logs/delete read Docker; labels."""

from __future__ import annotations

import json
import select
import subprocess

import pytest

from tests.docker.conftest import DEVBOX, IMAGES, PROXY_IMAGE, RUN, Cli, docker, residue

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def store(module_cli: Cli):
    cli = module_cli
    cli("gateway", "create", "gw", "--endpoint", "https://api.anthropic.com",
        "--ca-cert", str(cli.infra.ca_pem))  # fmt: skip
    cli("secret", "create", "KEY", input="sk-test-lifecycle")
    cli("policy", "create", "pol", "--allow", "api.anthropic.com")
    return cli


def _engine_objects() -> set[str]:
    """This run's containers, networks and volumes (the egress network a devbox uses is the
    run's own, DEVBOX_EGRESS_NETWORK=<RUN>-egress). Shared ones such as devbox-egress are
    left out: a parallel run may make or remove them at any moment."""
    names = docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
    names += docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    names += docker("volume", "ls", "--format", "{{.Name}}").stdout.split()
    return {n for n in names if RUN in n}


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["--gateway", "P=gw:MISSING"], 3, "no secret MISSING"),
        (["--gateway", "P=nogw:KEY"], 3, "nogw"),
        (["--network-policy", "nopol"], 3, "nopol"),
        (["--image", "devbox/no-such-image:0"], 3, "no image devbox/no-such-image:0"),
        (["--gateway", "1BAD=gw:KEY"], 2, "prefix"),
        (["--gateway", "nonsense"], 2, "PREFIX=GATEWAY:SECRET"),
        (["--gateway", "P=gw:KEY", "--env", "P_URL=x"], 2, "P_URL"),
        (["--env", "HTTPS_PROXY=http://evil:1"], 2, "HTTPS_PROXY"),
        (["--memory", "lots"], 2, "invalid --memory 'lots'"),
        (["--cpus", "999"], 2, "more than the engine's"),
        (["--pids-limit", "1"], 2, "invalid --pids-limit"),
        (["--runtime", "no-such-runtime"], 3, "no Docker runtime 'no-such-runtime'"),
        (["--disk", "nonsense"], 2, "invalid --disk"),
    ],
)
def test_create_failures_are_clear_and_leave_nothing(store: Cli, args, code, message):
    name = f"{RUN}-fail"
    before = _engine_objects()
    proc = store("create", name, *args, check=False)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert residue(name) == []
    assert _engine_objects() == before


def test_docker_not_running_is_a_clear_error_everywhere(store: Cli):
    env = {"DOCKER_HOST": "unix:///nonexistent.sock"}
    for args in (["create", f"{RUN}-nodocker"], ["list"], ["show", "x"], ["delete", "x"]):
        proc = store(*args, check=False, env=env)
        assert proc.returncode == 6, (args, proc.stderr)
        assert "cannot reach the Docker engine" in proc.stderr and "hint" in proc.stderr
    assert residue(f"{RUN}-nodocker") == []


def test_a_taken_name_is_refused_and_the_first_devbox_survives(store: Cli):
    name = f"{RUN}-taken"
    first = store.json("create", name)
    try:
        proc = store("create", name, check=False)
        assert proc.returncode == 4 and "already exists" in proc.stderr
        assert store.json("show", name)["id"] == first["id"]
        assert store("exec", name, "--", "true").returncode == 0
    finally:
        store("delete", name)
    assert residue(name) == []


def test_labels_list_show_logs_and_delete(store: Cli):
    name = f"{RUN}-life"
    created = store.json("create", name, "--gateway", "MY_KEY=gw:KEY", "--network-policy", "pol",
                         "--env", "GREETING=hi", "--cpus", "1", "--memory", "256m")  # fmt: skip
    try:
        box = json.loads(docker("inspect", f"devbox-{name}").stdout)[0]
        labels = box["Config"]["Labels"]
        assert labels["devbox.name"] == name and labels["devbox.role"] == "box"
        assert labels["devbox.version"] == "0.1.0" and labels["devbox.policy"] == "pol"
        assert json.loads(labels["devbox.gateways"]) == {
            "MY_KEY": {"gateway": "gw", "secret": "KEY"}
        }
        assert box["HostConfig"]["NanoCpus"] == 10**9
        assert box["HostConfig"]["Memory"] == 256 * 2**20
        assert list(box["NetworkSettings"]["Networks"]) == [f"devbox-{name}-net"]
        proxy = json.loads(docker("inspect", f"devbox-{name}-proxy").stdout)[0]
        assert proxy["Config"]["Labels"]["devbox.role"] == "proxy"
        assert set(proxy["NetworkSettings"]["Networks"]) == {
            f"devbox-{name}-net",
            store.infra.egress,
        }
        assert proxy["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
        assert proxy["HostConfig"]["ReadonlyRootfs"] is True
        found = docker("ps", "-q", "--filter", f"label=devbox.name={name}").stdout.split()
        assert len(found) == 2

        listed = {b["name"]: b for b in store.json("list")}
        assert listed[name]["id"] == created["id"] and listed[name]["proxy"]["status"] == "running"
        assert listed[name]["gateways"][0]["prefix"] == "MY_KEY"
        shown = store.json("show", name)
        assert shown["gateways"] == created["gateways"] and shown["proxy"]["health"] == "ok"
        assert store("exec", name, "--", "sh", "-c", "echo $GREETING").stdout == "hi\n"

        store("exec", name, "--", "sh", "-c", "echo to-the-log > /proc/1/fd/1")
        assert "to-the-log" in store("logs", name).stdout
    finally:
        deleted = store.json("delete", name)
    assert deleted == [{"name": name, "removed": True}]
    assert residue(name) == []
    again = store("delete", name)  # idempotent: reported, not an error
    assert again.returncode == 0 and "nothing to delete" in again.stderr
    assert store("show", name, check=False).returncode == 3


def test_a_generated_name(store: Cli):
    created = store.json("create")
    try:
        assert created["name"].startswith("box-")
        assert store("exec", created["name"], "--", "true").returncode == 0
    finally:
        store("delete", created["name"])
    assert residue(created["name"]) == []


@pytest.fixture
def image_tags():
    """Other names for the devbox and proxy images, removed again (the images stay)."""
    tags = {
        "box": f"devbox-test/{RUN}-box:1",
        "proxy": f"devbox-test/{RUN}-proxy:1",
    }
    docker("tag", IMAGES.default, tags["box"])
    docker("tag", PROXY_IMAGE, tags["proxy"])
    try:
        yield tags
    finally:
        docker("rmi", *tags.values(), check=False)


def test_devbox_image_and_devbox_proxy_image_choose_the_images(store: Cli, image_tags):
    name = f"{RUN}-images"
    env = {"DEVBOX_IMAGE": image_tags["box"], "DEVBOX_PROXY_IMAGE": image_tags["proxy"]}
    try:
        created = store.json("create", name, env=env)
        assert created["image"] == image_tags["box"]
        assert (
            docker("inspect", "-f", "{{.Config.Image}}", f"devbox-{name}").stdout.strip()
            == (image_tags["box"])
        )
        proxy_image = docker("inspect", "-f", "{{.Config.Image}}", f"devbox-{name}-proxy").stdout
        assert proxy_image.strip() == image_tags["proxy"]
        assert store.json("show", name)["proxy"]["health"] == "ok"
    finally:
        store("delete", name, check=False)
    # --image beats DEVBOX_IMAGE; a missing image in either variable is named
    missing = {"DEVBOX_IMAGE": f"devbox-test/{RUN}-nothing:0"}
    proc = store("create", name, "--image", "devbox/no-such:0", env=missing, check=False)
    assert proc.returncode == 3 and "no image devbox/no-such:0" in proc.stderr
    proc = store("create", name, env=missing, check=False)
    assert proc.returncode == 3 and f"no image devbox-test/{RUN}-nothing:0" in proc.stderr
    proc = store("create", name, env={"DEVBOX_PROXY_IMAGE": missing["DEVBOX_IMAGE"]}, check=False)
    assert proc.returncode == 3 and f"no proxy image devbox-test/{RUN}-nothing:0" in proc.stderr
    assert residue(name) == []


def _readline(stream, what: str) -> bytes:  # type: ignore[no-untyped-def]
    """One line from a pipe; the deadline only keeps a stuck follower from hanging CI."""
    ready, _, _ = select.select([stream], [], [], 60)
    assert ready, f"no line from {what}"
    return stream.readline()


def test_logs_follow_prints_new_lines_as_they_come(store: Cli):
    name = f"{RUN}-follow"
    store("create", name, "--network-policy", "pol")
    followers = []
    try:
        for args in ([], ["--egress", "-o", "json"]):
            followers.append(
                subprocess.Popen(
                    [*DEVBOX, "logs", "-f", name, *args], stdout=subprocess.PIPE, env=store.env()
                )
            )
        box_log, egress_log = followers
        # written after the followers started, so only following can show them
        store("exec", name, "--", "sh", "-c", "echo followed-line > /proc/1/fd/1")
        assert _readline(box_log.stdout, "logs -f") == b"followed-line\n"
        store.sh(name, "curl -s -o /dev/null http://denied.example.test/followed")
        record = {}
        while record.get("path") != "/followed":
            record = json.loads(_readline(egress_log.stdout, "logs -f --egress"))
        assert record["host"] == "denied.example.test" and record["status"] == 403
        assert box_log.poll() is None and egress_log.poll() is None  # still following
    finally:
        for proc in followers:
            proc.terminate()
            proc.wait(timeout=30)
            proc.stdout.close()
        store("delete", name, check=False)


def test_delete_all_removes_every_devbox_of_its_store_and_no_other(store: Cli, tmp_path_factory):
    # another store's devbox on the same engine (another user, another DEVBOX_HOME)
    neighbour = Cli(tmp_path_factory.mktemp("home-neighbour"), store.infra)
    theirs = f"{RUN}-all-theirs"
    neighbour("create", theirs)
    try:
        names = [f"{RUN}-all-a", f"{RUN}-all-b"]
        for name in names:
            store("create", name)
        deleted = store.json("delete", "--all")
        assert {r["name"] for r in deleted if r["removed"]} == set(names)
        assert all(residue(name) == [] for name in names)
        assert [d["name"] for d in neighbour.json("list")] == [theirs]
        assert residue(theirs) != []
        assert store.json("list") == []
        again = store("delete", "--all")
        assert again.returncode == 0 and "no devboxes to delete" in again.stdout + again.stderr
    finally:
        neighbour("delete", theirs, check=False)
