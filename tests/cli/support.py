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


class Follower:
    """A long-running CLI process (`devbox watch`) whose stdout lines a test waits for: a
    handshake on what the process says, never a sleep."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        import queue
        import threading

        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self._queue.put(line.rstrip("\n"))
            self._queue.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def wait_for(self, wanted, timeout: float = 60.0) -> str:  # type: ignore[no-untyped-def]
        """The next line for which `wanted(line)` is true (a str: that is in the line)."""
        import queue
        import time

        test = wanted if callable(wanted) else (lambda line: wanted in line)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._queue.get(timeout=max(left, 0.01))
            except queue.Empty:
                line = ""
            if line is None:
                raise AssertionError(f"the process ended first: {self.lines}, {self.stderr()}")
            if line:
                self.lines.append(line)
                if test(line):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no line matching {wanted!r} in {self.lines}")

    def stop(self, sig: int | None = None, timeout: float = 60.0) -> int:
        """Send `sig` (SIGTERM by default), wait for the exit, keep what it printed."""
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM if sig is None else sig)
        code = self.proc.wait(timeout=timeout)
        while (line := self._queue.get(timeout=timeout)) is not None:
            self.lines.append(line)
        return code

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
