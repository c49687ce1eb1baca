"""A whole working day with one devbox, through the real CLI in subprocesses, a real server in
the box and a real HTTP client on the host (issue 9, "Done when").

Day 1: the project is mounted, an agent (`devbox exec`) writes code in it and starts its
server, the host reads it through `devbox port-forward`, `devbox cp` brings something in and
a result out, the devbox is stopped and started (the server is started again, the state it
kept is still there), and a snapshot is taken. Day 2: a new devbox from the snapshot, with
the same project and cache volume, carries on from where day 1 stopped, with a gateway token
of its own.

The gateway's secret has a value made for this test. The agent uses the gateway (the
upstream proves it got the secret) and dumps everything it can read into its mount; the
value is then looked for in the mount, the cache volume, every archive cp made (a directory
copied out, a tar on disk and `cp NAME:/ -` of each box), every part of `docker save` of
the snapshot, `docker inspect` of every container, network and image of the day, the store
on disk and everything the CLI printed. Each hunt also looks for something that is there,
so a hunt that reads nothing fails. Everything is deleted at the end, and the test asserts
that nothing of it is left: containers, networks, volumes, images (the snapshot included).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import secrets
import select
import signal
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker.conftest import DEVBOX, RUN, Cli, docker, run_volumes
from tests.docker.days import (
    bearer,
    found_in_save,
    found_in_stream,
    gateway_auth,
    grep_tree,
    leftovers,
    snapshot_images,
    store_id,
    with_gateway,
)

pytestmark = pytest.mark.docker

SECRET = f"sk-ant-day-{RUN}-{secrets.token_hex(16)}"
DAY1, DAY2 = f"{RUN}-day1", f"{RUN}-day2"
SNAPSHOT = "end-of-day-1"
CACHE = f"{RUN}-day-cache"
CODE_MARK = "devbox-working-day-app"  # in the agent's code (in the mount, not the snapshot)
HOME_MARK = f"home-{secrets.token_hex(6)}"  # in the agent's home (so in the snapshot)

APP = f'''\
"""{CODE_MARK}: the agent's web app. GET /visit counts visits in ~/state/visits."""
import json
import pathlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "day-1"
STATE = pathlib.Path.home() / "state" / "visits"


class App(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/visit":
            visits = int(STATE.read_text()) + 1 if STATE.exists() else 1
            STATE.parent.mkdir(exist_ok=True)
            STATE.write_text(str(visits))
        else:
            visits = int(STATE.read_text()) if STATE.exists() else 0
        body = json.dumps({{"version": VERSION, "visits": visits}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("0.0.0.0", 8000), App).serve_forever()
'''

# The agent's own start script, in its home: a snapshot keeps it.
SERVE = (
    "mkdir -p ~/bin && printf '%s\\n' '#!/bin/sh' "
    "'nohup python3 -u /workspace/app.py >>/workspace/server.log 2>&1 &' > ~/bin/serve"
    " && chmod 755 ~/bin/serve"
)
START_SERVER = (
    "~/bin/serve; for i in $(seq 100); do"
    " curl -sf --noproxy '*' -o /dev/null http://127.0.0.1:8000/ && exit 0; sleep 0.1; done;"
    " cat /workspace/server.log; exit 1"
)


def readline(stream, timeout: float = 90.0) -> bytes:
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, "no line in time"
    return stream.readline()


@contextlib.contextmanager
def port_forward(cli: Cli, name: str) -> Iterator[tuple[str, int]]:
    """`devbox port-forward NAME :8000 -o json` as a subprocess, ended with Ctrl-C."""
    proc = subprocess.Popen(
        [*DEVBOX, "port-forward", name, ":8000", "-o", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli.env(),
    )  # fmt: skip
    try:
        line = readline(proc.stdout)
        assert line, proc.communicate(timeout=60)[1].decode()
        info = json.loads(line)
        assert info["remote_port"] == 8000 and info["host"] == "127.0.0.1"
        yield info["host"], info["port"]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        cli.transcript.append(err.decode())
    assert proc.returncode == 0, err.decode()


def get(address: tuple[str, int], path: str) -> dict:
    """A real HTTP request on the host, to the forwarded port (http.client uses no proxy)."""
    conn = http.client.HTTPConnection(*address, timeout=60)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Type") == "application/json"
        return json.loads(resp.read())
    finally:
        conn.close()


def ok(cli: Cli, name: str, script: str) -> str:
    proc = cli.sh(name, script)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def stream_of(cli: Cli, name: str, needles: list[str]) -> tuple[set[str], int]:
    """`devbox cp NAME:/ -`: the whole box as one tar stream, read as it comes."""
    proc = subprocess.Popen([*DEVBOX, "cp", f"{name}:/", "-"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=cli.env())  # fmt: skip
    assert proc.stdout is not None
    found = found_in_stream(iter(lambda: proc.stdout.read(1 << 20), b""), needles)
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()
    return found


def the_days_objects(cli: Cli) -> dict[str, list[str]]:
    """Every container, network, volume and image of the day."""

    def labelled(*cmd: str) -> list[str]:
        return [
            ident
            for box in (DAY1, DAY2)
            for ident in docker(*cmd, "-q", "--filter", f"label=devbox.name={box}").stdout.split()
        ]

    return {
        "containers": labelled("ps", "-a"),
        "networks": labelled("network", "ls"),
        "volumes": [v for v in run_volumes() if CACHE in v],
        "images": snapshot_images(cli),
    }


def test_a_working_day(module_cli: Cli, tmp_path: Path):
    cli = with_gateway(module_cli, SECRET)
    project = tmp_path / "project"
    project.mkdir()
    project.chmod(0o777)  # the box's user writes here (as root on the host: the image user)
    (project / "README.md").write_text("# the project\n")
    out = tmp_path / "out"
    out.mkdir()
    workspace = ["--mount", str(project), "--volume", f"{CACHE}:/home/agent/.cache"]
    try:
        # -- day 1, morning: the devbox, the agent's code and its server -------------------
        made = cli.json("create", DAY1, *workspace, "--gateway", "P=gw:KEY", "--ttl", "1d")
        assert {(m["source"], m["destination"]) for m in made["mounts"]} == {
            (str(project), "/workspace"),
            (CACHE, "/home/agent/.cache"),
        }
        assert made["expires_at"].endswith("Z")
        cli("exec", "-i", DAY1, "--", "sh", "-c", "cat > /workspace/app.py", input=APP)
        assert CODE_MARK in (project / "app.py").read_text()  # written in the box, seen here
        ok(cli, DAY1, SERVE + " && echo warm > ~/.cache/pip-ish")
        ok(cli, DAY1, START_SERVER)
        # The agent calls its model through the gateway (the upstream got the secret) and
        # leaves everything it can read in its mount.
        assert gateway_auth(cli, DAY1) == bearer(SECRET)
        ok(cli, DAY1, "env > /workspace/env.txt; cat /proc/1/environ > /workspace/pid1.env")
        token1 = ok(cli, DAY1, 'printf %s "$P"')
        assert token1.startswith("gwt_") and token1 in (project / "env.txt").read_text()

        # -- the host looks at the app through port-forward --------------------------------
        with port_forward(cli, DAY1) as address:
            assert get(address, "/visit") == {"version": "day-1", "visits": 1}
            assert get(address, "/visit") == {"version": "day-1", "visits": 2}

        # -- cp: a note in, a result out ---------------------------------------------------
        (tmp_path / "todo.txt").write_text(f"{HOME_MARK}: make it count\n")
        cli("cp", str(tmp_path / "todo.txt"), f"{DAY1}:/home/agent/")
        build = (
            "mkdir -p ~/dist && sha256sum /workspace/app.py > ~/dist/app.sha256"
            " && cp ~/todo.txt ~/dist/ && printf '#!/bin/sh\\necho built\\n' > ~/dist/run.sh"
            " && chmod 750 ~/dist/run.sh"
        )
        ok(cli, DAY1, build)
        cli("cp", f"{DAY1}:/home/agent/dist", str(out / "dist"))
        assert (out / "dist" / "todo.txt").read_text() == f"{HOME_MARK}: make it count\n"
        assert (out / "dist" / "run.sh").stat().st_mode & 0o777 == 0o750
        assert "/workspace/app.py" in (out / "dist" / "app.sha256").read_text()
        with (out / "home.tar").open("wb") as tar:
            cli_cp = subprocess.run([*DEVBOX, "cp", f"{DAY1}:/home/agent", "-"], stdout=tar,
                                    stderr=subprocess.PIPE, env=cli.env(), check=False)  # fmt: skip
        assert cli_cp.returncode == 0, cli_cp.stderr.decode()
        with tarfile.open(out / "home.tar") as tar:
            assert "agent/state/visits" in tar.getnames()

        # -- evening: stop; next morning: start, the server again, the state kept ----------
        assert [r["status"] for r in cli.json("stop", DAY1)] == ["stopped"]
        assert cli.json("show", DAY1)["status"] == "stopped"
        assert [r["status"] for r in cli.json("start", DAY1)] == ["running"]
        up = "curl -sf --noproxy '*' -o /dev/null http://127.0.0.1:8000/ && echo up || echo down"
        assert ok(cli, DAY1, up) == "down\n"  # what ran in the box ended with the stop
        ok(cli, DAY1, START_SERVER)
        assert gateway_auth(cli, DAY1) == bearer(SECRET)  # the proxy was configured anew
        assert ok(cli, DAY1, 'printf %s "$P"') == token1
        with port_forward(cli, DAY1) as address:
            assert get(address, "/visit") == {"version": "day-1", "visits": 3}

        # -- snapshot, then day 2 in a new devbox from it -----------------------------------
        snap = cli.json("snapshot", "create", DAY1, SNAPSHOT)
        assert (snap["name"], snap["source"]) == (SNAPSHOT, DAY1)
        assert snap["image"] == f"devbox-snapshot/{store_id(cli)}:{SNAPSHOT}"
        assert [s["name"] for s in cli.json("snapshot", "list")] == [SNAPSHOT]
        cli("stop", DAY1)
        made2 = cli.json("create", DAY2, "--from-snapshot", SNAPSHOT, *workspace,
                         "--gateway", "P=gw:KEY")  # fmt: skip
        assert made2["image"] == snap["image"]
        assert ok(cli, DAY2, "cat ~/state/visits ~/todo.txt ~/.cache/pip-ish") == (
            f"3{HOME_MARK}: make it count\nwarm\n"
        )
        ok(cli, DAY2, "sed -i 's/day-1/day-2/' /workspace/app.py")  # the work goes on
        ok(cli, DAY2, START_SERVER)
        with port_forward(cli, DAY2) as address:
            assert get(address, "/visit") == {"version": "day-2", "visits": 4}
        token2 = ok(cli, DAY2, 'printf %s "$P"')
        assert token2.startswith("gwt_") and token2 != token1
        assert gateway_auth(cli, DAY2) == bearer(SECRET)

        # -- the hunt: the secret's value is nowhere it could have been left ---------------
        needle = SECRET.encode()
        assert grep_tree(project, needle) == [] and grep_tree(project, token1.encode()) != []
        volume = json.loads(docker("volume", "inspect", f"devbox-vol-{CACHE}").stdout)[0]
        assert grep_tree(Path(volume["Mountpoint"]), b"warm") != []
        assert grep_tree(Path(volume["Mountpoint"]), needle) == []
        assert grep_tree(out, needle) == [] and grep_tree(out, HOME_MARK.encode()) != []
        for box in (DAY1, DAY2):
            found, size = stream_of(cli, box, [SECRET, HOME_MARK])
            assert found == {HOME_MARK} and size > 10 << 20, (box, found, size)
        # the snapshot: its files (the agent's home), nothing of the box's config or mount
        saved = found_in_save(snap["image"], [SECRET, token1, CODE_MARK, HOME_MARK])
        assert {n for _, n in saved} == {HOME_MARK}, saved
        day = the_days_objects(cli)
        assert len(day["containers"]) == 4 and len(day["networks"]) == 2, day
        inspected = docker("inspect", *day["containers"], *day["images"]).stdout
        inspected += docker("network", "inspect", *day["networks"]).stdout
        inspected += docker("volume", "inspect", *day["volumes"]).stdout
        assert SECRET not in inspected and token2 in inspected  # a box's env is in inspect
        assert grep_tree(cli.home, needle) == []  # the store holds it sealed only
        assert grep_tree(cli.home, b'"sealed"') != []
        assert SECRET not in "".join(cli.transcript)
    finally:
        cli("delete", DAY1, DAY2, check=False)
        cli("snapshot", "delete", SNAPSHOT, check=False)
        cli("volume", "delete", CACHE, check=False)

    assert leftovers(cli, DAY1, DAY2) == []  # containers, networks, labelled volumes, images
    assert the_days_objects(cli) == {"containers": [], "networks": [], "volumes": [], "images": []}
    assert docker("image", "inspect", snap["image"], check=False).returncode != 0
    assert [v for v in run_volumes() if CACHE in v] == []
