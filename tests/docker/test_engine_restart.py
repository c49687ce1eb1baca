"""A Docker daemon restart mid-stream, healed without a person. Runs only against the nested
engine (`make test-engines`: scripts/nested-engine.sh sets DEVBOX_TEST_ENGINE to the nested
engine's container and DEVBOX_TEST_OUTER_HOST to the engine it runs in), which it restarts
by restarting that container: its dockerd goes down with every container in it, as in a
host reboot, and comes back on the same data root. The test run's own engine is never
touched.

Two stores, each with a devbox: store A has a `devbox watch` running, which must notice the
engine went away, reconnect and heal A's devbox by itself; store B's devbox is healed by
B's next `devbox exec`. Until then both fail closed, and afterwards each proxy is a fresh
supervisor and server, nothing left over.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.cli.support import Follower
from tests.docker.conftest import DEVBOX, RUN, Cli, docker

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(
        not os.environ.get("DEVBOX_TEST_ENGINE"),
        reason="restarts its engine: runs only against the nested one (make test-engines)",
    ),
]

FORWARD = "http://other.example.test/"
HEALTH = "http://proxy:3128/_devbox/health"


def outer(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DOCKER_HOST": os.environ["DEVBOX_TEST_OUTER_HOST"]}
    return subprocess.run(["docker", *args], capture_output=True, text=True, env=env,
                          timeout=300, check=True)  # fmt: skip


def inside(name: str, script: str) -> str:
    return docker("exec", f"devbox-{name}", "sh", "-c", script, check=False).stdout


def code(name: str, url: str) -> str:
    return inside(name, f"curl -s -o /dev/null -m 10 -w '%{{http_code}}' {url}")


def wait_for(predicate, what: str, timeout: float = 180.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return result


def engine_up() -> bool:
    return docker("info", "--format", "{{.ServerVersion}}", check=False).returncode == 0


def test_a_daemon_restart_mid_stream_fails_closed_and_heals_by_itself(infra, tmp_path_factory):
    stores = {}
    for which in ("a", "b"):
        cli = Cli(tmp_path_factory.mktemp(f"home-{which}"), infra)
        cli("policy", "create", "open", "--allow-all", "--allow-cidr", infra.subnet)
        name = f"{RUN}-daemon-{which}"
        cli("create", name, "--network-policy", "open")
        stores[which] = (cli, name)
    (cli_a, box_a), (cli_b, box_b) = stores["a"], stores["b"]
    watch = Follower([*DEVBOX, "watch", "-o", "json"], cli_a.env())
    try:
        watch.wait_for(lambda line: json.loads(line)["action"] == "swept")
        for box in (box_a, box_b):
            assert code(box, FORWARD) == "200"
        # a stream in flight through each proxy when the daemon goes
        for box in (box_a, box_b):
            inside(box, f"(curl -sN {FORWARD}stream > /workspace/stream) >/dev/null 2>&1 &")
            wait_for(lambda b=box: "tick 2" in inside(b, "cat /workspace/stream"), "a stream")

        outer("restart", "-t", "5", os.environ["DEVBOX_TEST_ENGINE"])
        wait_for(engine_up, "the nested engine to answer again")
        # the test's stand-in upstreams have no restart policy: bring them back by hand
        docker("start", f"{RUN}-upstream", f"{RUN}-other")

        # the watcher lost the engine, came back, and healed A on its sweep or on A's start
        watch.wait_for(lambda line: json.loads(line)["action"] in ("lost", "unreachable"))
        watch.wait_for(lambda line: json.loads(line)["action"] == "connected", timeout=180)
        wait_for(lambda: code(box_a, FORWARD) == "200", "the watcher to heal A", timeout=120)

        # B has no watcher: back, but unconfigured, so failing closed until its next command
        wait_for(lambda: code(box_b, HEALTH) == "503", "B's proxy to answer unconfigured")
        assert code(box_b, FORWARD) == "503"
        assert "tick" in inside(box_b, "cat /workspace/stream")  # the old stream was cut
        assert {d["name"]: d for d in cli_b.json("list")}[box_b]["proxy"]["configured"] is False
        proc = cli_b("exec", box_b, "--", "curl", "-s", "-m", "10", FORWARD)
        assert proc.stdout == "hello from other.example.test\n"
        # and a new stream flows again through both
        for box in (box_a, box_b):
            inside(box, f"(curl -sN {FORWARD}stream > /workspace/again) >/dev/null 2>&1 &")
            wait_for(lambda b=box: "tick 2" in inside(b, "cat /workspace/again"), "a new stream")
            top = docker("top", f"devbox-{box}-proxy", "-eo", "pid,stat,args").stdout
            procs = [line.split(None, 1)[1] for line in top.splitlines()[1:] if line.strip()]
            assert len(procs) == 2 and not [p for p in procs if p.startswith("Z")], procs
        assert watch.stop() == 0
    finally:
        watch.kill()
        for cli, name in stores.values():
            cli("delete", name, check=False)
    actions = [json.loads(line)["action"] for line in watch.lines]
    assert actions[-1] == "stopped"
