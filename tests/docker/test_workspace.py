"""Workspace in and out, end to end on the real engine with real files: `create --mount`
(owned by the invoking user, checked as a NON-root user), `create --volume` and `devbox
volume list|delete`, and `devbox cp` both ways, attacked by the box it copies from.

Everything is named after the run (devboxes `<RUN>-ws-...`, volumes `<RUN>-...`), and the
last test asserts that nothing of this module is left in the engine."""

from __future__ import annotations

import io
import itertools
import json
import os
import secrets
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from pathlib import Path

import pytest

from tests.docker.conftest import DEVBOX, IMAGES, REPO, RUN, Cli, docker, residue, run_volumes
from tests.docker.days import grep_tree

pytestmark = pytest.mark.docker

SECRET = f"sk-ant-workspace-{RUN}-{secrets.token_hex(8)}"
MADE: list[str] = []  # every devbox this module creates, for the final residue check


@pytest.fixture(scope="module")
def store(module_cli: Cli):
    cli = module_cli
    cli("gateway", "create", "gw", "--endpoint", "https://api.anthropic.com",
        "--ca-cert", str(cli.infra.ca_pem))  # fmt: skip
    cli("secret", "create", "KEY", input=SECRET)
    return cli


@pytest.fixture
def boxes(store: Cli):
    """create(suffix, *args) makes devbox <RUN>-ws-<suffix>; all are deleted afterwards, and
    the volumes they named (a volume outlives its devbox, so the test removes it)."""
    made: list[str] = []
    volumes: list[str] = []

    def create(suffix: str, *args: str, cli: Cli = store) -> str:
        name = f"{RUN}-ws-{suffix}"
        made.append(name)
        MADE.append(name)
        volumes.extend(v.split(":")[0] for f, v in itertools.pairwise(args) if f == "--volume")
        cli("create", name, *args)
        return name

    yield create
    for name in made:
        store("delete", name, check=False)
        assert residue(name) == []
    if volumes:
        docker("volume", "rm", "-f", *(f"devbox-vol-{v}" for v in volumes), check=False)


def volume(name: str) -> str:
    return f"{RUN}-{name}"


def inspect_volume(name: str) -> dict | None:
    proc = docker("volume", "inspect", f"devbox-vol-{volume(name)}", check=False)
    return json.loads(proc.stdout)[0] if proc.returncode == 0 else None


# -- mounts -------------------------------------------------------------------------------


def python_for(uid: int, gid: int, home: Path) -> list[str] | None:
    """A command running this checkout's CLI as uid:gid with only the engine socket's group
    added (for this process alone), or None when no interpreter here is open to that uid."""
    sock = (os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock").removeprefix("unix://")
    as_user = ["setpriv", f"--reuid={uid}", f"--regid={gid}", f"--groups={os.stat(sock).st_gid}"]
    site = sysconfig.get_paths()["purelib"]
    env = ["env", f"HOME={home}", f"PYTHONPATH={REPO}:{site}"]
    for python in dict.fromkeys([os.path.realpath(sys.executable), "/usr/bin/python3"]):
        probe = [*as_user, *env, python, "-c", "import devbox_cli.cli, docker, nacl, typer"]
        if shutil.which(python) and subprocess.run(probe, capture_output=True).returncode == 0:
            return [*as_user, *env, python, "-m", "devbox_cli"]
    return None


@pytest.fixture
def stranger():
    """A throwaway uid:gid that owns nothing on this machine and is in no passwd file, with
    a home of its own (outside pytest's root-only temp root)."""
    if os.getuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the CLI as another user")
    taken = {p.split(":")[2] for p in Path("/etc/passwd").read_text().splitlines() if ":" in p}
    uid = next(u for u in range(46000 + secrets.randbelow(1000), 60000) if str(u) not in taken)
    home = Path(tempfile.mkdtemp(prefix=f"devbox-{RUN}-stranger-"))
    for path in (home, home / "store", home / "project", home / "docs"):
        path.mkdir(exist_ok=True)
        os.chown(path, uid, uid)
    home.chmod(0o755)
    yield uid, home
    shutil.rmtree(home, ignore_errors=True)


def test_files_the_agent_writes_in_a_mount_are_the_invoking_users(stranger, infra, boxes):
    uid, home = stranger
    cmd = python_for(uid, uid, home)
    if cmd is None:
        pytest.skip("no Python interpreter here that another uid may run")
    (home / "project" / "main.py").write_text("print('hi')\n")
    os.chown(home / "project" / "main.py", uid, uid)
    name = f"{RUN}-ws-stranger"
    MADE.append(name)
    env = {"DEVBOX_HOME": str(home / "store"), "DEVBOX_EGRESS_NETWORK": infra.egress}
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVBOX_")} | env

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env,
                              timeout=180, check=False)  # fmt: skip

    try:
        made = cli("create", name, "--mount", str(home / "project"),
                   "--mount", f"{home / 'docs'}:/home/agent/docs:ro",
                   "--volume", f"{volume('stranger')}:/home/agent/cache", "-o", "json")  # fmt: skip
        assert made.returncode == 0, made.stderr
        mounts = json.loads(made.stdout)["mounts"]
        assert {(m["source"], m["destination"], m["read_only"]) for m in mounts} == {
            (str(home / "project"), "/workspace", False),
            (str(home / "docs"), "/home/agent/docs", True),
            (volume("stranger"), "/home/agent/cache", False),
        }
        script = (
            "id -u; id -g; whoami; echo $HOME; echo out > /workspace/made.txt;"
            " mkdir -p /workspace/pkg/sub; touch /workspace/pkg/sub/x ~/.profile-edit ~/cache/c;"
            " touch ~/docs/no 2>/dev/null && echo WROTE-RO || echo ro-refused"
        )
        proc = cli("exec", name, "--", "sh", "-c", script)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == [str(uid), str(uid), "agent", "/home/agent", "ro-refused"]
        for path in ("made.txt", "pkg", "pkg/sub", "pkg/sub/x", "main.py"):
            st = (home / "project" / path).lstat()
            assert (st.st_uid, st.st_gid) == (uid, uid), path
        assert not (home / "docs" / "no").exists()
        assert cli("show", name, "-o", "json").returncode == 0
    finally:
        delete = cli("delete", name)
        docker("volume", "rm", "-f", f"devbox-vol-{volume('stranger')}", check=False)
    assert delete.returncode == 0, delete.stderr
    assert residue(name) == []


def test_as_root_the_box_keeps_the_image_user(store, boxes, tmp_path):
    """Invoked as root, the box's user stays the image's (uid 1000 in the default image):
    root on the host owns nothing the agent writes, and reads it all anyway."""
    project = tmp_path / "project"
    project.mkdir()
    project.chmod(0o777)
    name = boxes("root", "--mount", str(project))
    assert store.sh(name, "id -u && touch /workspace/by-agent").stdout.strip() == "1000"
    assert (project / "by-agent").stat().st_uid == 1000
    assert docker("inspect", "-f", "{{.Config.User}}", f"devbox-{name}").stdout.strip() == "agent"


def test_a_mount_holds_only_what_was_checked(store, boxes, tmp_path):
    """A host mount below the source is not passed on (non-recursive): the box gets the
    directory devbox checked, not what is mounted under it."""
    project = tmp_path / "p"
    (project / "under").mkdir(parents=True)
    (project / "under" / "checked").write_text("x")
    tmpfs = ["mount", "-t", "tmpfs", "-o", "size=1m", "devbox-test", str(project / "under")]
    over = subprocess.run(tmpfs, capture_output=True)
    if over.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {over.stderr.decode().strip()}")
    try:
        (project / "under" / "mounted-later").write_text("y")
        name = boxes("nonrec", "--mount", f"{project}:/workspace:ro")
        assert store.sh(name, "ls /workspace/under").stdout.split() == ["checked"]
    finally:
        subprocess.run(["umount", str(project / "under")], check=True)
    proxy = json.loads(docker("inspect", f"devbox-{name}-proxy").stdout)[0]
    assert [m for m in proxy["Mounts"] if m["Type"] in ("bind", "volume")] == []  # box only


# -- volumes ------------------------------------------------------------------------------


def test_a_volume_outlives_its_devbox_and_is_deleted_only_when_asked(store, boxes):
    first = boxes("vol-a", "--volume", f"{volume('data')}:/data")
    labels = inspect_volume("data")["Labels"]
    assert labels["devbox.role"] == "volume" and labels["devbox.volume"] == volume("data")
    assert labels["devbox.store"] and labels["devbox.version"]
    assert (
        store.sh(first, "echo kept > /data/f && ls -ld /data | cut -d' ' -f3").stdout.strip()
        == "agent"
    )
    store("delete", first)
    assert inspect_volume("data") is not None  # deleting a devbox never deletes its volumes
    second = boxes("vol-b", "--volume", f"{volume('data')}:/srv/data:ro")
    assert store.sh(second, "cat /srv/data/f").stdout == "kept\n"
    listed = {v["name"]: v for v in store.json("volume", "list")}
    assert listed[volume("data")]["used_by"] == [second]
    proc = store("volume", "delete", volume("data"), check=False)
    assert proc.returncode == 4 and f"used by devbox(es) {second}" in proc.stderr
    assert f"devbox delete {second}" in proc.stderr
    gone = store.json("volume", "delete", volume("data"), "--force")
    assert gone == [{"name": volume("data"), "deleted": True, "devboxes_deleted": [second]}]
    assert inspect_volume("data") is None and residue(second) == []
    proc = store("volume", "delete", volume("data"), check=False)
    assert proc.returncode == 3 and f"no volume {volume('data')}" in proc.stderr


def test_volumes_devbox_did_not_make_are_refused(store, boxes, tmp_path_factory):
    docker("volume", "create", f"devbox-vol-{volume('handmade')}")
    other = Cli(tmp_path_factory.mktemp("other-store"), store.infra)
    name = f"{RUN}-ws-refused"
    try:
        proc = store("create", name, "--volume", f"{volume('handmade')}:/x", check=False)
        assert proc.returncode == 4 and "devbox did not make it" in proc.stderr
        assert residue(name) == []
        neighbour = boxes("neighbour", "--volume", f"{volume('theirs')}:/x", cli=other)
        other("delete", neighbour)  # the volume stays: the other store's
        proc = store("create", name, "--volume", f"{volume('theirs')}:/x", check=False)
        assert proc.returncode == 4 and "another devbox store" in proc.stderr
        assert residue(name) == []
        assert volume("theirs") not in {v["name"] for v in store.json("volume", "list")}
        proc = store("volume", "delete", volume("theirs"), check=False)
        assert proc.returncode == 4 and "its own store made" in proc.stderr
        assert inspect_volume("theirs") is not None
        other("volume", "delete", volume("theirs"))
    finally:
        docker("volume", "rm", "-f", f"devbox-vol-{volume('handmade')}",
               f"devbox-vol-{volume('theirs')}", check=False)  # fmt: skip


def test_a_volume_another_container_uses_is_never_deleted(store, boxes):
    name = boxes("shared", "--volume", f"{volume('shared')}:/data")
    store("delete", name)
    container = f"{RUN}-ws-squatter"
    docker("run", "-d", "--name", container, "--label", f"devbox.test={RUN}",
           "-v", f"devbox-vol-{volume('shared')}:/x", "--entrypoint", "sleep",
           IMAGES.default, "infinity")  # fmt: skip
    try:
        proc = store("volume", "delete", volume("shared"), "--force", check=False)
        assert proc.returncode == 4 and "not this store's devboxes" in proc.stderr
        assert container in proc.stderr and inspect_volume("shared") is not None
    finally:
        docker("rm", "-f", container)
    store("volume", "delete", volume("shared"))


# -- cp -----------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path):
    src = tmp_path / "src"
    (src / "sub" / "empty").mkdir(parents=True)
    (src / "run.sh").write_text("#!/bin/sh\necho run\n")
    (src / "run.sh").chmod(0o750)
    (src / "secret-ish").write_text("private")
    (src / "secret-ish").chmod(0o600)
    (src / "sub" / "link").symlink_to("../run.sh")
    os.link(src / "run.sh", src / "hard")
    os.utime(src / "run.sh", (1_600_000_000, 1_600_000_000))
    return src


def test_cp_round_trip_keeps_modes_links_and_times(store, boxes, tree, tmp_path):
    name = boxes("cp")
    result = store.json("cp", str(tree), f"{name}:/workspace/")
    assert result["destination"] == f"{name}:/workspace/" and result["bytes"] > 0
    script = (
        "cd /workspace/src && stat -c '%n %U %a' run.sh secret-ish sub sub/empty"
        " && readlink sub/link && stat -c %h run.sh && sh run.sh"
    )
    listing = store.sh(name, script).stdout.split("\n")
    assert listing[:4] == ["run.sh agent 750", "secret-ish agent 600", "sub agent 755",
                           "sub/empty agent 755"]  # fmt: skip
    assert listing[4:7] == ["../run.sh", "2", "run"]
    store("cp", f"{name}:/workspace/src", str(tmp_path / "back"))
    back = tmp_path / "back"
    assert (back / "run.sh").read_text() == (tree / "run.sh").read_text()
    assert (back / "run.sh").stat().st_mode & 0o777 == 0o750
    assert (back / "secret-ish").stat().st_mode & 0o777 == 0o600
    assert (back / "run.sh").stat().st_mtime == 1_600_000_000
    assert os.readlink(back / "sub" / "link") == "../run.sh"
    assert (back / "hard").stat().st_ino == (back / "run.sh").stat().st_ino
    assert (back / "sub" / "empty").is_dir()
    assert (back / "run.sh").stat().st_uid == os.getuid()
    # docker cp's rules: into an existing directory; /. for contents; a file renamed
    (tmp_path / "into").mkdir()
    store("cp", f"{name}:/workspace/src", str(tmp_path / "into"))
    assert (tmp_path / "into" / "src" / "run.sh").exists()
    store("cp", f"{name}:/workspace/src/.", str(tmp_path / "into"))
    assert (tmp_path / "into" / "run.sh").exists()
    store("cp", str(tree / "run.sh"), f"{name}:/workspace/renamed.sh")
    assert store.sh(name, "cat /workspace/renamed.sh").stdout == "#!/bin/sh\necho run\n"
    store("cp", f"{name}:/workspace/renamed.sh", str(tmp_path / "one.sh"))
    assert (tmp_path / "one.sh").read_text().endswith("echo run\n")


def test_cp_tar_streams_on_stdin_and_stdout(store, boxes, tree, tmp_path):
    name = boxes("cptar")
    # a raw stream goes in as it is, owners included (as docker cp - does)
    tar = ["tar", "-C", str(tree), "--owner=1000", "--group=1000", "--numeric-owner", "-c", "."]
    packed = subprocess.run(tar, capture_output=True, check=True)
    store("cp", "-", f"{name}:/workspace", input=packed.stdout, text=False)
    assert store.sh(name, "stat -c %U:%a /workspace/run.sh && sh /workspace/run.sh").stdout == (
        "agent:750\nrun\n"
    )
    out = store("cp", f"{name}:/workspace", "-", text=False)
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
        names = tar.getnames()
    assert "workspace/run.sh" in names and "workspace/sub/link" in names


def test_cp_errors_are_clear(store, boxes, tmp_path):
    name = boxes("cperr")
    (tmp_path / "f").write_text("x")
    for args, code, message in [
        ([f"{name}:/nope", str(tmp_path)], 3, f"no /nope in devbox {name}"),
        ([str(tmp_path / "nope"), f"{name}:/workspace"], 3, "no such file or directory"),
        ([str(tmp_path / "f"), f"{RUN}-ws-ghost:/workspace"], 3, f"no devbox {RUN}-ws-ghost"),
        ([str(tmp_path / "f"), f"{name}:/no/such/dir"], 3, "no directory /no/such in the box"),
        ([str(tmp_path), f"{name}:/etc/hostname"], 2, "cannot copy a directory to the file"),
        ([f"{name}:/etc", str(tmp_path / "f")], 2, "cannot copy a directory to the file"),
        ([f"{name}:/etc/hostname/", str(tmp_path)], 2, "is not a directory"),
        ([str(tmp_path / "f"), f"{name}:/tmp"], 2, "is a tmpfs"),
        ([f"{name}:/workspace", str(tmp_path / "missing" / "x")], 3, "no directory"),
    ]:
        proc = store("cp", *args, check=False)
        assert proc.returncode == code, (args, proc.stderr)
        assert message in proc.stderr and "hint:" in proc.stderr and "Traceback" not in proc.stderr


def test_cp_works_on_a_stopped_devbox(store, boxes, tmp_path):
    name = boxes("stopped")
    store.sh(name, "echo result > /workspace/out")
    docker("stop", "-t", "1", f"devbox-{name}")
    (tmp_path / "in").write_text("input")
    store("cp", f"{name}:/workspace/out", str(tmp_path / "out"))
    store("cp", str(tmp_path / "in"), f"{name}:/workspace/in")
    assert (tmp_path / "out").read_text() == "result\n"
    docker("start", f"devbox-{name}")
    assert store.sh(name, "stat -c '%U %s' /workspace/in").stdout == "agent 5\n"


def test_a_hostile_box_cannot_make_cp_write_outside(store, boxes, tmp_path):
    """The agent plants escaping symlinks, a setuid binary and a symlink at the host
    destination (through its mount); cp leaves them out, names them, and writes nothing
    outside the destination."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("untouched")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    name = boxes("hostile", "--mount", f"{shared}:/workspace")
    planted = store.sh(
        name,
        f"""set -e; mkdir -p /home/agent/loot/sub; cd /home/agent/loot
        echo ok > good; ln -s /etc/passwd abs; ln -s ../../../../outside/victim up
        ln -s . here; ln -s here/../../x climb; cp /bin/true su; chmod 4755 su
        ln -s {outside} /workspace/trap; ln -s {outside}/victim /workspace/victim""",
    )
    assert planted.returncode == 0, planted.stderr
    dest = tmp_path / "dest"
    dest.mkdir()
    proc = store("cp", f"{name}:/home/agent/loot", str(dest), check=False)
    assert proc.returncode == 1, proc.stderr
    assert "leaving out 4" in proc.stderr
    for why in ("symlink to absolute path '/etc/passwd'", "leaves the copy", "setuid"):
        assert why in proc.stderr
    loot = dest / "loot"
    assert sorted(os.listdir(loot)) == ["good", "here", "sub"]
    assert (loot / "good").read_text() == "ok\n"
    # the symlink the box planted in the mount: named as the destination it is refused...
    proc = store("cp", f"{name}:/home/agent/loot/good", str(shared / "trap"), check=False)
    assert proc.returncode == 2 and "is a symlink" in proc.stderr
    # ... and met at the copy's own name it is replaced, never written through
    store.sh(name, "echo box > /home/agent/victim")
    store("cp", f"{name}:/home/agent/victim", str(shared))
    assert not (shared / "victim").is_symlink() and (shared / "victim").read_text() == "box\n"
    assert (outside / "victim").read_text() == "untouched" and os.listdir(outside) == ["victim"]


def test_a_large_copy_streams_with_bounded_memory(store, boxes, tmp_path):
    """A 1 GiB file each way; the CLI's peak RSS stays far below it (measured with wait4)."""
    big = tmp_path / "big.bin"
    block = secrets.token_bytes(1 << 20)
    with big.open("wb") as f:
        for _ in range(1024):
            f.write(block)
    name = boxes("big")

    def peak_rss_mb(*args: str) -> float:
        # ru_maxrss counts a child's pages from before its exec, and a child forked from
        # this (large) pytest process starts with pytest's: a small Python forks the CLI.
        measure = (
            "import os, sys\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    os.execv(sys.argv[1], sys.argv[1:])\n"
            "_, status, usage = os.wait4(pid, 0)\n"
            "print(usage.ru_maxrss, os.waitstatus_to_exitcode(status))\n"
        )
        argv = [*DEVBOX, *args]
        proc = subprocess.run([sys.executable, "-c", measure, shutil.which(argv[0]) or argv[0],
                               *argv[1:]], capture_output=True, text=True, env=store.env(),
                              timeout=900, check=False)  # fmt: skip
        maxrss, code = proc.stdout.split()[-2:]
        assert code == "0", proc.stdout + proc.stderr
        return int(maxrss) / 1024

    into = peak_rss_mb("cp", str(big), f"{name}:/workspace/big.bin")
    assert store.sh(name, "stat -c %s /workspace/big.bin").stdout.strip() == str(1 << 30)
    big.unlink()
    out = peak_rss_mb("cp", f"{name}:/workspace/big.bin", str(tmp_path / "back.bin"))
    back = tmp_path / "back.bin"
    assert back.stat().st_size == 1 << 30
    with back.open("rb") as f:
        assert f.read(1 << 20) == block and (f.seek(-(1 << 20), 2), f.read())[1] == block
    print(f"peak RSS: into the box {into:.0f} MB, out of it {out:.0f} MB")
    assert into < 200 and out < 200, (into, out)


# -- the secret ---------------------------------------------------------------------------


def test_the_secret_is_in_no_mount_volume_or_archive(store, boxes, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    project.chmod(0o777)
    name = boxes("secret", "--gateway", "API=gw:KEY", "--mount", str(project),
                 "--volume", f"{volume('secret')}:/home/agent/cache")  # fmt: skip
    # The agent dumps everything it can reach into its mount and its volume.
    dump = (
        "env > /workspace/env.txt && cp /proc/self/environ /workspace/"
        " && env > ~/cache/env.txt && cat /proc/1/environ > ~/cache/pid1"
    )
    dumped = store.sh(name, dump)
    assert dumped.returncode == 0, dumped.stderr
    token = store.sh(name, 'printf %s "$API"').stdout
    assert token.startswith("gwt_") and (project / "env.txt").read_text().count(token) == 1
    needle = SECRET.encode()
    assert grep_tree(project, needle) == []
    mountpoint = inspect_volume("secret")["Mountpoint"]
    assert os.path.isdir(mountpoint) and grep_tree(Path(mountpoint), needle) == []
    # the whole box as one archive, read as a stream, and a copy out of it
    proc = subprocess.Popen(
        [*DEVBOX, "cp", f"{name}:/", "-"], stdout=subprocess.PIPE, env=store.env()
    )
    tail, seen = b"", 0
    assert proc.stdout is not None
    while chunk := proc.stdout.read(1 << 20):
        assert needle not in tail + chunk
        tail, seen = chunk[-len(needle):], seen + len(chunk)  # fmt: skip
    assert proc.wait() == 0 and seen > 50 << 20
    store("cp", f"{name}:/home/agent", str(tmp_path / "home"))
    assert (tmp_path / "home" / "cache" / "env.txt").exists()
    assert grep_tree(tmp_path / "home", needle) == []
    assert SECRET not in "".join(store.transcript)


def test_nothing_of_this_module_is_left():
    for name in MADE:
        assert residue(name) == [], name
    assert run_volumes() == []
    assert docker("ps", "-aq", "--filter", f"name={RUN}-ws-").stdout.split() == []
    assert docker("network", "ls", "-q", "--filter", f"name={RUN}-ws-").stdout.split() == []
    images = docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert [i for i in images if RUN in i] == []
