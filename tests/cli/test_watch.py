"""`devbox watch` without Docker: it waits for an engine that is not there, reconnects to
one that went away and came back (sweeping every devbox again each time), and exits
cleanly on SIGTERM and SIGINT. The engine is tests/cli/fake_engine.py on a real socket; what
it heals is tested against the real engine (tests/docker/test_healing.py) and a restarted
daemon (tests/docker/test_engine_restart.py)."""

from __future__ import annotations

import json
import signal
import sys
import threading

import pytest

from tests.cli.fake_engine import FakeEngine
from tests.cli.support import Follower

WATCH = [sys.executable, "-m", "devbox_cli", "watch", "-o", "json"]


def follow(env: dict[str, str]) -> Follower:
    import os

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
