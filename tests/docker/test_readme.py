"""The README's Python API example runs as written (only the devbox name is made unique)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.docker.conftest import REPO, RUN, Cli

pytestmark = pytest.mark.docker


def readme_python_example() -> str:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    [example] = [b for b in blocks if "create_devbox" in b]
    return example


def test_the_python_api_example_runs(module_cli: Cli):
    name = f"{RUN}-readme"
    code = readme_python_example().replace('"agent"', repr(name))
    api_key = "sk-ant-readme-" + RUN
    proc = subprocess.run(
        [sys.executable, "-c", f"api_key = {api_key!r}\n{code}"],
        capture_output=True,
        text=True,
        env=module_cli.env(),
        timeout=180,
        check=False,
    )
    try:
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "0 http://proxy:3128/gw/ANTHROPIC_API_KEY\n\n"
        assert api_key not in proc.stdout + proc.stderr
    finally:
        module_cli("delete", name, check=False)
    assert name not in [box["name"] for box in module_cli.json("list")]
