"""Servers an agent might run in its devbox, for the port-forward tests (stdlib only: it runs
on the default image's python3). Prints `ready` once every port listens; reads commands
on stdin (`listen PORT`: an echo server there, answered `listening PORT`); exits when its
stdin ends.

    8000  HTTP/1.1 (http.server): GET / -> ok; GET /bytes?n=N&seed=S -> N bytes of
          random.Random(S).randbytes, streamed; POST /sha256 -> the body's sha256, streamed in
    8001  events: `event I` lines, each sent only after `ack I-1` came back; then `done`
    8002  half-close from the server: sends `hello`, shuts its write side, reads to EOF and
          writes the sha256 of what it read to /tmp/halfclose.sha256
    8003  half-close from the client: reads to EOF, answers the sha256, closes
    8004  bytes that look like relay frames (a HELLO, an OPEN, a 4 GB DATA header), then closes
"""

from __future__ import annotations

import hashlib
import random
import socket
import socketserver
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CHUNK = 1 << 16


def pseudo_random(n: int, seed: int):
    rng = random.Random(seed)
    while n > 0:
        step = min(n, CHUNK)
        yield rng.randbytes(step)
        n -= step


class Http(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body are two writes: no 40 ms wait between

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/bytes":
            query = parse_qs(url.query)
            n, seed = int(query["n"][0]), int(query["seed"][0])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            for chunk in pseudo_random(n, seed):
                self.wfile.write(chunk)
            return
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        left = int(self.headers["Content-Length"])
        digest = hashlib.sha256()
        while left:
            chunk = self.rfile.read(min(left, CHUNK))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
        body = digest.hexdigest().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class Events(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        count = int(self.rfile.readline().split()[1])  # `count N`
        for i in range(count):
            self.wfile.write(f"event {i}\n".encode())
            if self.rfile.readline() != f"ack {i}\n".encode():
                return
        self.wfile.write(b"done\n")


class ServerHalfClose(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(b"hello\n")
        self.request.shutdown(socket.SHUT_WR)
        digest = hashlib.sha256()
        while chunk := self.request.recv(CHUNK):
            digest.update(chunk)
        with open("/tmp/halfclose.sha256", "w") as out:
            out.write(digest.hexdigest())


class ClientHalfClose(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        digest = hashlib.sha256()
        while chunk := self.request.recv(CHUNK):
            digest.update(chunk)
        self.request.sendall(digest.hexdigest().encode())


FRAMES = (
    struct.pack(">BII", 1, 0, 14) + b"devbox-relay/1"
    + struct.pack(">BII", 2, 7, 0)
    + struct.pack(">BII", 7, 1, 1) + b"\x01"
    + struct.pack(">BII", 4, 1, 2**32 - 1)
)  # fmt: skip


class LooksLikeFrames(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(FRAMES)


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while chunk := self.request.recv(CHUNK):
            self.request.sendall(chunk)


class Threading(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(server: socketserver.BaseServer) -> None:
    threading.Thread(target=server.serve_forever, daemon=True).start()


def main() -> None:
    ThreadingHTTPServer.daemon_threads = True
    serve(ThreadingHTTPServer(("0.0.0.0", 8000), Http))
    for port, handler in ((8001, Events), (8002, ServerHalfClose), (8003, ClientHalfClose),
                          (8004, LooksLikeFrames)):  # fmt: skip
        serve(Threading(("0.0.0.0", port), handler))
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "listen":
            serve(Threading(("0.0.0.0", int(arg)), Echo))
            print(f"listening {arg}", flush=True)


if __name__ == "__main__":
    main()
