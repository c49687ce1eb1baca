"""A box's limits and hardening against the real engine: the defaults, their flags and
variables, `--runtime`, setuid, and a fork bomb, a memory hog and disk fillers that leave the
box's own proxy and a neighbour devbox working.

Every wait is for an event (a count reached, a command returned) under a deadline that only
bounds the test's run; nothing asserts how fast something happened."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time

import pytest

from tests.conftest import in_ci
from tests.docker.conftest import RUN, Cli, docker

pytestmark = pytest.mark.docker

PREFIX = "LIM_KEY"
SECRET = "sk-limits-" + RUN
CALL = f'curl -sS -m 20 -X POST "${PREFIX}_URL/v1/messages" -H "x-api-key: ${PREFIX}" -d "{{}}"'
AUTH = hashlib.sha256(f"Bearer {SECRET}".encode()).hexdigest()


@pytest.fixture(scope="module")
def cli(module_cli: Cli) -> Cli:
    infra = module_cli.infra
    module_cli("gateway", "create", "lim-gw", "--endpoint", "https://api.anthropic.com",
               "--ca-cert", str(infra.ca_pem))  # fmt: skip
    module_cli("secret", "create", "LIM", input=SECRET)
    module_cli("policy", "create", "lim-pol", "--allow", "api.anthropic.com",
               "--allow-cidr", f"{infra.upstream_ip}/32")  # fmt: skip
    return module_cli


def create(cli: Cli, name: str, *flags: str, env: dict[str, str] | None = None) -> dict:
    return cli.json("create", name, "--gateway", f"{PREFIX}=lim-gw:LIM",
                    "--network-policy", "lim-pol", *flags, env=env)  # fmt: skip


@pytest.fixture(scope="module")
def neighbour(cli: Cli):
    """A devbox with the default limits, beside the boxes that misbehave."""
    name = f"{RUN}-lim-n"
    created = create(cli, name)
    try:
        yield name, created
    finally:
        cli("delete", name, check=False)


@pytest.fixture
def abuser(cli: Cli):
    made: list[str] = []

    def make(suffix: str, *flags: str, env: dict[str, str] | None = None) -> str:
        name = f"{RUN}-lim-{suffix}"
        made.append(name)
        create(cli, name, *flags, env=env)
        return name

    yield make
    for name in made:
        # docker rm -f stops every process of the box, however many there are
        assert cli("delete", name, check=False).returncode == 0


def inspect(container: str) -> dict:
    return json.loads(docker("inspect", container).stdout)[0]


def gateway_call_from(cli: Cli, box: str) -> dict:
    proc = cli.sh(box, CALL)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def gateway_call_inside_proxy(box: str) -> dict:
    """A gateway call made on the proxy's own listener, for a box that can run nothing."""
    env = dict(e.split("=", 1) for e in inspect(f"devbox-{box}")["Config"]["Env"])
    script = (
        "import sys, urllib.request as u\n"
        "r = u.Request('http://127.0.0.1:3128/gw/" + PREFIX + "/v1/messages', data=b'{}',"
        " headers={'x-api-key': sys.stdin.read()})\n"
        "print(u.urlopen(r, timeout=20).read().decode())\n"
    )
    out = docker("exec", "-i", f"devbox-{box}-proxy", "/opt/proxy/bin/python", "-c", script,
                 input=env[PREFIX])  # fmt: skip
    return json.loads(out.stdout)


def assert_others_work(cli: Cli, box: str, neighbour: str) -> None:
    """The box's own proxy answers (health, a gateway call) and the neighbour runs commands
    and reaches its gateway."""
    assert cli.json("show", box)["proxy"]["health"] == "ok"
    assert gateway_call_inside_proxy(box)["auth_sha256"] == AUTH
    assert cli("exec", neighbour, "--", "echo", "alive").stdout == "alive\n"
    assert gateway_call_from(cli, neighbour)["auth_sha256"] == AUTH


def wait_for(what: str, check, deadline_s: float = 120.0):  # type: ignore[no-untyped-def]
    """Poll `check` until it returns a truthy value; the deadline only keeps CI from hanging."""
    deadline = time.monotonic() + deadline_s
    while not (value := check()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)
    return value


# -- defaults, flags, variables ------------------------------------------------------------


def test_the_defaults_are_applied_and_shown(cli: Cli, neighbour):
    name, created = neighbour
    host = inspect(f"devbox-{name}")["HostConfig"]
    ncpu = json.loads(docker("info", "--format", "{{json .NCPU}}").stdout)
    assert host["NanoCpus"] == min(2, ncpu) * 10**9
    assert host["Memory"] == host["MemorySwap"] == 4 << 30
    assert host["PidsLimit"] == 4096
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert {"NET_RAW", "MKNOD", "AUDIT_WRITE", "SYS_CHROOT"} <= set(host["CapDrop"])
    assert host["Tmpfs"]["/tmp"].startswith(f"size={2 << 30},")
    assert host["LogConfig"] == {"Type": "json-file",
                                 "Config": {"max-size": "10m", "max-file": "2"}}  # fmt: skip
    shown = cli.json("show", name)
    assert shown["limits"] == created["limits"] == {
        "cpus": float(min(2, ncpu)), "memory": 4 << 30, "pids": 4096, "tmp_size": 2 << 30,
        "disk": None, "runtime": "runc", "no_new_privileges": True,
        "cap_drop": sorted(host["CapDrop"]),
    }  # fmt: skip
    text = cli("show", name).stdout
    assert "memory 4g" in text and "pids 4096" in text and "no-new-privileges" in text
    inside = cli("exec", name, "--", "sh", "-c", "grep NoNewPrivs /proc/self/status; "
                 "grep ' /tmp ' /proc/mounts").stdout  # fmt: skip
    assert "NoNewPrivs:\t1" in inside and "tmpfs /tmp tmpfs rw,nosuid,nodev" in inside
    proxy = inspect(f"devbox-{name}-proxy")["HostConfig"]
    assert proxy["Memory"] == 512 << 20 and proxy["PidsLimit"] == 256
    assert proxy["CpuShares"] == 2048 and proxy["LogConfig"]["Config"]["max-size"] == "50m"


def test_a_compiled_program_runs_from_tmp(cli: Cli, neighbour):
    # /tmp is a tmpfs, but not noexec: build tools run what they make there.
    name, _ = neighbour
    proc = cli.sh(name, "cp /bin/echo /tmp/built && /tmp/built from-tmp")
    assert proc.stdout == "from-tmp\n", proc.stderr


def test_setuid_binaries_do_not_raise_privileges(cli: Cli, neighbour):
    name, _ = neighbour
    setup = "cp /usr/bin/id /usr/local/bin/suid-id && chmod 4755 /usr/local/bin/suid-id"
    assert cli("exec", "-u", "root", name, "--", "sh", "-c", setup).returncode == 0
    # Without no-new-privileges this prints 0 (root's euid).
    assert cli("exec", name, "--", "/usr/local/bin/suid-id", "-u").stdout == "1000\n"
    su = cli("exec", "-i", name, "--", "su", "-c", "id -u", "root", input="\n", check=False)
    assert su.returncode != 0 and "0\n" not in su.stdout


def test_raw_sockets_and_device_nodes_are_refused_even_to_root(cli: Cli, neighbour):
    name, _ = neighbour
    script = (
        "import socket\n"
        "try:\n socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)\n"
        "except PermissionError: print('raw refused')\n"
        "import os\n"
        "try:\n os.mknod('/tmp/null2', 0o666 | 0o020000, os.makedev(1, 3))\n"
        "except PermissionError: print('mknod refused')\n"
    )
    out = cli("exec", "-u", "root", name, "--", "python3", "-c", script).stdout
    assert out == "raw refused\nmknod refused\n"


def test_flags_beat_variables_which_beat_defaults(cli: Cli, abuser):
    env = {"DEVBOX_MEMORY": "1g", "DEVBOX_PIDS_LIMIT": "300", "DEVBOX_TMP_SIZE": "32m"}
    name = abuser("env", "--memory", "512m", "--cpus", "0.5", env=env)
    host = inspect(f"devbox-{name}")["HostConfig"]
    assert host["Memory"] == 512 << 20  # the flag
    assert host["PidsLimit"] == 300  # the variable
    assert host["Tmpfs"]["/tmp"].startswith(f"size={32 << 20},")
    assert host["NanoCpus"] == 5 * 10**8
    assert cli.json("show", name)["limits"]["pids"] == 300
    assert "cpus 0.5, memory 512m, pids 300, /tmp 32m" in cli("show", name).stdout


def test_the_python_api_takes_and_shows_limits(cli: Cli):
    from devbox_cli import Client

    client = Client(str(cli.home))
    name = f"{RUN}-lim-api"
    try:
        box = client.create_devbox(name, pids_limit=100, memory="unlimited", tmp_size="16m")
        assert box.limits is not None and (box.limits.pids, box.limits.memory) == (100, None)
        shown = client.get_devbox(name).limits
        assert shown == box.limits and shown.tmp_size == 16 << 20
    finally:
        client.delete_devboxes([name])


def test_an_unknown_runtime_lists_the_available_ones(cli: Cli):
    proc = cli("create", f"{RUN}-lim-bad", "--runtime", "runsc", check=False)
    runtimes = sorted(json.loads(docker("info", "--format", "{{json .Runtimes}}").stdout))
    assert proc.returncode == 3
    assert f"(it has: {', '.join(runtimes)})" in proc.stderr


def _has_runtime(name: str) -> bool:
    return name in json.loads(docker("info", "--format", "{{json .Runtimes}}").stdout)


def test_a_devbox_under_crun(cli: Cli, abuser):
    if not _has_runtime("crun"):
        reason = "no crun runtime in this engine: run scripts/ensure-docker.sh as root"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    name = abuser("crun", "--runtime", "crun")
    container = inspect(f"devbox-{name}")
    assert container["HostConfig"]["Runtime"] == "crun"
    assert cli.json("show", name)["limits"]["runtime"] == "crun"
    assert cli("exec", name, "--", "sh", "-c", "echo under-crun").stdout == "under-crun\n"
    assert gateway_call_from(cli, name)["auth_sha256"] == AUTH
    # crun itself keeps the running container's state (runc's containers are unknown to it)
    state = subprocess.run(
        ["crun", "--root", "/run/docker/runtime-runc/moby", "state", container["Id"]],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if state.returncode == 0 or in_ci():
        assert json.loads(state.stdout)["status"] == "running", state.stderr


def test_disk_caps_the_writable_layer_only_where_the_engine_can(cli: Cli, abuser):
    info = json.loads(docker("info", "--format", "{{json .}}").stdout)
    backing = dict(info.get("DriverStatus") or []).get("Backing Filesystem", "")
    driver = info["Driver"]
    if (driver == "overlay2" and backing != "xfs") or driver in ("vfs", "aufs"):
        proc = cli("create", f"{RUN}-lim-disk", "--disk", "128m", check=False)
        assert proc.returncode == 2, proc.stderr
        assert f"this engine's is {driver} on {backing}" in proc.stderr
        return
    name = abuser("disk", "--disk", "128m")  # pragma: no cover (engines with quotas)
    filled = cli.sh(name, "dd if=/dev/zero of=/workspace/fill bs=1M count=256 2>&1; :")
    assert "No space left on device" in filled.stdout


# -- a box that misbehaves -----------------------------------------------------------------


def _pids(container: str) -> int:
    out = docker("stats", "--no-stream", "--format", "{{.PIDs}}", container, check=False)
    return int(out.stdout.strip() or 0) if out.stdout.strip().isdigit() else 0


def test_a_fork_bomb_meets_the_pids_limit(cli: Cli, neighbour, abuser):
    box = abuser("bomb", "--pids-limit", "128")
    # Every process forks for ever, ignoring failures, so the box stays at its limit until
    # it is deleted. The exec returns at once (the bomb runs in the background).
    bomb = "import os\nwhile True:\n  try: os.fork()\n  except OSError: pass\n"
    detached = 's=$(cat); python3 -c "$s" >/dev/null 2>&1 &'
    started = cli("exec", "-i", box, "--", "sh", "-c", detached, input=bomb)
    assert started.returncode == 0, started.stderr
    count = lambda: _pids(f"devbox-{box}")  # noqa: E731
    reached = wait_for("the fork bomb to fill the pids limit", lambda: count() >= 120 and count())
    assert reached <= 128
    # While it rages, everything around it works.
    assert_others_work(cli, box, neighbour[0])
    assert _pids(f"devbox-{box}") >= 120  # still raging


def test_a_memory_hog_is_killed_inside_its_box(cli: Cli, neighbour, abuser):
    box = abuser("hog", "--memory", "256m")
    hog = "chunks = []\nwhile True: chunks.append(b'x' * (16 << 20))\n"
    proc = cli("exec", box, "--", "python3", "-c", hog, check=False)
    assert proc.returncode == 137  # SIGKILL from the box's own OOM killer
    host = inspect(f"devbox-{box}")
    assert host["State"]["Running"] and host["HostConfig"]["Memory"] == 256 << 20
    assert_others_work(cli, box, neighbour[0])
    assert cli("exec", box, "--", "echo", "recovered").stdout == "recovered\n"


def test_a_tmp_filler_stops_at_the_tmpfs_size(cli: Cli, neighbour, abuser):
    box = abuser("fill", "--tmp-size", "64m")
    # at most 1 GiB is asked for; the tmpfs ends it at 64 MiB (memory of the box, not disk)
    proc = cli.sh(box, "dd if=/dev/zero of=/tmp/fill bs=1M count=1024 2>&1; stat -c %s /tmp/fill")
    assert "No space left on device" in proc.stdout
    assert proc.stdout.split()[-1] == str(64 << 20)
    assert_others_work(cli, box, neighbour[0])


def test_a_log_filler_is_rotated(cli: Cli, neighbour, abuser):
    box = abuser("logs")
    # 64 MiB of lines to the box's PID 1 stdout, which is what `docker logs` keeps on disk
    flood = "yes $(head -c 999 /dev/zero | tr '\\0' x) | head -c 67108864 > /proc/1/fd/1"
    assert cli.sh(box, flood).returncode == 0
    kept = subprocess.run(
        ["docker", "logs", f"devbox-{box}"], capture_output=True, timeout=120, check=True
    ).stdout
    assert 0 < len(kept) <= 2 * 10 * 2**20  # two files of 10 MB at most
    assert_others_work(cli, box, neighbour[0])
