"""A stand-in Docker engine on a unix socket, for the CLI's failure paths without Docker.

It is a real HTTP server on a real socket (DOCKER_HOST=unix://...), so the CLI's own clients
(docker-py, and the fast path's hand-written one) do all their work; only the answers are
chosen by the test. Unrouted requests get a 500, the way an engine in trouble answers.

    with FakeEngine(tmp_path) as engine:
        engine.route("GET", "/version", 200, {"ApiVersion": "1.41"})
        run("list", env={"DOCKER_HOST": engine.host})
"""

from __future__ import annotations

import json
import socketserver
import struct
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, BinaryIO

Raw = Callable[[BinaryIO, BinaryIO], None]


UPGRADED = b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"


def frame(stream: int, data: bytes) -> bytes:
    """One frame of Docker's multiplexed stream (1 stdout, 2 stderr)."""
    return struct.pack(">BxxxL", stream, len(data)) + data


class FakeEngine:
    def __init__(self, directory: Path) -> None:
        self.path = directory / "engine.sock"
        self.routes: dict[tuple[str, str], tuple[int, bytes] | Raw] = {}
        self.seen: list[tuple[str, str]] = []
        self.bodies: dict[str, Any] = {}  # path -> the JSON body of the last request to it
        engine = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                path = self.path.split("?")[0]
                path = path.split("/", 2)[2] if path.startswith("/v1.") else path[1:]
                engine.seen.append((self.command, "/" + path))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    engine.bodies["/" + path] = json.loads(self.rfile.read(length))
                answer = engine._lookup(self.command, "/" + path)
                if callable(answer):
                    answer(self.rfile, self.wfile)
                    return
                status, body = answer
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = do_HEAD = _answer

            def address_string(self) -> str:
                return "unix"

            def log_message(self, *args: Any) -> None:
                pass

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(str(self.path), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"unix://{self.path}"

    def route(self, method: str, prefix: str, status: int, body: Any = None) -> None:
        """Answer requests whose path (without the /v1.NN version) starts with `prefix`."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.routes[(method, prefix)] = (status, raw)

    def hijack(self, method: str, prefix: str, serve: Raw) -> None:
        """Answer with raw bytes: `serve(rfile, wfile)` writes the whole answer itself (an
        exec's upgraded stream) and may read what the client sends after its request."""
        self.routes[(method, prefix)] = serve

    def _lookup(self, method: str, path: str) -> tuple[int, bytes] | Raw:
        for (m, prefix), answer in sorted(self.routes.items(), key=lambda r: -len(r[0][1])):
            if m == method and path.startswith(prefix):
                return answer
        return 500, json.dumps({"message": f"fake engine: no route for {method} {path}"}).encode()

    def __enter__(self) -> FakeEngine:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
