"""`devbox exec`'s fast path end to end without Docker: the real CLI in a subprocess, talking
its hand-written Engine API client to a stand-in engine (tests/cli/fake_engine.py) that
answers the three requests an exec makes: create, start (an upgraded, multiplexed stream)
and inspect (the exit code)."""

from __future__ import annotations

import pytest

from devbox_cli import Client
from tests.cli.fake_engine import UPGRADED, FakeEngine, frame
from tests.cli.support import run


@pytest.fixture
def engine(tmp_path):
    with FakeEngine(tmp_path) as fake:
        fake.route("POST", "/containers/devbox-b/exec", 201, {"Id": "e1"})
        fake.route("GET", "/exec/e1/json", 200, {"Running": False, "ExitCode": 5})
        yield fake


def test_streams_stay_apart_and_the_exit_status_is_the_commands(engine):
    def start(rfile, wfile):
        wfile.write(UPGRADED + frame(1, b"out ") + frame(2, b"err\n") + frame(1, b"put\n"))

    engine.hijack("POST", "/exec/e1/start", start)
    proc = run("exec", "-e", "A=1", "-w", "/src", "-u", "1000", "b", "--", "sh", "-c", "x",
               env={"DOCKER_HOST": engine.host})  # fmt: skip
    assert (proc.returncode, proc.stdout, proc.stderr) == (5, "out put\n", "err\n")
    assert engine.bodies["/containers/devbox-b/exec"] == {
        "AttachStdin": False,
        "AttachStdout": True,
        "AttachStderr": True,
        "Tty": False,
        "Env": ["A=1"],
        "Cmd": ["sh", "-c", "x"],
        "WorkingDir": "/src",
        "User": "1000",
    }
    assert engine.bodies["/exec/e1/start"] == {"Detach": False, "Tty": False}
    # three requests and no more: only a refused exec pays for an inspect (stopped? paused?)
    assert engine.seen == [
        ("POST", "/containers/devbox-b/exec"),
        ("POST", "/exec/e1/start"),
        ("GET", "/exec/e1/json"),
    ]


def test_interactive_stdin_reaches_the_command_and_ends_with_eof(engine):
    def cat(rfile, wfile):
        wfile.write(UPGRADED)
        wfile.flush()
        data = rfile.read()  # to EOF: the CLI half-closes once its stdin ends
        wfile.write(frame(1, data[::-1]))

    engine.hijack("POST", "/exec/e1/start", cat)
    proc = run("exec", "-i", "b", "--", "rev", stdin="hello", env={"DOCKER_HOST": engine.host})
    assert (proc.returncode, proc.stdout) == (5, "olleh")
    assert engine.bodies["/containers/devbox-b/exec"]["AttachStdin"] is True


def test_exec_help_needs_no_engine(tmp_path):
    proc = run("exec", "-h", env={"DOCKER_HOST": f"unix://{tmp_path / 'none.sock'}"})
    assert proc.returncode == 0
    assert proc.stdout.startswith("Usage: devbox exec")


def test_an_exec_that_fails_to_start_is_exit_7(engine):
    engine.route("POST", "/exec/e1/start", 500, {"message": "oci runtime error"})
    proc = run("exec", "b", "--", "true", env={"DOCKER_HOST": engine.host})
    assert proc.returncode == 7
    assert proc.stderr.startswith("error: docker exec failed to start:")
    assert "oci runtime error" in proc.stderr


def test_the_python_api_captures_both_streams(engine, monkeypatch):
    def start(rfile, wfile):
        wfile.write(UPGRADED)
        wfile.flush()
        wfile.write(frame(1, b"in:" + rfile.read()) + frame(2, b"E\n"))

    engine.hijack("POST", "/exec/e1/start", start)
    monkeypatch.setenv("DOCKER_HOST", engine.host)
    result = Client().exec("b", ["cat"], env={"K": "v"}, stdin="data")
    assert (result.exit_code, result.stdout, result.stderr) == (5, "in:data", "E\n")
    assert engine.bodies["/containers/devbox-b/exec"]["Env"] == ["K=v"]
