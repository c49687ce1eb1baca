"""The runtime around the handlers: health, audit hygiene, the supervisor, the image."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from devbox_cli.engine.images import image_refs
from proxy import admin
from proxy.config import Header
from tests.proxy.conftest import SECRET_A, TOKEN_A, binding, make_config

ROOT = Path(__file__).resolve().parents[2]


def get(url: str, timeout: float = 2.0) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = predicate()
        except (OSError, ValueError):
            result = None
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError("condition not reached before the deadline")


async def test_health_before_and_after_config(start_proxy, client, http_upstream):
    proxy = await start_proxy()
    async with client.get(f"{proxy.url}/_devbox/health") as resp:
        assert resp.status == 503
        assert await resp.json() == {"status": "unconfigured"}
    headers = (Header("x-s", "header-secret-value", secret=True),)
    proxy.reload(make_config(binding(http_upstream.url, headers=headers), devbox="agent"))
    async with client.get(f"{proxy.url}/_devbox/health") as resp:
        assert resp.status == 200
        body = await resp.text()
    assert json.loads(body) == {"status": "ok", "devbox": "agent", "gateways": 1, "policy": None}
    for value in (SECRET_A, TOKEN_A, "header-secret-value"):
        assert value not in body
    async with client.post(f"{proxy.url}/_devbox/health") as resp:
        assert resp.status == 405


async def test_audit_lines_carry_no_secret_token_or_query(start_proxy, client, http_upstream):
    headers = (Header("x-s", "header-secret-value", secret=True),)
    proxy = await start_proxy(make_config(binding(http_upstream.url, headers=headers)))
    gw = f"{proxy.url}/gw/ANTHROPIC_API_KEY"
    async with client.get(f"{gw}/v1/messages?q=query-value-123", headers={"x-api-key": TOKEN_A}):
        pass
    async with client.get(f"{gw}/v1/x?token={TOKEN_A}"):  # refused: token in the query
        pass
    lines = proxy.app.audit_sink.lines
    assert len(lines) == 2
    text = "".join(lines)
    for value in (SECRET_A, TOKEN_A, "header-secret-value", "query-value-123", "?"):
        assert value not in text
    first = json.loads(lines[0])
    assert {k: first[k] for k in ("kind", "method", "host", "port", "path", "status")} == {
        "kind": "gateway",
        "method": "GET",
        "host": "127.0.0.1",
        "port": http_upstream.port,
        "path": "/v1/messages",
        "status": 200,
    }
    assert first["prefix"] == "ANTHROPIC_API_KEY" and first["devbox"] == "box1"
    assert first["bytes_out"] > 0 and first["duration_ms"] >= 0
    assert json.loads(lines[1])["status"] == 401


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def test_supervisor_restarts_a_dead_server_which_reloads_its_config(tmp_path, http_upstream):
    port = _free_port()
    sock = str(tmp_path / "admin.sock")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "--listen", f"127.0.0.1:{port}",
         "--config", str(tmp_path / "config.json"), "--admin-socket", sock],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        health = f"http://127.0.0.1:{port}/_devbox/health"
        wait_for(lambda: get(health)[0] == 503)
        config = make_config(binding(http_upstream.url), devbox="sup")
        assert admin.request("load", config.dumps(), path=sock) == "ok"
        assert get(health)[0] == 200

        child = wait_for(lambda: _children(proc.pid))[0]
        os.kill(child, signal.SIGKILL)
        wait_for(lambda: _children(proc.pid) and _children(proc.pid)[0] != child)
        _status, body = wait_for(lambda: (r := get(health)) and r[0] == 200 and r)
        assert body["devbox"] == "sup"  # the restarted server loaded the saved config
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert SECRET_A.encode() not in out + err and TOKEN_A.encode() not in out + err


def test_idle_timeout_under_ten_minutes_is_refused():
    proc = subprocess.run(
        [sys.executable, "-m", "proxy", "--idle-timeout", "30"],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "at least 600" in proc.stderr


@pytest.mark.docker
def test_image_starts_answers_health_and_takes_a_config():
    name = f"devbox-test-proxy-{uuid.uuid4().hex[:8]}"
    run = subprocess.run(
        ["docker", "run", "-d", "--name", name, "--tmpfs", "/run/devbox:uid=10001,mode=0700",
         "-p", "127.0.0.1::3128", image_refs().proxy],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    try:
        port = (
            subprocess.run(
                ["docker", "port", name, "3128/tcp"], capture_output=True, text=True, timeout=30
            )
            .stdout.split(":")[-1]
            .strip()
        )
        health = f"http://127.0.0.1:{port}/_devbox/health"
        wait_for(lambda: get(health)[0] == 503, timeout=30)

        def exec_admin(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(
                ["docker", "exec", "-i", name, "/opt/proxy/bin/python", "-m", "proxy.admin",
                 *args],
                input=stdin, capture_output=True, timeout=60,
            )  # fmt: skip

        config = make_config(binding("https://api.example.com"), devbox="img")
        loaded = exec_admin("load", stdin=config.dumps())
        assert (loaded.returncode, loaded.stdout.strip()) == (0, b"ok"), loaded.stderr
        assert get(health) == (
            200,
            {"status": "ok", "devbox": "img", "gateways": 1, "policy": None},
        )
        checked = exec_admin("health")
        assert checked.returncode == 0
        listing = subprocess.run(
            ["docker", "exec", name, "stat", "-c", "%a %u", "/run/devbox/config.json",
             "/run/devbox/admin.sock"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert listing.stdout.split("\n")[:2] == ["600 10001", "600 10001"]
        logs = subprocess.run(["docker", "logs", name], capture_output=True, timeout=30)
        assert SECRET_A.encode() not in logs.stdout + logs.stderr
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
