"""`devbox images build|list` against the stand-in engine: the base's two ways and the
error naming both, the list's states (the real builds: tests/docker/test_wheel.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from devbox_cli.engine.images import refs_in
from tests.cli.fake_engine import FakeEngine

NS = "devbox-fake"
REFS = refs_in(NS)


def devbox(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devbox_cli", *args],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "DEVBOX_IMAGE_NAMESPACE": NS, **env},
    )  # fmt: skip


@pytest.fixture
def engine(tmp_path):
    with FakeEngine(tmp_path) as fake:
        fake.route("GET", "/version", 200, {"ApiVersion": "1.41", "Version": "20.10"})
        fake.route("GET", "/_ping", 200, "OK")
        fake.route("GET", "/info", 200, {"Architecture": "x86_64"})
        fake.route("GET", "/images/", 404, {"message": "No such image"})
        fake.route(
            "POST", "/images/create", 500,
            {"message": 'Get "https://registry-1.docker.io/v2/": dial tcp: no such host'},
        )  # fmt: skip
        yield fake


def no_debootstrap_path(tmp_path) -> str:
    """A PATH with tar and the like but no debootstrap."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("tar", "sh"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def test_no_registry_and_no_debootstrap_is_an_error_naming_both_ways(engine, tmp_path):
    env = {"DOCKER_HOST": engine.host, "PATH": no_debootstrap_path(tmp_path)}
    proc = devbox("images", "build", env=env)
    assert proc.returncode == 7, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-2].startswith("error: cannot make the base image: pulling image "
                                "debian:bookworm-slim"), lines  # fmt: skip
    hint = lines[-1]
    assert "debian:bookworm-slim" in hint and "--base IMAGE" in hint
    assert "debootstrap" in hint and "--offline" in hint
    assert "Traceback" not in proc.stderr
    assert ("POST", "/images/create") in engine.seen  # it tried to pull first


def test_a_named_base_that_cannot_be_pulled_says_so(engine, tmp_path):
    proc = devbox("images", "build", "--base", "registry.example/debian:bookworm",
                  env={"DOCKER_HOST": engine.host})  # fmt: skip
    assert proc.returncode == 7
    assert "cannot make the base image: pulling image registry.example/debian:bookworm" in (
        proc.stderr
    )


def test_offline_without_debootstrap_does_not_try_to_pull(engine, tmp_path):
    env = {"DOCKER_HOST": engine.host, "PATH": no_debootstrap_path(tmp_path)}
    proc = devbox("images", "build", "--offline", env=env)
    assert proc.returncode == 7
    assert "cannot make the base image" in proc.stderr
    assert ("POST", "/images/create") not in engine.seen


def test_base_and_offline_together_are_a_usage_error():
    proc = devbox("images", "build", "--base", "debian:bookworm-slim", "--offline", env={})
    assert proc.returncode == 2
    assert "pick one" in proc.stderr


def test_images_list_tells_current_from_other_versions_and_missing(engine):
    other = f"{NS}/proxy:0.0.9-0123456789ab"
    engine.route("GET", "/images/json", 200, [
        {"Id": "sha256:" + "a" * 64, "RepoTags": [REFS.base], "Size": 321_000_000,
         "Created": 1764662400},
        {"Id": "sha256:" + "b" * 64, "RepoTags": [other, f"{NS}/proxy:latest"],
         "Size": 401_000_000, "Created": 1764662400},
    ])  # fmt: skip
    env = {"DOCKER_HOST": engine.host, "COLUMNS": "80"}
    listed = json.loads(devbox("images", "list", "-o", "json", env=env).stdout)
    assert [(i["role"], i["image"], i["state"]) for i in listed] == [
        ("base", REFS.base, "current"),
        ("proxy", REFS.proxy, "missing"),
        ("default", REFS.default, "missing"),
        ("proxy", other, "other version"),
    ]
    text = devbox("images", "list", env=env).stdout.splitlines()
    assert text[0].split()[:3] == ["ROLE", "IMAGE", "STATE"]
    assert len(text) == 5 and all(len(line) <= 80 for line in text)
    assert devbox("images", "list", "-q", env=env).stdout.split() == [REFS.base, other]


def run_on_a_terminal(args: list[str], env: dict[str, str]) -> str:
    """`devbox ARGS` with stdout and stderr on a pseudo-terminal; what it wrote there."""
    import pty

    main, sub = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "devbox_cli", *args], stdin=subprocess.DEVNULL,
        stdout=sub, stderr=sub, env={**os.environ, "DEVBOX_IMAGE_NAMESPACE": NS, **env},
    )  # fmt: skip
    os.close(sub)
    out = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the terminal closed: the process is gone
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=60)
    os.close(main)
    return out.decode("utf-8", "replace")


def test_progress_is_rich_on_a_terminal_and_plain_lines_elsewhere(engine, tmp_path):
    env = {"DOCKER_HOST": engine.host, "PATH": no_debootstrap_path(tmp_path)}
    plain = devbox("images", "build", env=env).stderr
    assert "images: pulling debian:bookworm-slim\n" in plain
    assert "\x1b[" not in plain
    terminal = run_on_a_terminal(["images", "build"], {**env, "TERM": "xterm"})
    assert "\x1b[" in terminal  # a spinner, and colour
    terminal = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", terminal)
    assert "• pulling debian:bookworm-slim" in terminal
    assert "images: pulling" not in terminal
