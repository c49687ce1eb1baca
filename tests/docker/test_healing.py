"""Self-healing proxies on the real engine. Each way a proxy comes back without its config
(`docker restart`, its PID 1 killed, `docker kill`) fails closed, then heals without a
person: at the next devbox command that touches the devbox, and by a running `devbox watch`.
The proxy's server process killed mid-stream is restarted by its supervisor with its config,
leaking no process or file descriptor. (A daemon restart: tests/docker/test_engine_restart.py,
on the nested engine only.)

What happens inside the box is observed with `docker exec`, never `devbox exec`, which would
heal the proxy before looking.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.support import Follower
from tests.docker.conftest import DEVBOX, RUN, Cli, docker

pytestmark = pytest.mark.docker

SECRET = "sk-heal-0123456789abcdef"
FORWARD = "http://other.example.test/"
HEALTH = "http://proxy:3128/_devbox/health"


@pytest.fixture(scope="module")
def store(module_cli: Cli) -> Cli:
    cli = module_cli
    cli("gateway", "create", "gw", "--endpoint", "https://api.anthropic.com",
        "--ca-cert", str(cli.infra.ca_pem))  # fmt: skip
    cli("secret", "create", "KEY", input=SECRET)
    cli("policy", "create", "open", "--allow-all", "--allow-cidr", cli.infra.subnet)
    return cli


@pytest.fixture(scope="module")
def box(store: Cli):
    name = f"{RUN}-heal"
    store("create", name, "--gateway", "KEY=gw:KEY", "--network-policy", "open")
    try:
        yield name
    finally:
        store("delete", name, check=False)


# -- looking from inside the box, without healing it ---------------------------------------------


def inside(name: str, script: str) -> str:
    return docker("exec", f"devbox-{name}", "sh", "-c", script, check=False).stdout


def code(name: str, url: str, *flags: str) -> str:
    return inside(name, f"curl -s -o /dev/null -m 10 -w '%{{http_code}}' {' '.join(flags)} {url}")


def gateway_auth(name: str) -> str:
    out = inside(
        name,
        'curl -s -m 10 -X POST "$KEY_URL/v1/messages" -H "Authorization: Bearer $KEY" -d "{}"',
    )
    try:
        return json.loads(out)["auth_sha256"]
    except (ValueError, KeyError):
        return out


def serves(name: str) -> bool:
    """The proxy holds its whole config again: forward requests and the gateway credential."""
    expected = hashlib.sha256(f"Bearer {SECRET}".encode()).hexdigest()
    return code(name, FORWARD) == "200" and gateway_auth(name) == expected


def assert_fails_closed(name: str) -> None:
    """No request passes an unconfigured proxy: forward, CONNECT, gateway, health all 503."""
    assert code(name, HEALTH) == "503"
    assert code(name, FORWARD) == "503"
    assert gateway_auth(name) != hashlib.sha256(f"Bearer {SECRET}".encode()).hexdigest()
    tunnel = inside(
        name, "curl -s -o /dev/null -m 10 -w '%{http_connect}' https://www.anthropic.com/"
    )
    assert tunnel == "503"
    assert code(name, "http://proxy:3128/gw/KEY/v1/messages", "-x", "http://proxy:3128") == "503"


def inspect(container: str) -> dict:
    return json.loads(docker("inspect", container).stdout)[0]


def wait_for(predicate, what: str, timeout: float = 90.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return result


# -- the faults ----------------------------------------------------------------------------------


def restart(name: str) -> None:
    docker("restart", "-t", "1", f"devbox-{name}-proxy")


def kill_pid1(name: str) -> None:
    """SIGKILL of the proxy container's PID 1 from the host: a crash the restart policy
    (unless-stopped) brings back."""
    proxy = f"devbox-{name}-proxy"
    before = inspect(proxy)
    os.kill(before["State"]["Pid"], signal.SIGKILL)
    wait_for(
        lambda: (
            (s := inspect(proxy))["RestartCount"] > before["RestartCount"] and s["State"]["Running"]
        ),
        "the restart policy to restart the proxy",
    )


def docker_kill(name: str, *, watched: bool = False) -> None:
    """`docker kill`: a stop by hand, which the restart policy leaves stopped. Under a
    running `devbox watch` (watched) the proxy may be started again before a poll sees it
    stopped, so the kill is known by its new FinishedAt."""
    proxy = f"devbox-{name}-proxy"
    before = inspect(proxy)["State"]["FinishedAt"]
    docker("kill", proxy)
    state = wait_for(lambda: (s := inspect(proxy)["State"])["FinishedAt"] != before and s, "exit")
    if not watched:
        assert state["Status"] == "exited"  # not "restarting": nothing brings it back by itself


FAULTS = {"restart": restart, "pid1-sigkill": kill_pid1, "docker-kill": docker_kill}


def came_back_unconfigured(name: str, fault: str) -> None:
    if fault == "docker-kill":
        assert code(name, FORWARD) == "000"  # no proxy at all: nothing leaves either
        return
    wait_for(lambda: code(name, HEALTH) == "503", "the restarted proxy to answer")
    assert_fails_closed(name)


# -- the next command heals ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "command"),
    [
        ("restart", ["exec", "{name}", "--", "true"]),
        ("pid1-sigkill", ["show", "{name}"]),
        ("docker-kill", ["exec", "{name}", "--", "true"]),
        ("restart", ["logs", "{name}"]),
        ("pid1-sigkill", ["shell", "{name}"]),
        ("restart", ["cp", "{name}:/etc/hostname", "-"]),
        ("docker-kill", ["cp", "{name}:/etc/hostname", "-"]),
    ],
    ids=[
        "restart-exec",
        "pid1-show",
        "kill-exec",
        "restart-logs",
        "pid1-shell",
        "restart-cp",
        "kill-cp",
    ],
)
def test_a_fault_fails_closed_until_the_next_command_heals_it(store: Cli, box: str, fault, command):
    FAULTS[fault](box)
    came_back_unconfigured(box, fault)
    listed = {d["name"]: d for d in store.json("list")}[box]
    assert listed["proxy"]["configured"] is (None if fault == "docker-kill" else False)
    proc = store(*[a.format(name=box) for a in command], input="exit 0\n")
    assert "warning" not in proc.stderr
    assert serves(box)
    assert {d["name"]: d for d in store.json("list")}[box]["proxy"]["configured"] is True


def test_exec_heals_before_the_command_runs(store: Cli, box: str):
    restart(box)
    came_back_unconfigured(box, "restart")
    proc = store("exec", box, "--", "curl", "-s", "-m", "10", FORWARD)
    assert proc.stdout == "hello from other.example.test\n"  # the very command had egress


def test_the_python_api_heals_every_devbox_of_the_store(store: Cli, box: str):
    restart(box)
    came_back_unconfigured(box, "restart")
    code_ = "import json\nfrom devbox_cli import Client\n" + (
        "print(json.dumps([r.to_json() for r in Client().heal_all()]))"
    )
    proc = subprocess.run([sys.executable, "-c", code_], capture_output=True, text=True,
                          env=store.env(), timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    healed = {r["devbox"]: r["action"] for r in json.loads(proc.stdout)}
    assert healed == {box: "pushed"}  # this store has one devbox here
    assert serves(box)
    again = subprocess.run([sys.executable, "-c", code_], capture_output=True, text=True,
                           env=store.env(), timeout=120, check=False)  # fmt: skip
    assert {r["devbox"]: r["action"] for r in json.loads(again.stdout)} == {box: "none"}


def test_list_tells_an_unconfigured_proxy_without_an_exec(store: Cli, box: str):
    restart(box)
    came_back_unconfigured(box, "restart")
    execs = inspect(f"devbox-{box}-proxy")["ExecIDs"] or []
    assert {d["name"]: d for d in store.json("list")}[box]["proxy"]["configured"] is False
    row = [r for r in store("list", env={"COLUMNS": "200"}).stdout.splitlines() if box in r]
    assert row[0].split()[1:3] == ["running", "unconfigured"]
    assert (inspect(f"devbox-{box}-proxy")["ExecIDs"] or []) == execs  # list ran no exec
    assert code(box, HEALTH) == "503"  # and healed nothing
    shown = store.json("show", box)  # show heals, then checks
    assert shown["proxy"]["health"] == "ok" and shown["proxy"]["configured"] is True
    assert {d["name"]: d for d in store.json("list")}[box]["proxy"]["configured"] is True


def test_another_store_never_heals_my_devbox(store: Cli, box: str, tmp_path_factory):
    theirs = Cli(tmp_path_factory.mktemp("home-theirs"), store.infra)
    restart(box)
    came_back_unconfigured(box, "restart")
    assert theirs("exec", box, "--", "true").returncode == 0  # their command still runs
    assert code(box, HEALTH) == "503"  # but nothing of theirs was pushed
    store("exec", box, "--", "true")
    assert serves(box)


def test_a_heal_that_cannot_open_the_store_warns_and_the_command_still_runs(
    infra, tmp_path_factory
):
    cli = Cli(tmp_path_factory.mktemp("home-locked"), infra)
    phrase = {"DEVBOX_PASSPHRASE": "correct horse battery staple"}
    cli("gateway", "create", "gw", "--endpoint", "https://api.anthropic.com",
        "--ca-cert", str(infra.ca_pem), env=phrase)  # fmt: skip
    cli("secret", "create", "KEY", input=SECRET, env=phrase)  # the key is protected from birth
    name = f"{RUN}-locked"
    cli("create", name, "--gateway", "KEY=gw:KEY", env=phrase)
    try:
        restart(name)
        wait_for(lambda: code(name, HEALTH) == "503", "the restarted proxy")
        proc = cli("exec", name, "--", "echo", "ran", input="")  # no terminal: no prompt
        assert proc.stdout == "ran\n"
        assert "warning: the proxy of devbox" in proc.stderr
        assert "DEVBOX_PASSPHRASE" in proc.stderr and f"devbox repair {name}" in proc.stderr
        assert SECRET not in proc.stderr
        assert code(name, HEALTH) == "503"  # still failing closed
        cli("exec", name, "--", "true", env=phrase)
        assert code(name, HEALTH) == "200"
    finally:
        cli("delete", name, check=False)


# -- the server process: the supervisor restarts it, with its config -----------------------------


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def processes(container: str) -> list[str]:
    """`STAT COMMAND` of every process in the container."""
    out = docker("top", container, "-eo", "pid,stat,args").stdout.splitlines()[1:]
    return [line.split(None, 1)[1] for line in out if line.strip()]


def kill_server_mid_stream(box: str, supervisor: int, out: str) -> None:
    """Start a stream through the proxy, then SIGKILL its server while the supervisor is
    held: the stream is cut and nothing goes out until the supervisor starts a new one."""
    inside(
        box, f"(curl -sN -m 120 {FORWARD}stream > {out}; echo exit $? >> {out}) >/dev/null 2>&1 &"
    )
    wait_for(lambda: "tick 2" in inside(box, f"cat {out}"), "the stream to flow")
    os.kill(supervisor, signal.SIGSTOP)  # it restarts the server only once let go
    try:
        (server,) = children(supervisor)
        os.kill(server, signal.SIGKILL)
        ended = wait_for(lambda: "exit" in (t := inside(box, f"cat {out}")) and t, "the cut")
        assert "exit 0" not in ended  # the stream was cut, not finished
        assert code(box, FORWARD) == "000"  # no server: nothing goes out meanwhile
    finally:
        os.kill(supervisor, signal.SIGCONT)


def test_the_server_killed_mid_stream_is_restarted_configured_and_nothing_leaks(
    store: Cli, box: str
):
    proxy = f"devbox-{box}-proxy"
    started = inspect(proxy)["State"]["StartedAt"]
    supervisor = inspect(proxy)["State"]["Pid"]
    supervisor_fds = fds(supervisor)
    server_fds = []
    for round_ in range(3):
        kill_server_mid_stream(box, supervisor, f"/tmp/stream-{round_}")
        wait_for(lambda: code(box, HEALTH) == "200", "the supervisor to restart the server")
        assert serves(box)  # the restarted server reloaded its config: no command needed
        server_fds.append(fds(children(supervisor)[0]))
    assert inspect(proxy)["State"]["StartedAt"] == started  # the container never restarted
    assert {d["name"]: d for d in store.json("list")}[box]["proxy"]["configured"] is True
    assert fds(supervisor) == supervisor_fds
    assert server_fds[1] == server_fds[2], server_fds  # each new server as lean as the last
    procs = processes(proxy)
    assert len(procs) == 2, procs  # the supervisor and one server, no zombie left behind
    assert not [p for p in procs if p.startswith("Z")], procs


# -- devbox watch heals within seconds -----------------------------------------------------------


def test_watch_heals_each_fault_without_a_command(store: Cli, box: str):
    watch = Follower([*DEVBOX, "watch", "-o", "json"], store.env())
    try:
        watch.wait_for(lambda line: json.loads(line)["action"] == "swept")
        for fault in ("restart", "pid1-sigkill", "docker-kill"):
            if fault == "docker-kill":
                docker_kill(box, watched=True)
            else:
                FAULTS[fault](box)
            healed = json.loads(
                watch.wait_for(
                    lambda line: (
                        (e := json.loads(line))["devbox"] == box
                        and e["action"] in ("pushed", "started", "failed")
                    )
                )
            )
            assert healed["action"] == ("started" if fault == "docker-kill" else "pushed"), healed
            wait_for(lambda: serves(box), f"egress after {fault}")
        assert watch.stop() == 0
    finally:
        watch.kill()
    assert json.loads(watch.lines[-1])["action"] == "stopped"
    assert SECRET not in "\n".join(watch.lines)
