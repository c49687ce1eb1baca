"""`devbox port-forward` as a user runs it, against a stand-in engine (tests/cli/fake_engine.py)
whose "relay" is whatever the test scripts: the exec it is asked for, a relay that breaks
the protocol once a connection comes, one from an older proxy image, a devbox not running.
Each ends with exit 7 and two lines naming the problem, never a traceback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from proxy import relay_wire as w
from tests.cli.fake_engine import UPGRADED, FakeEngine, frame

BOX = {
    "Id": "boxid",
    "State": {"Status": "running"},
    "NetworkSettings": {"Networks": {"devbox-b-net": {"IPAddress": "10.9.0.2"}}},
}
PROXY = {"Id": "proxyid", "State": {"Status": "running"}}


@pytest.fixture
def engine(tmp_path):
    with FakeEngine(tmp_path) as fake:
        fake.route("GET", "/version", 200, {"ApiVersion": "1.41"})
        fake.route("GET", "/containers/devbox-b/json", 200, BOX)
        fake.route("GET", "/containers/devbox-b-proxy/json", 200, PROXY)
        fake.route("GET", "/events", 200, b"")
        fake.route("POST", "/containers/proxyid/exec", 201, {"Id": "e1"})
        fake.route("GET", "/exec/e1/json", 200, {"Running": False, "ExitCode": 0})
        yield fake


def read_frame(rfile) -> w.Frame:
    kind, channel, length = w.HEADER.unpack(rfile.read(w.HEADER.size))
    return w.Frame(kind, channel, rfile.read(length))


def forward(engine: FakeEngine, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "devbox_cli", "port-forward", "b", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"DOCKER_HOST": engine.host, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def test_a_relay_breaking_the_protocol_ends_it_with_exit_7_and_two_lines(engine, tmp_path):
    def relay(rfile, wfile):
        wfile.write(UPGRADED)
        wfile.flush()
        assert read_frame(rfile) == w.Frame(w.HELLO, 0, w.PROTOCOL)
        wfile.write(frame(1, w.encode(w.HELLO, 0, w.PROTOCOL)))
        wfile.flush()
        assert read_frame(rfile).kind == w.OPEN
        wfile.write(frame(1, w.HEADER.pack(w.DATA, 1, 2**31)))  # 2 GB, it says
        wfile.flush()
        rfile.read()  # until the CLI hangs up

    engine.hijack("POST", "/exec/e1/start", relay)
    proc = forward(engine, ":8080", "-o", "json")
    line = json.loads(proc.stdout.readline())
    assert line["remote_port"] == 8080 and line["address"] == f"127.0.0.1:{line['port']}"
    with socket.create_connection(("127.0.0.1", line["port"]), timeout=30) as client:
        assert client.recv(10) == b""  # cut with the session
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 7
    assert err.splitlines() == [
        "error: port-forward to devbox b ended: the relay in its proxy broke the protocol "
        "(protocol error: DATA frame of 2147483648 bytes (allowed: 1..65536))",
        "hint: see `docker logs devbox-b-proxy`; recreate the devbox if it repeats",
    ]
    # the relay it asked for: in the proxy, aimed at the box's address as docker has it
    assert engine.bodies["/containers/proxyid/exec"]["Cmd"] == [
        "/opt/proxy/bin/python", "-m", "proxy.relay", "10.9.0.2", "8080",
    ]  # fmt: skip


def test_an_older_proxy_without_the_relay_is_named(engine):
    def old(rfile, wfile):
        wfile.write(UPGRADED)
        wfile.flush()
        read_frame(rfile)  # the engine starts the process once the stream is attached
        wfile.write(frame(2, b"/opt/proxy/bin/python: No module named proxy.relay\n"))

    engine.route("GET", "/exec/e1/json", 200, {"Running": False, "ExitCode": 1})
    engine.hijack("POST", "/exec/e1/start", old)
    proc = forward(engine, "8080")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 7
    assert err.splitlines() == [
        "error: the proxy of devbox b has no port-forward relay: it runs an older proxy image",
        "hint: recreate the devbox (`devbox delete b`, then `devbox create`)",
    ]


def test_a_relay_that_exits_is_reported_with_its_status_and_last_words(engine):
    def dies(rfile, wfile):
        wfile.write(UPGRADED)
        wfile.flush()
        read_frame(rfile)
        wfile.write(frame(1, w.encode(w.HELLO, 0, w.PROTOCOL)))
        wfile.write(frame(2, b"Traceback ...\nMemoryError\n"))

    engine.route("GET", "/exec/e1/json", 200, {"Running": False, "ExitCode": 1})
    engine.hijack("POST", "/exec/e1/start", dies)
    proc = forward(engine, "8080")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 7
    assert err.splitlines()[0] == (
        "error: port-forward to devbox b ended: its relay stopped (exit status 1: MemoryError)"
    )


@pytest.mark.parametrize(
    ("state", "lines"),
    [
        ("exited", ["error: devbox b is not running (the devbox is exited)",
                    "hint: start it with `devbox start b`"]),
        ("paused", ["error: devbox b is paused while a snapshot is taken",
                    "hint: try again in a moment"]),
    ],
)  # fmt: skip
def test_a_devbox_not_running_is_refused_before_listening(engine, state, lines):
    engine.route("GET", "/containers/devbox-b/json", 200, {**BOX, "State": {"Status": state}})
    proc = forward(engine, "8080")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 4
    assert err.splitlines() == lines
    assert ("POST", "/containers/proxyid/exec") not in engine.seen


def test_an_address_that_is_not_one_is_refused(engine):
    box = {**BOX, "NetworkSettings": {"Networks": {"devbox-b-net": {"IPAddress": "evil.example"}}}}
    engine.route("GET", "/containers/devbox-b/json", 200, box)
    proc = forward(engine, "8080")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 7
    assert "devbox b has no address on its network devbox-b-net" in err
    assert ("POST", "/containers/proxyid/exec") not in engine.seen
