"""Exit codes the README promises, for the codes that need an engine to go wrong (1, 6, 7),
run without Docker: a dead DOCKER_HOST socket, or a stand-in engine (tests/cli/fake_engine.py)
answering what a troubled engine would."""

from __future__ import annotations

import pytest
import typer.main

from devbox_cli.cli import app
from tests.cli.fake_engine import FakeEngine
from tests.cli.support import run

# Every top-level command that talks to the engine, with arguments that get it that far.
ENGINE_COMMANDS = {
    "create": [["create", "box1"], ["create"]],
    "exec": [["exec", "box1", "--", "true"], ["exec", "-i", "box1", "cat"]],
    "shell": [["shell", "box1"]],
    "list": [["list"], ["list", "-o", "json"]],
    "show": [["show", "box1"]],
    "logs": [["logs", "box1"], ["logs", "box1", "--egress", "-f"]],
    "repair": [["repair", "box1"]],
    "delete": [["delete", "box1"], ["delete", "--all"]],
    "cp": [
        ["cp", "box1:/etc/hostname", "."],
        ["cp", ".", "box1:/workspace"],
        ["cp", "box1:/x", "-"],
    ],
    "volume": [["volume", "list"], ["volume", "delete", "v1", "--force"]],
    # and with mounts, once their host paths passed
    "create --mount": [["create", "box1", "--mount", ".:/workspace", "--volume", "v1:/data"]],
    "stop": [["stop", "box1", "box2"]],
    "start": [["start", "box1"]],
    "gc": [["gc"], ["gc", "--stopped-for", "3d", "--dry-run", "-o", "json"]],
    "snapshot": [
        ["snapshot", "create", "box1"],
        ["snapshot", "list"],
        ["snapshot", "delete", "s1"],
    ],
    "images": [["images", "list"], ["images", "build"], ["images", "build", "--offline"]],
    "port-forward": [
        ["port-forward", "box1", "8080"],
        ["port-forward", "box1", ":80", "-o", "json"],
    ],
}
GROUPS = {"secret", "gateway", "policy"}  # the local store only; see the last test
# Without an engine these do not exit 6: doctor reports it (exit 1, tested below), watch
# waits for the engine to come (tests/cli/test_watch.py), version says why it has no engine
# version and completion completes nothing (exit 0: tests/cli/test_conventions.py).
REPORTING = {"doctor", "watch", "version", "completion"}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


@pytest.fixture
def dead_engine(tmp_path):
    """DOCKER_HOST at a unix socket path nothing listens on."""
    return {"DOCKER_HOST": f"unix://{tmp_path / 'docker.sock'}"}


@pytest.fixture
def engine(tmp_path):
    with FakeEngine(tmp_path) as fake:
        fake.route("GET", "/version", 200, {"ApiVersion": "1.41", "Version": "fake"})
        yield fake


def test_every_top_level_command_is_classified():
    """A new command must be added to ENGINE_COMMANDS (or be a store-only group)."""
    commands = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert commands == {c.split()[0] for c in ENGINE_COMMANDS} | GROUPS | REPORTING


def test_without_an_engine_doctor_reports_it_fails_and_skips_the_rest(dead_engine):
    import json

    proc = run("doctor", "-o", "json", env=dead_engine)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is False
    engine, *rest = report["checks"]
    assert engine["name"] == "engine" and engine["status"] == "fail"
    assert engine["detail"].startswith("cannot reach the Docker engine at unix://")
    assert "DOCKER_HOST" in engine["fix"]
    assert [c["status"] for c in rest] == ["skip"] * len(rest) and rest
    text = run("doctor", env=dead_engine)
    assert text.returncode == 1
    assert "FAIL" in text.stdout and "fix: start Docker" in text.stdout
    assert "1 of 5 checks failed" in text.stderr


@pytest.mark.parametrize(
    "args", [a for runs in ENGINE_COMMANDS.values() for a in runs], ids=" ".join
)
def test_without_an_engine_every_devbox_command_is_exit_6(dead_engine, args):
    proc = run(*args, env=dead_engine)
    assert proc.returncode == 6, proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 2, lines
    assert lines[0].startswith("error: cannot reach the Docker engine at unix://")
    assert lines[1].startswith("hint: start Docker")
    assert "DOCKER_HOST" in lines[1]


def test_store_commands_work_without_an_engine(dead_engine):
    """Updates push to running devboxes; with no engine none can be running."""
    for args, stdin in [
        (["secret", "create", "K"], "v1"),
        (["secret", "update", "K"], "v2"),
        (["gateway", "create", "g", "--endpoint", "https://e.com"], ""),
        (["gateway", "update", "g", "--endpoint", "https://f.com"], ""),
        (["policy", "create", "p", "--allow", "e.com"], ""),
        (["policy", "update", "p", "--add-allow", "f.com"], ""),
        (["policy", "delete", "p"], ""),
        (["gateway", "delete", "g"], ""),
        (["secret", "delete", "K"], ""),
    ]:
        proc = run(*args, stdin=stdin, env=dead_engine)
        assert proc.returncode == 0, (args, proc.stderr)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["list"], "error: listing containers: fake engine: no route"),
        (["show", "box1"], "error: inspecting container devbox-box1: fake engine"),
        (["delete", "box1"], "error: listing containers: fake engine"),
        (["exec", "box1", "--", "true"], "error: docker exec in devbox box1 failed: fake engine"),
        (["volume", "list"], "error: listing containers: fake engine"),
        (["cp", "box1:/x", "."], "error: inspecting container devbox-box1: fake engine"),
    ],
)
def test_an_engine_that_fails_a_request_is_exit_7(engine, args, message):
    proc = run(*args, env={"DOCKER_HOST": engine.host})
    assert proc.returncode == 7, proc.stderr
    lines = error_lines(proc.stderr)
    assert 1 <= len(lines) <= 2, lines
    assert lines[0].startswith(message), lines
    if args[0] != "exec":  # the fast path has its own wording
        assert lines[1] == (
            "hint: the Docker engine refused it; `docker info` and the engine's log say more"
        )


@pytest.mark.parametrize(
    ("state", "lines"),
    [
        (
            {"Status": "exited", "FinishedAt": "2025-03-04T05:06:07.123456789Z"},
            ["error: devbox box1 is stopped (since 2025-03-04T05:06:07Z)",
             "hint: start it with `devbox start box1`"],
        ),
        (
            {"Status": "paused"},
            ["error: devbox box1 is paused while a snapshot is taken",
             "hint: try again in a moment"],
        ),
        (
            {"Status": "created", "FinishedAt": "0001-01-01T00:00:00Z"},
            ["error: devbox box1 is not running (Container abc is not running)",
             "hint: start it with `devbox start box1`"],
        ),
        (
            "garbage",
            ["error: devbox box1 is not running (Container abc is not running)",
             "hint: start it with `devbox start box1`"],
        ),
    ],
)  # fmt: skip
def test_exec_in_a_stopped_devbox_is_exit_4_and_names_start(engine, state, lines):
    engine.route(
        "POST", "/containers/devbox-box1/exec", 409, {"message": "Container abc is not running"}
    )
    engine.route("GET", "/containers/devbox-box1/json", 200, {"State": state})
    proc = run("exec", "box1", "--", "true", env={"DOCKER_HOST": engine.host})
    assert proc.returncode == 4
    assert error_lines(proc.stderr) == lines
    # the one inspect is the error path's: a running box's exec never pays for it
    assert ("GET", "/containers/devbox-box1/json") in engine.seen


def test_a_stopped_devbox_that_vanished_meanwhile_still_names_start(engine):
    engine.route("POST", "/containers/devbox-box1/exec", 409, {"message": "is not running"})
    engine.route("GET", "/containers/devbox-box1/json", 404, {"message": "No such container"})
    proc = run("exec", "box1", "--", "true", env={"DOCKER_HOST": engine.host})
    assert proc.returncode == 4
    assert error_lines(proc.stderr)[1] == "hint: start it with `devbox start box1`"


def test_an_engine_answer_devbox_does_not_understand_is_exit_1(engine):
    engine.route("POST", "/containers/devbox-box1/exec", 201, {})  # no exec Id
    proc = run("exec", "box1", "--", "true", env={"DOCKER_HOST": engine.host})
    assert proc.returncode == 1
    assert error_lines(proc.stderr) == [
        "error: unexpected KeyError; rerun with DEVBOX_DEBUG=1 for details"
    ]
    loud = run("exec", "box1", "--", "true", env={"DOCKER_HOST": engine.host, "DEVBOX_DEBUG": "1"})
    assert loud.returncode == 1
    assert "Traceback" in loud.stderr and "KeyError" in loud.stderr


def test_a_missing_devbox_is_exit_3_from_the_engine(engine):
    engine.route("POST", "/containers/devbox-box1/exec", 404, {"message": "No such container"})
    proc = run("exec", "box1", "--", "true", env={"DOCKER_HOST": engine.host})
    assert proc.returncode == 3
    assert error_lines(proc.stderr)[0] == "error: no devbox box1"
