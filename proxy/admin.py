"""The admin channel: how the devbox CLI hands a config to a running proxy.

    docker exec -i devbox-NAME-proxy python -m proxy.admin load   < config.json
    docker exec    devbox-NAME-proxy python -m proxy.admin health

The server listens on a unix socket (0600, default /run/devbox/admin.sock, a tmpfs only the
proxy user can enter), never on the network: only someone who can `docker exec` into the
proxy container can reach it. Wire format: the client sends one command line (`load` or
`health`), then for `load` the config JSON, then shuts down its write side; the server
answers one line: `ok`, `error: <reason>` or the health JSON.

Exit codes of the client: 0 applied / configured; 1 refused (bad config) or unconfigured;
2 the proxy is not reachable. Messages are one line and never carry a credential.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from proxy.config import ConfigError, ProxyConfig

if TYPE_CHECKING:
    import asyncio

    from proxy.app import ProxyApp

DEFAULT_SOCKET = "/run/devbox/admin.sock"
MAX_CONFIG_BYTES = 1024 * 1024
IO_TIMEOUT = 10.0


async def serve(app: ProxyApp, path: str | os.PathLike[str]) -> asyncio.AbstractServer:
    """Listen on the admin socket; the socket file is 0600 from the moment it exists."""
    import asyncio  # here, not at the top: the client side runs in a fresh interpreter per call

    sock_path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        if sock_path.is_socket():
            sock_path.unlink()

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            answer = await asyncio.wait_for(_answer(app, reader), IO_TIMEOUT)
        except (TimeoutError, ValueError, ConnectionError):
            answer = "error: bad admin request"
        try:
            writer.write(answer.encode() + b"\n")
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    old = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(client, path=str(sock_path))
    finally:
        os.umask(old)
    os.chmod(sock_path, 0o600)
    return server


async def _answer(app: ProxyApp, reader: asyncio.StreamReader) -> str:
    command = (await reader.readline()).decode("ascii", "replace").strip()
    if command == "health":
        return json.dumps(app.health()[1], separators=(",", ":"))
    if command != "load":
        return "error: unknown admin command"
    data = await reader.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        return "error: config is too large"
    try:
        app.apply(ProxyConfig.loads(data))
    except ConfigError as exc:
        return f"error: {exc}"
    except OSError as exc:
        return f"error: cannot write the config file ({exc.__class__.__name__})"
    return "ok"


def request(command: str, payload: bytes = b"", *, path: str = DEFAULT_SOCKET) -> str:
    """Send one admin command and return the server's one-line answer (raises OSError)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(IO_TIMEOUT)
        sock.connect(path)
        sock.sendall(command.encode() + b"\n" + payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace").strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m proxy.admin", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=("load", "health"))
    parser.add_argument(
        "--socket",
        default=os.environ.get("DEVBOX_ADMIN_SOCKET", DEFAULT_SOCKET),
        help=f"admin socket path (default {DEFAULT_SOCKET})",
    )
    args = parser.parse_args(argv)
    payload = b""
    if args.command == "load":
        payload = sys.stdin.buffer.read(MAX_CONFIG_BYTES + 1)
        if len(payload) > MAX_CONFIG_BYTES:
            print("error: config is too large", file=sys.stderr)
            return 1
    try:
        answer = request(args.command, payload, path=args.socket)
    except OSError as exc:
        print(
            f"error: proxy not reachable at {args.socket} ({exc.__class__.__name__})",
            file=sys.stderr,
        )
        return 2
    if args.command == "health":
        print(answer)
        try:
            return 0 if json.loads(answer).get("status") == "ok" else 1
        except ValueError:
            return 1
    if answer == "ok":
        print("ok")
        return 0
    print(answer or "error: no answer from the proxy", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
