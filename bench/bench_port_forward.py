"""`python bench/bench_port_forward.py`: what `devbox port-forward` adds, in one run.

    latency     200 sequential small GETs (`GET /` -> 3 bytes), a new connection each and
                all on one keep-alive connection: from the host through the forward vs
                from inside the box straight to the server (the same client code)
    throughput  a 100 MB body down (GET) and up (POST): through the forward vs inside the
                box; and `docker exec CONTAINER cat` of 100 MB, the Engine API's own floor

The server is tests/docker/box_servers.py (http.server) in a fresh devbox; the forward is a
real `devbox port-forward` subprocess. Prints a Markdown table. Env: BENCH_REPS (default 200).
Needs the images (make images).
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_DEVBOX = REPO / ".venv" / "bin" / "devbox"
DEVBOX = [str(VENV_DEVBOX)] if VENV_DEVBOX.exists() else [sys.executable, "-m", "devbox_cli"]
SERVERS = REPO / "tests" / "docker" / "box_servers.py"
REPS = int(os.environ.get("BENCH_REPS", "200"))
BIG = 100 << 20
NAME = f"bench{secrets.token_hex(2)}"

# The client, run on the host and in the box alike (python3 stdlib): prints JSON numbers.
CLIENT = r"""
import http.client, json, statistics, sys, time
host, port, reps, big = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def fresh():
    c = http.client.HTTPConnection(host, port, timeout=60); c.request("GET", "/")
    c.getresponse().read(); c.close()
times = []
for _ in range(reps):
    t = time.perf_counter(); fresh(); times.append(time.perf_counter() - t)
keep, c = [], http.client.HTTPConnection(host, port, timeout=60)
for _ in range(reps):
    t = time.perf_counter(); c.request("GET", "/"); c.getresponse().read()
    keep.append(time.perf_counter() - t)
t = time.perf_counter(); c.request("GET", f"/bytes?n={big}&seed=1"); r = c.getresponse()
n = 0
while chunk := r.read(1 << 20):
    n += len(chunk)
down = time.perf_counter() - t
assert n == big
class Body:
    def __init__(self): self.left = big
    def read(self, size=-1):
        step = min(self.left, 1 << 20); self.left -= step; return b"\0" * step
t = time.perf_counter()
c.request("POST", "/sha256", body=Body(), headers={"Content-Length": str(big)})
c.getresponse().read(); up = time.perf_counter() - t
print(json.dumps({"fresh": statistics.median(times) * 1e3, "keep": statistics.median(keep) * 1e3,
                  "down": big / down / 1e6, "up": big / up / 1e6}))
"""


def devbox(*args: str, env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*DEVBOX, *args], check=True, capture_output=True, env=env, **kw)


def main() -> None:
    home = tempfile.mkdtemp(prefix="bench-pf-")
    env = {**os.environ, "DEVBOX_HOME": home}
    devbox("create", NAME, env=env)
    servers = forward = None
    try:
        devbox(
            "exec",
            "-i",
            NAME,
            "--",
            "sh",
            "-c",
            "cat > /tmp/s.py",
            env=env,
            input=SERVERS.read_bytes(),
        )
        devbox(
            "exec", "-i", NAME, "--", "sh", "-c", "cat > /tmp/c.py", env=env, input=CLIENT.encode()
        )
        servers = subprocess.Popen(
            [*DEVBOX, "exec", "-i", NAME, "--", "python3", "-u", "/tmp/s.py"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert servers.stdout.readline() == b"ready\n"
        forward = subprocess.Popen(
            [*DEVBOX, "port-forward", NAME, ":8000", "-o", "json"], stdout=subprocess.PIPE, env=env
        )
        port = json.loads(forward.stdout.readline())["port"]
        args = [str(REPS), str(BIG)]
        direct = json.loads(
            devbox(
                "exec", NAME, "--", "python3", "/tmp/c.py", "127.0.0.1", "8000", *args, env=env
            ).stdout
        )
        via = json.loads(
            subprocess.run(
                [sys.executable, "-c", CLIENT, "127.0.0.1", str(port), *args],
                check=True,
                capture_output=True,
            ).stdout
        )
        devbox("exec", NAME, "--", "sh", "-c", f"head -c {BIG} /dev/zero > /tmp/big", env=env)
        floor = time_cat(f"devbox-{NAME}")
        rss = {"CLI": high_water(forward.pid), "relay": high_water(relay_pid(NAME))}
    finally:
        for proc in (forward, servers):
            if proc is not None:
                proc.terminate()
                proc.wait(30)
        devbox("delete", NAME, env=env)
        shutil.rmtree(home, ignore_errors=True)
    print(
        f"`python bench/bench_port_forward.py`, {REPS} requests; {platform.node()}, "
        f"nproc {os.cpu_count()}, Python {platform.python_version()}\n"
    )
    print("| metric | in the box, direct | host, through port-forward | added |")
    print("|---|---|---|---|")
    for key, label, unit in (
        ("fresh", "GET, new connection each, p50", "ms"),
        ("keep", "GET, keep-alive, p50", "ms"),
        ("down", "100 MB down", "MB/s"),
        ("up", "100 MB up", "MB/s"),
    ):
        diff = via[key] - direct[key]
        added = f"+{diff:.2f} ms" if unit == "ms" else f"x{via[key] / direct[key]:.2f}"
        print(f"| {label} | {direct[key]:.2f} {unit} | {via[key]:.2f} {unit} | {added} |")
    print(f"\n`docker exec BOX cat` of 100 MB (the Engine API's stream alone): {floor:.0f} MB/s")
    print("RSS high-water after both bodies: " + ", ".join(f"{k} {v} MB" for k, v in rss.items()))


def relay_pid(name: str) -> int:
    top = subprocess.run(
        ["docker", "top", f"devbox-{name}-proxy", "-eo", "pid,args"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return next(int(line.split()[0]) for line in top.splitlines() if "proxy.relay" in line)


def high_water(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) // 1024 for line in status.splitlines() if "VmHWM" in line)


def time_cat(container: str) -> float:
    import time

    started = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        subprocess.run(["docker", "exec", container, "cat", "/tmp/big"], stdout=sink, check=True)
    return BIG / (time.perf_counter() - started) / 1e6


if __name__ == "__main__":
    main()
