"""`make bench-devbox`: devbox create/exec against plain docker run/exec, in the same run.

    create: `devbox create NAME` then `devbox exec NAME true` until it succeeds
            vs `docker run -d IMAGE` then `docker exec CONTAINER true`
    exec:   `devbox exec NAME true` vs `docker exec devbox-NAME true` on the same devbox

Both sides are real CLI subprocesses (what a user or a CI script runs), interleaved so load
drifts hit both. Prints medians, p90 and ratios as a Markdown table for BENCHMARKS.md.
Env: BENCH_REPS (default 20).
"""

from __future__ import annotations

import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devbox_cli.engine.images import image_refs

REPO = Path(__file__).resolve().parents[1]
VENV_DEVBOX = REPO / ".venv" / "bin" / "devbox"
DEVBOX = [str(VENV_DEVBOX)] if VENV_DEVBOX.exists() else [sys.executable, "-m", "devbox_cli"]
IMAGE = os.environ.get("DEVBOX_IMAGE") or image_refs().default
REPS = int(os.environ.get("BENCH_REPS", "20"))
RUN = f"bench{secrets.token_hex(2)}"
EGRESS = "devbox-egress"  # the default egress network, made by the first `devbox create`


def run(cmd: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def quiet(cmd: list[str], env: dict[str, str] | None = None) -> None:
    subprocess.run(cmd, check=False, capture_output=True, env=env)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(label: str, ours: list[float], theirs: list[float], unit: float = 1000) -> str:
    m_ours, m_theirs = statistics.median(ours), statistics.median(theirs)
    p_ours, p_theirs = pct(ours, 0.9), pct(theirs, 0.9)
    return (
        f"| {label} | {m_ours * unit:.0f} | {p_ours * unit:.0f} | {m_theirs * unit:.0f} | "
        f"{p_theirs * unit:.0f} | {m_ours / m_theirs:.2f} | {p_ours / p_theirs:.2f} |"
    )


def main() -> int:
    home = tempfile.mkdtemp(prefix="devbox-bench-")
    env = {**os.environ, "DEVBOX_HOME": home}
    # A normal install caches bytecode; without it every devbox run recompiles its modules.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    created: list[str] = []
    create_ours, create_docker, exec_ours, exec_docker = [], [], [], []
    egress_existed = (
        subprocess.run(["docker", "network", "inspect", EGRESS], capture_output=True).returncode
        == 0
    )
    try:
        for i in range(REPS):
            name = f"{RUN}-{i}"
            created.append(name)
            started = time.perf_counter()
            subprocess.run([*DEVBOX, "create", name], check=True, capture_output=True, env=env)
            subprocess.run([*DEVBOX, "exec", name, "true"], check=True, env=env)  # first exec
            create_ours.append(time.perf_counter() - started)
            quiet([*DEVBOX, "delete", name], env)

            plain = f"{RUN}-plain-{i}"
            started = time.perf_counter()
            subprocess.run(["docker", "run", "-d", "--name", plain, "--init", IMAGE,
                            "sleep", "infinity"], check=True, capture_output=True)  # fmt: skip
            subprocess.run(["docker", "exec", plain, "true"], check=True)
            create_docker.append(time.perf_counter() - started)
            quiet(["docker", "rm", "-f", plain])

        name = f"{RUN}-exec"
        created.append(name)
        subprocess.run([*DEVBOX, "create", name], check=True, capture_output=True, env=env)
        run([*DEVBOX, "exec", name, "true"], env)  # warm the page cache on both sides
        run(["docker", "exec", f"devbox-{name}", "true"])
        for _ in range(REPS):
            exec_ours.append(run([*DEVBOX, "exec", name, "true"], env))
            exec_docker.append(run(["docker", "exec", f"devbox-{name}", "true"]))
    finally:
        quiet([*DEVBOX, "delete", *created], env)
        if not egress_existed:  # leave the machine as the benchmark found it
            quiet(["docker", "network", "rm", EGRESS])
        shutil.rmtree(home, ignore_errors=True)

    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip
    docker_version = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True
    ).stdout.strip()
    print(f"Machine: nproc {os.cpu_count()}, {cpu}; Python {platform.python_version()}, "
          f"Docker {docker_version}; {REPS} reps each, interleaved.\n")  # fmt: skip
    print("| ms | devbox p50 | devbox p90 | docker p50 | docker p90 | ratio p50 | ratio p90 |")
    print("|---|---|---|---|---|---|---|")
    print(row("create until first exec", create_ours, create_docker))
    print(row("exec `true`", exec_ours, exec_docker))
    return 0


if __name__ == "__main__":
    sys.exit(main())
