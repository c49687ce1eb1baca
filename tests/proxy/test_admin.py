"""The admin socket and `python -m proxy.admin`: load, health, refusals, file modes."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys

from proxy import admin
from proxy.config import ProxyConfig
from tests.proxy.conftest import SECRET_A, TOKEN_A, binding, make_config


async def run_admin(*args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy.admin",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 30)
    return proc.returncode, out.decode(), err.decode()


async def test_admin_load_and_health_over_the_socket(tmp_path, http_upstream, start_proxy, client):
    config_path = tmp_path / "config.json"
    proxy = await start_proxy(config_path=config_path)
    sock = str(tmp_path / "admin.sock")
    server = await admin.serve(proxy.app, sock)
    try:
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600

        code, out, _ = await run_admin("health", "--socket", sock)
        assert (code, json.loads(out)) == (1, {"status": "unconfigured"})

        config = make_config(binding(http_upstream.url), devbox="agent")
        code, out, err = await run_admin("load", "--socket", sock, stdin=config.dumps())
        assert (code, out.strip(), err) == (0, "ok", "")
        assert stat.S_IMODE(config_path.stat().st_mode) == 0o600
        assert ProxyConfig.loads(config_path.read_bytes()) == config

        code, out, _ = await run_admin("health", "--socket", sock)
        health = json.loads(out)
        assert code == 0
        assert health == {"status": "ok", "devbox": "agent", "gateways": 1, "policy": None}
        async with client.get(
            f"{proxy.url}/gw/ANTHROPIC_API_KEY/x", headers={"x-api-key": TOKEN_A}
        ) as resp:
            assert resp.status == 200
    finally:
        server.close()
        await server.wait_closed()


async def test_admin_load_refuses_bad_config_without_showing_values(tmp_path, start_proxy):
    proxy = await start_proxy(make_config(binding("http://127.0.0.1:9")))
    sock = str(tmp_path / "admin.sock")
    server = await admin.serve(proxy.app, sock)
    try:
        bad = make_config(binding("ftp://127.0.0.1/", credential=SECRET_A)).dumps()
        code, out, err = await run_admin("load", "--socket", sock, stdin=bad)
        assert code == 1 and out == ""
        assert err.startswith("error: ") and err.count("\n") == 1
        assert SECRET_A not in err and TOKEN_A not in err
        assert "endpoint" in err
        # the running config is untouched
        assert proxy.ctx.state.config.gateways[0].endpoint == "http://127.0.0.1:9"

        code, _, err = await run_admin("load", "--socket", sock, stdin=b"{not json")
        assert code == 1 and "not valid JSON" in err

        bad_ca = make_config(binding("https://127.0.0.1:9", ca_cert="garbage")).dumps()
        code, _, err = await run_admin("load", "--socket", sock, stdin=bad_ca)
        assert code == 1 and "ca_cert" in err
    finally:
        server.close()
        await server.wait_closed()


async def test_admin_without_a_running_proxy_exits_2(tmp_path):
    code, out, err = await run_admin("health", "--socket", str(tmp_path / "none.sock"))
    assert code == 2 and out == ""
    assert "not reachable" in err and "Traceback" not in err


async def test_unknown_admin_command_is_refused(tmp_path, start_proxy):
    proxy = await start_proxy()
    sock = str(tmp_path / "admin.sock")
    server = await admin.serve(proxy.app, sock)
    try:
        answer = await asyncio.to_thread(admin.request, "shutdown", path=sock)
        assert answer == "error: unknown admin command"
    finally:
        server.close()
        await server.wait_closed()
