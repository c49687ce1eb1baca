"""Benchmark: gateway requests through the proxy vs. direct to the same upstream, and vs. the
floor of any aiohttp relay (a bare server + client passing the request on, nothing else);
then, in the same run, an HTTPS upstream reached directly, through a gateway route and as an
intercepted host (bench/bench_tls.py).

    make bench-proxy            (or: .venv/bin/python bench/bench_proxy.py [--seconds 3])

The upstream and the proxy each run in their own process (the proxy pinned to one core when
the machine has more than one), the load generator in this one; all traffic stays on
127.0.0.1. Prints requests/s (concurrent clients), p50/p99 latency (one client at a time),
SSE time to first byte, CPU per request, and the proxy/direct ratios; `--write` also records them in
BENCHMARKS.md under "## Proxy".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_tls import TlsSetup, measure_tls, report_tls  # noqa: E402
from proxy.config import Auth, GatewayBinding, ProxyConfig  # noqa: E402

TOKEN = "gwt_bench_bench_bench_bench_bench_0000"
TLS_TOKEN = "gwt_bench_tls_route_bench_bench_0001"
HOST_TOKEN = "gwt_bench_intercepted_bench_bench_02"
SECRET = "sk-bench-real-credential-0123456789"

UPSTREAM = r"""
import asyncio, sys
from aiohttp import web
async def small(request):
    return web.Response(body=b'{"id":"msg_1","content":[{"type":"text","text":"hi"}]}',
                        content_type="application/json")
async def sse(request):
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(b"event: message_start\ndata: {}\n\n")
    await asyncio.sleep(0.005)
    await resp.write(b"event: message_stop\ndata: {}\n\n")
    return resp
async def serve():
    import ssl
    app = web.Application()
    app.router.add_get("/v1/small", small)
    app.router.add_get("/v1/sse", sse)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(sys.argv[1])).start()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(sys.argv[3], sys.argv[4])
    await web.TCPSite(runner, "127.0.0.1", int(sys.argv[2]), ssl_context=tls).start()
    await asyncio.Event().wait()
asyncio.run(serve())
"""

# The floor: the least an aiohttp relay can do per request (no token, no audit, no redaction).
FLOOR = r"""
import sys
import aiohttp
from aiohttp import web
UP = sys.argv[2]
async def relay(request):
    async with request.app["s"].get(UP + request.path[len("/floor"):]) as r:
        resp = web.StreamResponse(status=r.status)
        await resp.prepare(request)
        async for chunk in r.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp
async def session(app):
    app["s"] = aiohttp.ClientSession(auto_decompress=False)
    yield
    await app["s"].close()
app = web.Application()
app.cleanup_ctx.append(session)
app.router.add_get("/floor/{tail:.*}", relay)
try:
    import uvloop
    loop = uvloop.new_event_loop()
except ImportError:
    loop = None
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None, loop=loop)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_ready(session: aiohttp.ClientSession, url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with session.get(url) as resp:
                if resp.status < 500:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise SystemExit(f"not ready: {url}")


async def latency(session, url, headers, seconds) -> list[float]:
    samples = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        async with session.get(url, headers=headers) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        samples.append(time.perf_counter() - t0)
    return samples


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def throughput(session, url, headers, seconds, concurrency) -> tuple[float, int]:
    count = 0
    end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < end:
            async with session.get(url, headers=headers) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            count += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - t0), count


async def ttfb(session, url, headers, n) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        async with session.get(url, headers=headers) as resp:
            await resp.content.readany()
            samples.append(time.perf_counter() - t0)
            await resp.read()
    return samples


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000


async def measure(args) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    up_port, proxy_port, floor_port, tls_port = free_port(), free_port(), free_port(), free_port()
    tmp = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    tls_setup = TlsSetup(tmp, tls_port)
    config = ProxyConfig(
        devbox="bench",
        gateways=(
            GatewayBinding(
                prefix="BENCH",
                token=TOKEN,
                endpoint=f"http://127.0.0.1:{up_port}",
                auth=Auth("bearer"),
                credential=SECRET,
            ),
            *tls_setup.bindings(TLS_TOKEN, HOST_TOKEN, SECRET),
        ),
        ca=tls_setup.devbox_ca,
    )
    cfg = tmp / "config.json"
    fd = os.open(cfg, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, config.dumps())
    os.close(fd)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", UPSTREAM, str(up_port), str(tls_port),
             str(tls_setup.cert), str(tls_setup.key)],
            env=env,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "proxy", "--serve", "--log-level", "warning",
             "--listen", f"127.0.0.1:{proxy_port}", "--config", str(cfg),
             "--admin-socket", str(tmp / "admin.sock")],
            env=env, stdout=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [sys.executable, "-c", FLOOR, str(floor_port), f"http://127.0.0.1:{up_port}"],
            env=env,
        ),
    ]  # fmt: skip
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) > 1:  # proxy (or floor) on one core; upstream and load generator on the others
        os.sched_setaffinity(procs[1].pid, {cores[0]})
        os.sched_setaffinity(procs[2].pid, {cores[0]})
        os.sched_setaffinity(procs[0].pid, set(cores[1:]))
        os.sched_setaffinity(0, set(cores[1:]))
    direct = f"http://127.0.0.1:{up_port}/v1"
    proxied = f"http://127.0.0.1:{proxy_port}/gw/BENCH/v1"
    floor = f"http://127.0.0.1:{floor_port}/floor/v1"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    results: dict[str, dict[str, float]] = {}
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
            await wait_ready(session, f"http://127.0.0.1:{proxy_port}/_devbox/health")
            await wait_ready(session, f"{direct}/small")
            await wait_ready(session, f"{floor}/small")
            # CPU per request of the process doing the work: the upstream serving a request
            # (direct), the floor relay or the proxy relaying one. CPU time is far steadier
            # than requests/s on a shared machine.
            for name, base, worker in (
                ("direct", direct, procs[0].pid),
                ("floor", floor, procs[2].pid),
                ("proxy", proxied, procs[1].pid),
            ):
                await latency(session, f"{base}/small", auth, 0.5)  # warm-up
                lat = await latency(session, f"{base}/small", auth, args.seconds)
                cpu0 = cpu_seconds(worker)
                rps, count = await throughput(session, f"{base}/small", auth, args.seconds, 32)
                cpu_us = (cpu_seconds(worker) - cpu0) / max(count, 1) * 1e6
                first = await ttfb(session, f"{base}/sse", auth, args.sse)
                results[name] = {
                    "rps": rps,
                    "cpu_us": cpu_us,
                    "capacity": 1e6 / cpu_us if cpu_us else float("nan"),
                    "p50": pct(lat, 0.50),
                    "p99": pct(lat, 0.99),
                    "sse_ttfb_p50": statistics.median(first) * 1000,
                    "requests": len(lat),
                }
        tls = await measure_tls(
            tls_setup,
            f"http://127.0.0.1:{proxy_port}",
            {
                "gateway": {"Authorization": f"Bearer {TLS_TOKEN}"},
                "intercepted": {"Authorization": f"Bearer {HOST_TOKEN}"},
            },
            {"upstream": procs[0].pid, "proxy": procs[1].pid},
            args.seconds,
            cpu_seconds,
            pct,
        )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)
        for path in tmp.iterdir():
            if path.is_file() or path.is_socket():
                path.unlink()
        tmp.rmdir()
    return results, tls


def machine() -> str:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio (uvloop not installed in this venv)"
    return (
        f"nproc {os.cpu_count()}, {cpu}; Python {platform.python_version()}, "
        f"aiohttp {aiohttp.__version__}, event loop {loop}"
    )


def report(results: dict[str, dict[str, float]]) -> str:
    d, f, p = results["direct"], results["floor"], results["proxy"]
    rows = [
        ("requests/s (32 concurrent)", "rps", "{:,.0f}"),
        ("CPU per request (µs, of the serving process)", "cpu_us", "{:.0f}"),
        ("one-core capacity (requests/s = 1 s / CPU)", "capacity", "{:,.0f}"),
        ("latency p50 (ms)", "p50", "{:.2f}"),
        ("latency p99 (ms)", "p99", "{:.2f}"),
        ("SSE time to first byte p50 (ms)", "sse_ttfb_p50", "{:.2f}"),
    ]
    lines = [
        "| metric | direct | floor relay | via proxy | proxy/direct | proxy/floor |",
        "|---|---|---|---|---|---|",
    ]
    for label, key, fmt in rows:
        cells = " | ".join(fmt.format(r[key]) for r in (d, f, p))
        ratios = " | ".join(f"{p[key] / base[key]:.2f}" if base[key] else "n/a" for base in (d, f))
        lines.append(f"| {label} | {cells} | {ratios} |")
    lines.append("")
    lines.append(
        f"Added latency: p50 {p['p50'] - d['p50']:+.2f} ms, p99 {p['p99'] - d['p99']:+.2f} ms; "
        f"SSE first byte {p['sse_ttfb_p50'] - d['sse_ttfb_p50']:+.2f} ms. "
        f"The proxy's CPU over the floor relay: {p['cpu_us'] - f['cpu_us']:+.0f} µs per request."
    )
    return "\n".join(lines)


def write_benchmarks(table: str, args) -> None:
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = (
        "`make bench-proxy` (bench/bench_proxy.py): gateway requests (`GET /gw/BENCH/v1/small`, "
        "bearer swap, ~60-byte JSON answer) through the proxy vs. direct to the same aiohttp "
        "upstream and vs. a bare aiohttp relay (the floor: server + client, no token, audit or "
        "redaction), in the same run. Upstream, relay and proxy run in their own processes; "
        "relay and proxy are pinned to one core, the upstream and the load generator share "
        f"the other. Latency: one client, {args.seconds:.0f} s; requests/s: 32 concurrent "
        f"clients, {args.seconds:.0f} s; SSE: {args.sse} streams, time to the first event. "
        "Then an HTTPS upstream (bench/bench_tls.py): direct, through a gateway route and as a "
        "host gateway's intercepted host, one client, on a reused and on a new connection.\n\n"
        f"Machine: {machine()}.\n\n{table}\n"
    )
    # Only the measured part between the markers is replaced; notes around it stay.
    begin, end = "<!-- bench-proxy:begin -->", "<!-- bench-proxy:end -->"
    block = f"{begin}\n{section.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text.rstrip("\n") + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--sse", type=int, default=50)
    parser.add_argument("--write", action="store_true", help="record the results in BENCHMARKS.md")
    args = parser.parse_args()
    results, tls = asyncio.run(measure(args))
    table = report(results) + "\n\n" + report_tls(tls)
    print(f"Machine: {machine()}\n")
    print(table)
    if args.write:
        write_benchmarks(table, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
