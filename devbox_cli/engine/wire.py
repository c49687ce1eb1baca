"""The Docker Engine API spoken by hand over its unix socket: requests, the hijacked stream
of an exec, its stdout/stderr framing and its exit code. Standard library only and cheap to
import: `devbox exec` runs on it (fastexec.py), and docker_backend.py shares its framing,
exit-code polling and the engine-unavailable error.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator, Mapping

from devbox_cli.errors import DevboxRuntimeError, DockerUnavailableError

API = "/v1.41"
DEFAULT_HOST = "unix:///var/run/docker.sock"
EXIT_CODE_TIMEOUT = 5.0


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_HOST


def unavailable(detail: str = "") -> DockerUnavailableError:
    """The engine does not answer at docker_host(); `detail` says how it failed."""
    why = f" ({detail})" if detail else ""
    return DockerUnavailableError(
        f"cannot reach the Docker engine at {docker_host()}{why}",
        "start Docker (for example `sudo systemctl start docker`), or point DOCKER_HOST "
        "at a running engine; `docker info` should succeed",
    )


def socket_path() -> str:
    host = docker_host()
    if not host.startswith("unix://"):
        raise DockerUnavailableError(
            f"devbox exec needs Docker on a unix socket, not DOCKER_HOST={host}",
            "point DOCKER_HOST at unix:///path/to/docker.sock",
        )
    return host[len("unix://") :]


def connect() -> socket.socket:
    path = socket_path()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise unavailable(str(exc.strerror or exc)) from None
    return sock


def send(sock: socket.socket, method: str, path: str, body: object, upgrade: bool) -> None:
    payload = b"" if body is None else json.dumps(body).encode()
    head = [f"{method} {API}{path} HTTP/1.1", "Host: docker"]
    if body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    head += ["Connection: Upgrade", "Upgrade: tcp"] if upgrade else ["Connection: close"]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + payload)


def read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise DevboxRuntimeError("the Docker engine closed the connection unexpectedly")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers, rest


def read_body(sock: socket.socket, headers: dict[str, str], rest: bytes) -> bytes:
    buf = bytearray(rest)
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
        return dechunk(bytes(buf))
    length = int(headers.get("content-length", "-1"))
    while length < 0 or len(buf) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)


def request(method: str, path: str, body: object = None) -> tuple[int, object]:
    return finish(begin(method, path, body))


def begin(method: str, path: str, body: object = None) -> socket.socket:
    """Send a request on a connection of its own and return that connection unread: the
    engine answers it while the caller makes other requests; finish() reads the answer."""
    sock = connect()
    try:
        send(sock, method, path, body, upgrade=False)
    except BaseException:
        sock.close()
        raise
    return sock


def finish(sock: socket.socket) -> tuple[int, object]:
    """The status and decoded body of the request begin() sent on `sock`; closes it."""
    try:
        status, headers, rest = read_head(sock)
        raw = read_body(sock, headers, rest)
    finally:
        sock.close()
    try:
        data = json.loads(raw) if raw.strip() else None
    except ValueError:
        data = raw.decode("utf-8", "replace")
    return status, data


def message(data: object) -> str:
    if isinstance(data, dict) and "message" in data:
        return str(data["message"])
    return str(data or "no details").strip()


def frames(sock: socket.socket, buf: bytes = b"") -> Iterator[tuple[int, bytes]]:
    """Yield (stream, payload) from Docker's multiplexed stream: 8-byte header, then data."""
    buf = bytearray(buf)
    while True:
        while len(buf) >= 8:
            stream, size = struct.unpack(">BxxxL", buf[:8])
            if len(buf) < 8 + size:
                break
            yield stream, bytes(buf[8 : 8 + size])
            del buf[: 8 + size]
        chunk = sock.recv(262144)
        if not chunk:
            return
        buf += chunk


class Demuxer:
    """`frames` for a stream fed in pieces (an asyncio protocol's data): the 8-byte headers
    of Docker's multiplexed stdout/stderr taken off, payloads kept in order."""

    MAX_FRAME = 1 << 20  # the engine writes what one read of the pipe gave (32 KiB)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        out = []
        pos = 0
        while len(buf) - pos >= 8:
            stream, size = struct.unpack_from(">BxxxL", buf, pos)
            if size > self.MAX_FRAME or stream > 2:
                raise DevboxRuntimeError("the Docker engine sent a malformed exec stream")
            if len(buf) - pos < 8 + size:
                break
            out.append((stream, bytes(buf[pos + 8 : pos + 8 + size])))
            pos += 8 + size
        del buf[:pos]
        return out


def poll_exit_code(inspect: Callable[[], Mapping[str, object]]) -> int:
    """The exit code of a finished exec, from `inspect` (the exec's JSON). Its stream ends
    when the process exits; the engine may record the code a moment later."""
    deadline = time.monotonic() + EXIT_CODE_TIMEOUT
    while True:
        info = inspect()
        code = info.get("ExitCode")
        if not info.get("Running") and code is not None:
            return int(code)  # type: ignore[call-overload]
        if time.monotonic() > deadline:
            raise DevboxRuntimeError("the engine did not report the exit status of the exec")
        time.sleep(0.005)
