"""Create failures leave nothing behind; list/show/logs/delete read Docker; labels."""

from __future__ import annotations

import json

import pytest

from tests.docker.conftest import RUN, Cli, docker, residue

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
    names = docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
    names += docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    return {n for n in names if RUN in n or n == "devbox-egress"}


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
        (["--memory", "lots"], 2, "--memory"),
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
