"""`devbox create --mount/--volume` and `devbox cp` refuse what they must through the real
CLI, before any engine is asked: DOCKER_HOST points at a socket that answers nothing, so a
refusal that came after a Docker call would be exit 6, not 2 or 3."""

from __future__ import annotations

import socket

import pytest

from tests.cli.support import run


@pytest.fixture
def world(tmp_path, devbox_home):
    """The store (DEVBOX_HOME), an engine socket that is bound but never answers, a
    project, and a symlink to each thing a mount must not be."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(run_dir / "docker.sock"))
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("x")
    links = tmp_path / "links"
    links.mkdir()
    for name, target in {
        "store": devbox_home,
        "in-store": devbox_home / "sub",
        "socket-dir": run_dir,
        "socket": run_dir / "docker.sock",
        "root": "/",
        "parent": devbox_home.parent,
        "project": project,
        "dangling": tmp_path / "nowhere",
    }.items():
        (links / name).symlink_to(target)
    (devbox_home / "sub").mkdir()
    env = {"DOCKER_HOST": f"unix://{run_dir / 'docker.sock'}"}
    yield {"home": devbox_home, "run": run_dir, "project": project, "links": links, "env": env}
    sock.close()


def refusal(world, *args: str):
    proc = run(*args, env=world["env"])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr
    assert len(lines) == 2 and lines[1].startswith("hint: "), lines
    return proc.returncode, lines[0]


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{home}", "it is in the devbox store"),
        ("{home}/sub", "it is in the devbox store"),
        ("{home}/..", "it holds the devbox store"),
        ("{links}/store", "it is in the devbox store"),
        ("{links}/in-store", "it is in the devbox store"),
        ("{links}/parent", "it holds the devbox store"),
        ("{run}", "it is or holds the engine socket"),
        ("{links}/socket-dir", "it is or holds the engine socket"),
        ("/", "it is the host's root"),
        ("{links}/root", "it is the host's root"),
        ("/run", "engine socket"),
    ],
)
def test_refused_mounts(world, source, reason):
    path = source.format(**world)
    code, line = refusal(world, "create", "box1", "--mount", f"{path}:/workspace")
    assert code == 2
    assert line.startswith(f"error: refusing to mount {path}") and reason in line


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--mount", "{links}/socket"], 2, "not a directory"),
        (["--mount", "{project}/missing"], 3, "no such file or directory"),
        (["--mount", "{links}/dangling"], 3, "cannot resolve"),
        (["--mount", "{project}:/etc"], 2, "part of the box's system"),
        (["--mount", "{project}:/proc/x"], 2, "part of the box's system"),
        (["--mount", "{project}:relative"], 2, "invalid --mount destination"),
        (["--mount", "{project}:/a/../b"], 2, "invalid --mount destination"),
        (["--mount", "{project}:/w", "--volume", "cache:/w"], 2, "two mounts at /w"),
        (["--mount", "{project}:/w:rx:x"], 2, "invalid --mount"),
        (["--volume", "bad/name:/c"], 2, "invalid volume name"),
        (["--volume", "cache:/dev/shm"], 2, "part of the box's system"),
        (["--mount", "{project}", "--mount", "{links}/project"], 2, "two mounts at /workspace"),
    ],
)
def test_bad_workspaces(world, args, code, message):
    got, line = refusal(world, "create", "box1", *(a.format(**world) for a in args))
    assert (got, message in line) == (code, True), line


def test_a_remote_engine_gets_no_bind_mounts(world):
    mount = ["create", "box1", "--mount", str(world["project"])]
    proc = run(*mount, env=world["env"])
    assert proc.returncode == 6  # a local engine: the path passes, then the silent engine fails
    proc = run(*mount, env={"DOCKER_HOST": "tcp://127.0.0.1:9"})
    assert proc.returncode == 2
    assert "--mount needs an engine on this machine" in proc.stderr


@pytest.mark.parametrize(
    ("source", "code", "message"),
    [
        ("{home}", 2, "refusing to copy"),
        ("{links}/store", 2, "it is in the devbox store"),
        ("{home}/..", 2, "it holds the devbox store"),
        ("{links}/socket", 2, "engine socket"),
        ("{project}/missing", 3, "no such file or directory"),
        ("{project}/notes.txt/", 2, "not a directory"),
    ],
)
def test_cp_sends_nothing_a_mount_could_not_be(world, source, code, message):
    got, line = refusal(world, "cp", source.format(**world), "box1:/workspace")
    assert (got, message in line) == (code, True), line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a", "b"], "one side of cp must be NAME:PATH"),
        (["b1:/x", "b2:/y"], "one side of cp must be NAME:PATH"),
        (["-", "-"], "one side of cp must be NAME:PATH"),
        (["box1:", "."], "no path after box1:"),
        (["box1:/x", "-", "-o", "json"], "cannot share stdout"),
    ],
)
def test_cp_usage_errors(world, args, message):
    code, line = refusal(world, "cp", *args)
    assert code == 2 and message in line, line
