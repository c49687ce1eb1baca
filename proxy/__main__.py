"""`python -m proxy`: the devbox proxy (one per devbox), run under a small supervisor.

    python -m proxy [--listen 0.0.0.0:3128] [--config /run/devbox/config.json]
                    [--admin-socket /run/devbox/admin.sock] [--self-name proxy]
                    [--log-level info]
                    [--header-timeout 10] [--connect-timeout 10] [--idle-timeout 900]
                    [--max-connections 512] [--max-head-bytes 32768]

--listen           host:port of the HTTP listener (gateway routes, forward proxy, health)
--config           the config file; loaded at start when it exists, rewritten (0600) by
                   every `python -m proxy.admin load`, so a restarted server comes back
                   configured. Until a config arrives every request but health gets 503.
--admin-socket     unix socket of the admin channel (proxy/admin.py), created 0600
--self-name        a host name the devbox uses for this proxy (repeatable; default `proxy`):
                   absolute-form requests to it are served as gateway/health requests
--log-level        debug|info|warning|error for the diagnostics on stderr; the audit log
                   (one JSON line per request or tunnel) always goes to stdout
--header-timeout   seconds a client has to send a complete request head (slowloris)
--connect-timeout  seconds to connect to an upstream (TCP + TLS)
--idle-timeout     seconds a stream may stay silent before it is cut (>= 600)
--max-connections  client connections served at once; more are refused with 503
--max-head-bytes   cap on the request line + headers; more gets 431

The supervisor runs the server as a child process (`--serve`) and restarts it after a short,
growing backoff if it dies; SIGTERM/SIGINT are forwarded to the child for a clean shutdown.
uvloop is used when importable.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import subprocess
import sys
import time

from proxy.config import DEFAULT_PORT, ConfigError
from proxy.context import Settings

log = logging.getLogger("proxy")
MIN_IDLE_TIMEOUT = 600.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = Settings()
    p = argparse.ArgumentParser(prog="python -m proxy", description="the devbox proxy")
    p.add_argument("--listen", default=f"0.0.0.0:{DEFAULT_PORT}")
    p.add_argument("--config", default="/run/devbox/config.json")
    p.add_argument("--admin-socket", default="/run/devbox/admin.sock")
    p.add_argument("--self-name", action="append", default=["proxy"])
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument("--header-timeout", type=float, default=d.header_timeout)
    p.add_argument("--connect-timeout", type=float, default=d.connect_timeout)
    p.add_argument("--idle-timeout", type=float, default=d.idle_timeout)
    p.add_argument("--max-connections", type=int, default=d.max_connections)
    p.add_argument("--max-head-bytes", type=int, default=d.max_head_bytes)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.idle_timeout < MIN_IDLE_TIMEOUT:
        p.error(f"--idle-timeout must be at least {MIN_IDLE_TIMEOUT:.0f} seconds")
    return args


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


async def serve(args: argparse.Namespace) -> None:
    from proxy import admin
    from proxy.app import ProxyApp
    from proxy.resolve import local_addresses

    host, port = split_listen(args.listen)
    settings = Settings(
        header_timeout=args.header_timeout,
        connect_timeout=args.connect_timeout,
        idle_timeout=args.idle_timeout,
        max_connections=args.max_connections,
        max_head_bytes=args.max_head_bytes,
    )
    app = ProxyApp(
        settings,
        config_path=args.config,
        own_addresses=local_addresses([host]),
        self_names=frozenset(args.self_name),
    )
    try:
        if app.load_file():
            log.info("loaded config from %s", args.config)
    except (ConfigError, OSError) as exc:
        log.error(
            "config file not loaded: %s",
            exc if isinstance(exc, ConfigError) else type(exc).__name__,
        )
    import asyncio

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.start(host, port)
    admin_server = await admin.serve(app, args.admin_socket)
    log.info("listening on %s:%s, admin socket %s", host, app.port, args.admin_socket)
    try:
        await stop.wait()
    finally:
        admin_server.close()
        await app.close()


def run_server(args: argparse.Namespace) -> int:
    # asyncio and aiohttp are imported in the server child only: the supervisor stays small.
    import asyncio

    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args))
    else:
        uvloop.run(serve(args))
    return 0


def supervise(argv: list[str]) -> int:
    """Run the server as a child; restart it when it dies; forward SIGTERM/SIGINT."""
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    backoff = 0.25
    while True:
        started = time.monotonic()
        child = subprocess.Popen([sys.executable, "-m", "proxy", "--serve", *argv])
        code = child.wait()
        if stopping:
            return 0
        if time.monotonic() - started > 30:
            backoff = 0.25  # it ran a good while: a fresh failure, not a crash loop
        log.error("proxy server exited with %s; restarting in %.2fs", code, backoff)
        time.sleep(backoff)
        if stopping:
            return 0
        backoff = min(backoff * 2, 5.0)


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    args = parse_args(raw)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)  # its messages can quote a header
    if args.serve:
        return run_server(args)
    with contextlib.suppress(KeyboardInterrupt):
        return supervise([a for a in raw if a != "--serve"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
