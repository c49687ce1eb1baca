"""The TLS half of `make bench-proxy` (bench/bench_proxy.py runs it in the same run, against
the same proxy process): requests to an HTTPS upstream made directly, through a gateway
route (`/gw/BENCHTLS/...`: plain HTTP to the proxy, TLS from it), and to the same upstream
as an intercepted host (HTTPS_PROXY: CONNECT, TLS terminated by the proxy with a leaf from
the devbox CA, TLS again to the upstream). Each on a reused connection (keep-alive; for an
intercepted host, one CONNECT and one handshake for every request) and on a new connection
per request (what a `curl` per call costs: for an intercepted host a CONNECT and a TLS
handshake with the proxy each time). The proxy keeps its own upstream connections pooled
in every case.

Reported: CPU per request of the proxy process (of the upstream, for direct) and latency
p50/p99 of one client at a time.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from proxy.certs import new_authority
from proxy.config import Auth, Authority, GatewayBinding

KINDS = ("direct", "gateway", "intercepted")


class TlsSetup:
    """The upstream's certificate (a test CA, trusted by the gateways as --ca-cert would) and
    the devbox CA the proxy intercepts `localhost:<tls_port>` with."""

    def __init__(self, tmp: Path, tls_port: int) -> None:
        import trustme

        self.port = tls_port
        self.upstream_ca = trustme.CA()
        cert = self.upstream_ca.issue_cert("localhost")
        self.cert, self.key = tmp / "upstream-cert.pem", tmp / "upstream-key.pem"
        cert.cert_chain_pems[0].write_to_path(str(self.cert))
        cert.private_key_pem.write_to_path(str(self.key))
        self.devbox_ca: Authority = new_authority("devbox bench interception CA", ["localhost"])

    def bindings(self, token_gateway: str, token_host: str, secret: str) -> tuple:
        ca_cert = self.upstream_ca.cert_pem.bytes().decode()
        common = {"auth": Auth("bearer"), "credential": secret, "ca_cert": ca_cert}
        return (
            GatewayBinding(
                prefix="BENCHTLS",
                token=token_gateway,
                endpoint=f"https://localhost:{self.port}",
                **common,
            ),
            GatewayBinding(
                prefix="BENCHHOST",
                token=token_host,
                endpoint=None,
                hosts=(f"localhost:{self.port}",),
                **common,
            ),
        )

    def client_context(self) -> ssl.SSLContext:
        """What the box trusts: the devbox CA (for intercepted) and the upstream's CA
        (for direct, standing in for the system CAs)."""
        ctx = ssl.create_default_context(cadata=self.devbox_ca.cert)
        ctx.load_verify_locations(cadata=self.upstream_ca.cert_pem.bytes().decode())
        return ctx


async def _sequential(
    session: aiohttp.ClientSession, target: tuple, tls: ssl.SSLContext, seconds: float
) -> list[float]:
    url, proxy, headers = target
    samples = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        async with session.get(url, proxy=proxy, ssl=tls, headers=headers) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        samples.append(time.perf_counter() - t0)
    return samples


async def measure_tls(
    setup: TlsSetup,
    proxy_url: str,
    tokens: dict[str, str],
    pids: dict[str, int],
    seconds: float,
    cpu_seconds: Callable[[int], float],
    pct: Callable[[list[float], float], float],
) -> dict[str, dict[str, float]]:
    """{kind/connection: {cpu_us, p50, p99, requests}} for every kind and connection."""
    tls = setup.client_context()
    upstream = f"https://localhost:{setup.port}/v1/small"
    targets = {
        "direct": (upstream, None, {}),
        "gateway": (f"{proxy_url}/gw/BENCHTLS/v1/small", None, tokens["gateway"]),
        "intercepted": (upstream, proxy_url, tokens["intercepted"]),
    }
    results: dict[str, dict[str, float]] = {}
    for connection in ("reused", "new"):
        for kind in KINDS:
            connector = aiohttp.TCPConnector(limit=0, force_close=connection == "new")
            async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
                # warm-up: the leaf minted, the proxy's upstream pool filled
                await _sequential(session, targets[kind], tls, 0.5)
                worker = pids["upstream" if kind == "direct" else "proxy"]
                cpu0 = cpu_seconds(worker)
                lat = await _sequential(session, targets[kind], tls, seconds)
                cpu_us = (cpu_seconds(worker) - cpu0) / max(len(lat), 1) * 1e6
            results[f"{kind}/{connection}"] = {
                "cpu_us": cpu_us,
                "p50": pct(lat, 0.50),
                "p99": pct(lat, 0.99),
                "requests": len(lat),
            }
    return results


def report_tls(results: dict[str, dict[str, float]]) -> str:
    lines = [
        "| HTTPS upstream, one client | connection | direct | gateway route | intercepted "
        "| intercepted - gateway |",
        "|---|---|---|---|---|---|",
    ]
    for connection in ("reused", "new"):
        d, g, i = (results[f"{k}/{connection}"] for k in KINDS)
        for label, key, fmt in (
            ("CPU per request (µs)", "cpu_us", "{:.0f}"),
            ("latency p50 (ms)", "p50", "{:.2f}"),
            ("latency p99 (ms)", "p99", "{:.2f}"),
        ):
            cells = " | ".join(fmt.format(r[key]) for r in (d, g, i))
            diff = fmt.replace("{:", "{:+").format(i[key] - g[key])
            lines.append(f"| {label} | {connection} | {cells} | {diff} |")
    lines.append("")
    parts = []
    for connection in ("reused", "new"):
        d, g, i = (results[f"{k}/{connection}"] for k in KINDS)
        parts.append(
            f"{connection} connection: intercepted adds p50 {i['p50'] - d['p50']:+.2f} ms over "
            f"direct (the gateway route {g['p50'] - d['p50']:+.2f} ms), and costs the proxy "
            f"{i['cpu_us']:.0f} µs per request against the route's {g['cpu_us']:.0f} µs"
        )
    lines.append("; ".join(parts) + ". Direct CPU is the upstream's own.")
    return "\n".join(lines)
