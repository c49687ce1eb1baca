"""`devbox watch` without Docker: it waits for an engine that is not there, reconnects to
one that went away and came back (sweeping every devbox again each time), and exits
cleanly on SIGTERM and SIGINT. The engine is tests/cli/fake_engine.py on a real socket; what
it heals is tested against the real engine (tests/docker/test_healing.py) and a restarted
daemon (tests/docker/test_engine_restart.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from tests.cli.fake_engine import FakeEngine
from tests.cli.support import Follower

WATCH = [sys.executable, "-m", "devbox_cli", "watch", "-o", "json"]


def follow(env: dict[str, str]) -> Follower:
    return Follower(WATCH, {**os.environ, **env})


def action(name: str):  # type: ignore[no-untyped-def]
    return lambda line: json.loads(line)["action"] == name


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_it_waits_for_the_engine_with_a_growing_backoff_and_stops_cleanly(tmp_path, sig):
    watch = follow({"DOCKER_HOST": f"unix://{tmp_path / 'none.sock'}"})
    try:
        first = json.loads(watch.wait_for(action("unreachable")))
        second = json.loads(watch.wait_for(action("unreachable")))
        assert first["detail"].startswith("cannot reach the Docker engine at unix://")
        assert first["detail"].endswith("retrying in 0.5s")
        assert second["detail"].endswith("retrying in 1s")
        assert watch.stop(sig) == 0
    finally:
        watch.kill()
    assert json.loads(watch.lines[-1])["action"] == "stopped"


def serve_engine(tmp_path, ended: threading.Event) -> FakeEngine:
    engine = FakeEngine(tmp_path)
    engine.route("GET", "/version", 200, {"ApiVersion": "1.41", "Version": "fake-1"})
    engine.route("GET", "/containers/json", 200, [])

    def events(_rfile, wfile):
        wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
        wfile.flush()
        ended.wait(60)  # then the stream ends: the engine went away

    engine.hijack("GET", "/events", events)
    return engine


def test_it_reconnects_to_an_engine_that_came_back_and_sweeps_again(tmp_path):
    ended = threading.Event()
    engine = serve_engine(tmp_path, ended).__enter__()
    watch = follow({"DOCKER_HOST": engine.host})
    try:
        assert "fake-1" in json.loads(watch.wait_for(action("connected")))["detail"]
        swept = json.loads(watch.wait_for(action("swept")))
        assert swept["detail"] == "0 devbox(es): 0 healed, 0 failed"
        assert ("GET", "/events") in engine.seen
        engine.__exit__()
        engine.path.unlink()
        ended.set()
        watch.wait_for(action("lost"))
        watch.wait_for(action("unreachable"))
        again = serve_engine(tmp_path, threading.Event()).__enter__()
        try:
            watch.wait_for(action("connected"))
            watch.wait_for(action("swept"))
            assert ("GET", "/events") in again.seen
            assert watch.stop() == 0
        finally:
            again.__exit__()
    finally:
        watch.kill()
        ended.set()


def protected_store(home) -> None:  # type: ignore[no-untyped-def]
    from devbox_cli import Client

    Client(str(home), passphrase="open sesame").create_secret("K", "v")


def test_a_protected_store_without_a_terminal_or_passphrase_is_exit_5(tmp_path, devbox_home):
    protected_store(devbox_home)
    proc = subprocess.run(
        [sys.executable, "-m", "devbox_cli", "watch"], stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "DOCKER_HOST": f"unix://{tmp_path / 'none.sock'}"},
    )  # fmt: skip
    assert proc.returncode == 5, proc.stderr
    assert "DEVBOX_PASSPHRASE" in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize(("typed", "unlocked"), [("open sesame", True), ("not-it-9f3k", False)])
def test_on_a_terminal_it_asks_for_the_passphrase_once_then_watches(
    tmp_path, devbox_home, typed, unlocked
):
    """stdin, stderr and the controlling terminal are a pty, as in a shell; stdout is a pipe."""
    import fcntl
    import pty
    import termios

    protected_store(devbox_home)
    master, slave = pty.openpty()

    def controlling_tty() -> None:
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [sys.executable, "-m", "devbox_cli", "watch", "-o", "json"], stdin=slave,
        stdout=subprocess.PIPE, stderr=slave, preexec_fn=controlling_tty, text=True,
        env={**os.environ, "DOCKER_HOST": f"unix://{tmp_path / 'none.sock'}"},
    )  # fmt: skip
    os.close(slave)
    try:
        seen = b""
        while b"passphrase:" not in seen:
            chunk = os.read(master, 1024)
            assert chunk, seen
            seen += chunk
        os.write(master, typed.encode() + b"\n")
        assert proc.stdout is not None
        first = proc.stdout.readline()
        if unlocked:
            assert json.loads(first)["action"] == "unreachable"  # watching, key in memory
            assert json.loads(proc.stdout.readline())["action"] == "unreachable"  # no 2nd ask
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        else:
            assert first == ""
            assert proc.wait(timeout=60) == 5
        rest = b""
        try:
            while chunk := os.read(master, 1024):
                rest += chunk
        except OSError:
            pass  # the pty closes with the process
        assert rest.count(b"passphrase:") == 0  # asked exactly once
        assert typed.encode() not in rest  # not echoed, nor in any message
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
