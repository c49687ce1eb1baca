"""Shared fixtures: an isolated DEVBOX_HOME per test and the Docker marker's gate."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(autouse=True)
def devbox_home(tmp_path_factory, monkeypatch):
    """Every test gets its own store, so no test sees another's secrets."""
    home = tmp_path_factory.mktemp("devbox-home")
    monkeypatch.setenv("DEVBOX_HOME", str(home))
    monkeypatch.delenv("DEVBOX_PASSPHRASE", raising=False)
    monkeypatch.delenv("DEVBOX_DEBUG", raising=False)
    return home


def _docker_problem() -> str | None:
    if shutil.which("docker") is None:
        return "the docker client is not installed"
    try:
        proc = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "docker info timed out"
    if proc.returncode != 0:
        return "the Docker engine is not running"
    return None


def pytest_collection_modifyitems(config, items):
    docker_items = [i for i in items if i.get_closest_marker("docker")]
    if not docker_items:
        return
    problem = _docker_problem()
    if problem is None:
        return
    if IN_CI:
        raise pytest.UsageError(f"CI=true but Docker-backed tests cannot run: {problem}")
    skip = pytest.mark.skip(reason=f"needs Docker: {problem}")
    for item in docker_items:
        item.add_marker(skip)
