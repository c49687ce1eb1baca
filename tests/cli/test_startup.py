"""The CLI stays cheap to start: building the command tree imports none of the heavy
libraries; each command imports what it needs when it runs (STYLE.md habit 12)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = (
    "docker", "aiohttp", "nacl", "rich", "pydantic", "requests", "asyncio", "ssl", "cryptography",
)  # fmt: skip


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("devbox_cli.cli", ()),  # every command's parsing
        ("devbox_cli.engine.fastexec", ()),  # `devbox exec`
        ("devbox_cli.client", ("nacl",)),  # the Python API: the store seals and opens
    ],
)
def test_importing_loads_no_heavy_library(module, allowed):
    heavy = tuple(m for m in HEAVY if m not in allowed)
    code = f"import sys, {module}; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
