"""Shared fixtures: an isolated DEVBOX_HOME per test and the Docker marker's gate."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

# What counts as CI. The Makefile's IN_CI says the same; tests/test_ci_gate.py holds them to it.
CI_VALUES = ("1", "true", "yes")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in CI_VALUES


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


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config, items):
    # A wrapper sees the items after every other implementation ran, including `-m`/`-k`
    # deselection: only Docker-backed tests that will really run need an engine.
    result = yield
    docker_items = [i for i in items if i.get_closest_marker("docker")]
    if not docker_items:
        return result
    problem = _docker_problem()
    if problem is None:
        return result
    if in_ci():
        raise pytest.UsageError(f"CI is set but Docker-backed tests cannot run: {problem}")
    skip = pytest.mark.skip(reason=f"needs Docker: {problem}")
    for item in docker_items:
        item.add_marker(skip)
    return result
