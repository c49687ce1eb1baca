"""The Docker marker's gate (tests/conftest.py), run on small suites of its own with pytester.

"No engine" is real: DOCKER_HOST points at a unix socket path in a temp dir that nothing
listens on, so `docker info` fails the way it does on a machine without a running engine.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import in_ci

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
SUITE = """
import pytest

def test_fast():
    pass

@pytest.mark.docker
def test_needs_docker():
    pass
"""


@pytest.fixture
def suite(pytester, monkeypatch, tmp_path):
    """A suite with one fast and one Docker-backed test under the real conftest, and no engine."""
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text())
    pytester.makeini(
        "[pytest]\naddopts = --strict-markers -p no:cacheprovider\n"
        "asyncio_default_fixture_loop_scope = function\n"
        "markers =\n    docker: needs a running Docker engine\n"
    )
    pytester.makepyfile(test_suite=SUITE)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'dead.sock'}")
    monkeypatch.delenv("CI", raising=False)
    return pytester


@pytest.mark.parametrize("value", ["true", "Yes"])
def test_ci_with_docker_tests_selected_and_no_engine_fails_with_the_reason(
    suite, monkeypatch, value
):
    monkeypatch.setenv("CI", value)
    result = suite.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*CI is set but Docker-backed tests cannot run: the Docker engine is not running*"]
    )
    assert "passed" not in result.stdout.str()  # nothing ran


def test_ci_with_docker_tests_deselected_needs_no_engine(suite, monkeypatch):
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest("-m", "not docker")
    result.assert_outcomes(passed=1, deselected=1)
    assert result.ret == pytest.ExitCode.OK


def test_ci_with_docker_tests_deselected_by_name_needs_no_engine(suite, monkeypatch):
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest("-k", "fast")
    result.assert_outcomes(passed=1, deselected=1)


@pytest.mark.parametrize("value", [None, "false"])
def test_without_ci_docker_tests_skip_with_the_reason(suite, monkeypatch, value):
    if value is not None:
        monkeypatch.setenv("CI", value)
    result = suite.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*needs Docker: the Docker engine is not running*"])


@pytest.mark.parametrize("value", ["", "1", "true", "TRUE", "Yes", "yes", "no", "false", "2"])
def test_the_makefile_and_the_gate_agree_on_what_ci_is(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    probe = subprocess.run(
        [
            "make",
            "-s",
            "--no-print-directory",
            "--eval",
            "ci-probe: ; @echo '[$(IN_CI)]'",
            "ci-probe",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert (probe.stdout.strip() != "[]") == in_ci(), probe.stdout
