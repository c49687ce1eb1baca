"""`devbox stop` and `devbox start` end to end through the real CLI: files kept, tokens kept,
the proxy configured from the store as it is at start (a secret rotated while stopped takes
effect), exec on a stopped devbox, several devboxes at once and a partial failure."""

from __future__ import annotations

import json
import secrets

import pytest

from tests.docker.conftest import RUN, Cli, docker
from tests.docker.days import bearer, gateway_auth, leftovers, with_gateway

pytestmark = pytest.mark.docker

FIRST = "sk-ant-first-" + secrets.token_hex(12)
ROTATED = "sk-ant-rotated-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def store(module_cli: Cli):
    return with_gateway(module_cli, FIRST)


def running(container: str) -> bool:
    return docker("inspect", "-f", "{{.State.Running}}", container).stdout.strip() == "true"


def test_stop_then_start_keeps_files_and_tokens_and_configures_from_the_store_now(store: Cli):
    name = f"{RUN}-pause"
    store("create", name, "--gateway", "P=gw:KEY")
    try:
        assert store.sh(name, "mkdir -p src && echo 'print(1)' > src/main.py").returncode == 0
        assert store.sh(name, "echo scratch > /tmp/scratch").returncode == 0
        token = store.sh(name, "echo $P").stdout.strip()
        assert gateway_auth(store, name) == bearer(FIRST)

        assert store.json("stop", name) == [
            {"name": name, "ok": True, "status": "stopped", "changed": True, "error": None}
        ]
        assert not running(f"devbox-{name}") and not running(f"devbox-{name}-proxy")
        restart = docker("inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}",
                         f"devbox-{name}-proxy").stdout.strip()  # fmt: skip
        assert restart == "unless-stopped"  # an explicit stop outlives a daemon restart
        shown = store.json("show", name)
        assert shown["status"] == "stopped" and shown["stopped_at"].endswith("Z")
        [listed] = [b for b in store.json("list") if b["name"] == name]
        assert (listed["status"], listed["stopped_at"]) == ("stopped", shown["stopped_at"])
        text = store("show", name)
        assert f"stopped since {shown['stopped_at']}" in text.stdout
        assert f"start it with `devbox start {name}`" in text.stderr
        again = store("stop", name)
        assert again.returncode == 0 and "was already stopped" in again.stderr

        proc = store("exec", name, "--", "true", check=False)
        assert proc.returncode == 4, proc.stderr
        assert proc.stderr.splitlines() == [
            f"error: devbox {name} is stopped (since {shown['stopped_at']})",
            f"hint: start it with `devbox start {name}`",
        ]

        # rotated while stopped: no running devbox gets it now, this one gets it at start
        rotated = store("secret", "update", "KEY", input=ROTATED)
        assert "no running devbox uses it" in rotated.stderr
        assert store.json("start", name) == [
            {"name": name, "ok": True, "status": "running", "changed": True, "error": None}
        ]
        assert store.sh(name, "cat src/main.py").stdout == "print(1)\n"
        assert store.sh(name, "cat /tmp/scratch").returncode != 0  # a tmpfs: gone
        assert store.sh(name, "echo $P").stdout.strip() == token  # tokens are kept
        assert gateway_auth(store, name) == bearer(ROTATED)
        shown = store.json("show", name)
        assert shown["status"] == "running" and shown["stopped_at"] is None
        assert shown["proxy"]["health"] == "ok"
        started = store("start", name)  # already running: the config is pushed again
        assert started.returncode == 0 and "was running" in started.stderr
    finally:
        store("secret", "update", "KEY", input=FIRST)
        store("delete", name, check=False)
    assert leftovers(store, name) == []


def test_several_at_once_and_a_partial_failure_names_what_to_retry(store: Cli, tmp_path_factory):
    names = [f"{RUN}-multi-{i}" for i in range(3)]
    missing = f"{RUN}-multi-missing"
    neighbour = Cli(tmp_path_factory.mktemp("home-neighbour"), store.infra)
    theirs = f"{RUN}-multi-theirs"
    try:
        for name in names:
            store("create", name)
        neighbour("create", theirs)

        proc = store("stop", *names, missing, "-o", "json", check=False)
        assert proc.returncode == 3, proc.stderr  # the failure's code: not found
        results = {r["name"]: r for r in json.loads(proc.stdout)}
        assert all(results[n]["ok"] and results[n]["status"] == "stopped" for n in names)
        assert results[missing] == {"name": missing, "ok": False, "status": "missing",
                                    "changed": False, "error": f"no devbox {missing}"}  # fmt: skip
        assert proc.stderr.splitlines() == [
            f"error: could not stop devbox(es) {missing} (no devbox {missing})",
            f"hint: retry with `devbox stop {missing}`",
        ]
        assert not any(running(f"devbox-{n}") for n in names)

        # another store's devbox is not ours to stop (or start): refused, left running
        proc = store("stop", names[0], theirs, check=False)
        assert proc.returncode == 4, proc.stderr
        assert f"devbox {theirs} was made with another devbox store" in proc.stderr
        assert f"retry with `devbox stop {theirs}`" in proc.stderr
        assert running(f"devbox-{theirs}")

        started = store.json("start", *names)
        assert [(r["name"], r["ok"], r["status"]) for r in started] == [
            (n, True, "running") for n in names
        ]
        assert all(store("exec", n, "--", "true").returncode == 0 for n in names)
        proc = store("start", "bad name", check=False)
        assert proc.returncode == 2 and "invalid devbox name" in proc.stderr
    finally:
        store("delete", *names, check=False)
        neighbour("delete", theirs, check=False)
    assert leftovers(store, *names) == [] and leftovers(neighbour, theirs) == []
