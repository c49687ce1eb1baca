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
    # three requests and the proxy's inspect (sent beside the first: is it configured?), no
    # more: only a refused exec pays for an inspect of the box (stopped? paused?)
    assert sorted(engine.seen) == [
        ("GET", "/containers/devbox-b-proxy/json"),
        ("GET", "/exec/e1/json"),
        ("POST", "/containers/devbox-b/exec"),
        ("POST", "/exec/e1/start"),
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


# -- a proxy that needs its config: one inspect tells, the slow path heals ---------------------

PROXY_ID = "ab" * 32
PROXY_PATH = "/containers/devbox-b-proxy/json"


def proxy_state(started: str = "T1", *, running: bool = True, status: str = "running", **extra):
    state = {"Running": running, "Status": status, "StartedAt": started, **extra}
    return {"Id": PROXY_ID, "State": state}


@pytest.mark.parametrize(
    ("answer", "recorded", "heals"),
    [
        ((200, proxy_state("T1")), "T1", False),  # configured: the fast path only
        ((200, proxy_state("T2")), "T1", True),  # started again since the push
        ((200, proxy_state("T1")), None, True),  # never pushed from this DEVBOX_HOME
        ((200, proxy_state(running=False, status="exited")), "T1", True),  # stopped: start it
        ((200, proxy_state(running=False, status="restarting")), "T1", False),  # on its way
        ((200, proxy_state("T2", Paused=True)), "T1", False),
        ((404, {"message": "no such container"}), "T1", False),
        ((200, ["not", "an", "object"]), "T1", False),  # a hostile or broken engine
        ((200, {"Id": "../../etc", "State": {"Running": True, "StartedAt": "T1"}}), "T1", True),
    ],
    ids=["configured", "restarted", "no-record", "exited", "restarting", "paused", "missing",
         "garbage", "bad-id"],
)  # fmt: skip
def test_one_inspect_tells_whether_the_proxy_needs_its_config(
    engine, devbox_home, answer, recorded, heals
):
    from devbox_cli.home import PushLedger

    if recorded:
        PushLedger(devbox_home).record(PROXY_ID, recorded)
    engine.route("GET", PROXY_PATH, *answer)
    engine.route("GET", "/version", 200, {"ApiVersion": "1.41"})  # docker-py: the slow path
    engine.hijack("POST", "/exec/e1/start", lambda _r, w: w.write(UPGRADED + frame(1, b"ran\n")))
    proc = run("exec", "b", "--", "true", env={"DOCKER_HOST": engine.host})
    assert (proc.returncode, proc.stdout) == (5, "ran\n")  # the command runs either way
    assert ("GET", PROXY_PATH) in engine.seen
    slow = [i for i, seen in enumerate(engine.seen) if seen == ("GET", "/version")]
    assert bool(slow) is heals, engine.seen
    if heals:
        # healed before the command started, and a heal that fails is a warning, not an error
        assert slow[0] < engine.seen.index(("POST", "/exec/e1/start"))
        assert "warning:" in proc.stderr and "devbox repair b" in proc.stderr
    else:
        assert proc.stderr == ""


def test_the_probe_is_closed_when_there_is_no_devbox(engine):
    engine.route("POST", "/containers/devbox-b/exec", 404, {"message": "no such container"})
    engine.route("GET", PROXY_PATH, 200, proxy_state("T2"))
    proc = run("exec", "b", "--", "true", env={"DOCKER_HOST": engine.host})
    assert proc.returncode == 3 and "no devbox b" in proc.stderr
    assert ("GET", "/version") not in engine.seen


def test_the_python_api_heals_through_the_same_probe(engine, monkeypatch, devbox_home):
    engine.route("GET", PROXY_PATH, 200, proxy_state("T2"))
    engine.route("GET", "/version", 200, {"ApiVersion": "1.41"})
    engine.hijack("POST", "/exec/e1/start", lambda _r, w: w.write(UPGRADED + frame(1, b"x")))
    monkeypatch.setenv("DOCKER_HOST", engine.host)
    result = Client().exec("b", ["true"])
    assert (result.exit_code, result.stdout) == (5, "x")
    assert engine.seen.index(("GET", "/version")) < engine.seen.index(("POST", "/exec/e1/start"))
