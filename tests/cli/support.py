"""Running the real CLI as a subprocess, the way a user or a CI script does."""

from __future__ import annotations

import os
import subprocess
import sys


def run(
    *args: str, stdin: str | None = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`devbox ARGS...` with `stdin` piped in (empty by default, so nothing ever prompts)."""
    return subprocess.run(
        [sys.executable, "-m", "devbox_cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )
