"""`devbox port-forward` end to end: the real CLI in a subprocess, real servers in a real devbox
(tests/docker/box_servers.py), real clients on the host. The host has no address on the
devbox's network, so every byte here went through the relay in the proxy container and the
Engine API."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import random
import select
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from tests.docker.conftest import DEVBOX, RUN, Cli, docker

pytestmark = pytest.mark.docker

SERVERS = Path(__file__).with_name("box_servers.py")
BIG = 50 << 20


def readline(stream, timeout: float = 90.0) -> bytes:
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, "no line in time"
    return stream.readline()


class Forward:
    """A running `devbox port-forward ... -o json`: its address, read from its one line."""

    def __init__(self, cli: Cli, name: str, spec: str, *extra: str, env=None) -> None:
        self.proc = subprocess.Popen(
            [*DEVBOX, "port-forward", name, spec, "-o", "json", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli.env(**(env or {})),
        )  # fmt: skip
        line = readline(self.proc.stdout)
        assert line, self.proc.communicate(timeout=60)[1].decode()
        self.info = json.loads(line)
        self.address = (self.info["host"], self.info["port"])

    def end(self, sig: int | None = signal.SIGINT) -> tuple[int, str]:
        if sig is not None:
            self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, err.decode()

    def get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(*self.address, timeout=120)
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        return resp.status, body


def expected(n: int, seed: int) -> str:
    rng, digest = random.Random(seed), hashlib.sha256()
    while n > 0:
        step = min(n, 1 << 16)
        digest.update(rng.randbytes(step))
        n -= step
    return digest.hexdigest()


def relays(name: str) -> list[tuple[int, str, str]]:
    """(host pid, uid, command line) of every relay process in the devbox's proxy."""
    out = docker("top", f"devbox-{name}-proxy", "-eo", "pid,uid,args").stdout.splitlines()[1:]
    rows = [line.split(None, 2) for line in out]
    return [(int(pid), uid, args) for pid, uid, args in rows if "proxy.relay" in args]


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@pytest.fixture(scope="module")
def box(module_cli: Cli):
    name = f"{RUN}-pf"
    module_cli("create", name)
    servers = None
    try:
        module_cli(
            "exec", "-i", name, "--", "sh", "-c", "cat > /tmp/box_servers.py",
            input=SERVERS.read_text(),
        )  # fmt: skip
        servers = subprocess.Popen(
            [*DEVBOX, "exec", "-i", name, "--", "python3", "-u", "/tmp/box_servers.py"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=module_cli.env(),
        )  # fmt: skip
        assert readline(servers.stdout) == b"ready\n"
        yield module_cli, name, servers
    finally:
        if servers is not None:
            servers.kill()
            servers.wait(30)
        module_cli("delete", name, check=False)


def test_a_web_server_in_the_box_answers_on_the_printed_address(box):
    cli, name, _ = box
    fwd = Forward(cli, name, ":8000")
    assert fwd.info["address"] == f"127.0.0.1:{fwd.address[1]}" and fwd.info["remote_port"] == 8000
    assert fwd.get("/") == (200, b"ok\n")
    ((_, uid, args),) = relays(name)
    # one relay, as the proxy's user, aimed at the box's address on its own network, by docker
    box_ip = docker(
        "inspect", "-f", f'{{{{(index .NetworkSettings.Networks "devbox-{name}-net").IPAddress}}}}',
        f"devbox-{name}",
    ).stdout.strip()  # fmt: skip
    assert uid == "10001" and args.endswith(f"-m proxy.relay {box_ip} 8000")
    assert fwd.end() == (0, "")
    assert relays(name) == []


def test_many_connections_at_once_each_byte_for_byte_with_rss_bounded_on_both_ends(box):
    cli, name, _ = box
    fwd = Forward(cli, name, ":8000")
    assert fwd.get("/")[0] == 200
    ((relay_pid, _, _),) = relays(name)
    cli_before = status_kb(fwd.proc.pid, "VmRSS")
    upload = random.Random(99).randbytes(BIG)
    results: dict[str, tuple[str, str]] = {}

    def get(key: str, n: int, seed: int) -> None:
        status, body = fwd.get(f"/bytes?n={n}&seed={seed}")
        results[key] = (f"{status} {hashlib.sha256(body).hexdigest()}", f"200 {expected(n, seed)}")

    def post() -> None:
        conn = http.client.HTTPConnection(*fwd.address, timeout=120)
        conn.request("POST", "/sha256", body=upload)
        results["upload"] = (conn.getresponse().read().decode(), hashlib.sha256(upload).hexdigest())
        conn.close()

    jobs = [threading.Thread(target=get, args=(f"get{i}", 1 + i * 77_777, i)) for i in range(22)]
    jobs += [threading.Thread(target=get, args=("big", BIG, 1234)), threading.Thread(target=post)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(300)
    assert len(results) == 24
    assert {key: got for key, (got, want) in results.items() if got != want} == {}
    # Neither end held a body: the relay stays near its start-up size, the CLI grew far less
    # than one 50 MB body (bounded by the windows: 256 KiB per connection and direction).
    assert status_kb(relay_pid, "VmHWM") < 48 * 1024
    assert status_kb(fwd.proc.pid, "VmHWM") - cli_before < 32 * 1024
    assert fwd.end() == (0, "")


def test_a_long_lived_stream_of_events_each_after_the_clients_ack(box):
    cli, name, _ = box
    fwd = Forward(cli, name, ":8001")
    with socket.create_connection(fwd.address, timeout=60) as sock:
        lines = sock.makefile("rwb", buffering=0)
        lines.write(b"count 100\n")
        for i in range(100):
            assert lines.readline() == f"event {i}\n".encode()
            lines.write(f"ack {i}\n".encode())
        assert lines.readline() == b"done\n"
        assert lines.readline() == b""
    assert fwd.end() == (0, "")


def test_half_close_passes_through_both_ways(box):
    cli, name, _ = box
    data = random.Random(5).randbytes(3 << 20)
    # the client shuts its write side: the server reads to EOF and still answers
    fwd = Forward(cli, name, ":8003")
    with socket.create_connection(fwd.address, timeout=60) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        assert sock.makefile("rb").read() == hashlib.sha256(data).hexdigest().encode()
    assert fwd.end() == (0, "")
    # the server shuts its write side first: the client sees EOF and still sends
    fwd = Forward(cli, name, ":8002")
    with socket.create_connection(fwd.address, timeout=60) as sock:
        reader = sock.makefile("rb")
        assert reader.read() == b"hello\n"  # and EOF
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        # The server can no longer answer: it writes down what it read, once it read to EOF.
        written = cli.sh(
            name,
            "for i in $(seq 1200); do [ -s /tmp/halfclose.sha256 ] && break; sleep 0.05; done;"
            " cat /tmp/halfclose.sha256",
        ).stdout
    assert written == hashlib.sha256(data).hexdigest()
    assert fwd.end() == (0, "")


def test_bytes_from_the_box_that_look_like_frames_are_only_bytes(box):
    cli, name, _ = box
    from tests.docker.box_servers import FRAMES

    fwd = Forward(cli, name, ":8004")
    for _ in range(3):
        with socket.create_connection(fwd.address, timeout=60) as sock:
            assert sock.makefile("rb").read() == FRAMES
    assert fwd.proc.poll() is None  # the session goes on
    assert fwd.end() == (0, "")


def test_a_refused_port_closes_that_connection_and_the_session_goes_on(box):
    cli, name, servers = box
    fwd = Forward(cli, name, ":8009")
    # reset, or closed: either way, over
    with (
        socket.create_connection(fwd.address, timeout=60) as sock,
        contextlib.suppress(ConnectionResetError),
    ):
        assert sock.recv(1) == b""
    servers.stdin.write(b"listen 8009\n")
    servers.stdin.flush()
    assert readline(servers.stdout) == b"listening 8009\n"
    with socket.create_connection(fwd.address, timeout=60) as sock:
        sock.sendall(b"now it listens")
        sock.shutdown(socket.SHUT_WR)
        assert sock.makefile("rb").read() == b"now it listens"
    code, err = fwd.end()
    assert code == 0
    assert f"warning: port 8009 in devbox {name}: connection 1: connection refused" in err


def test_ctrl_c_ends_it_with_0_and_leaves_nothing_in_the_proxy(box):
    cli, name, _ = box
    fwd = Forward(cli, name, "0:8001")
    held = socket.create_connection(fwd.address, timeout=60)
    held.sendall(b"count 5\n")
    assert held.recv(100) == b"event 0\n"  # a connection in the middle of its stream
    assert len(relays(name)) == 1
    assert fwd.end(signal.SIGINT) == (0, "")
    assert relays(name) == []
    assert held.recv(100) == b""  # cut
    held.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(fwd.address, timeout=10)
    # a `kill` (SIGTERM) ends it as cleanly
    fwd = Forward(cli, name, ":8000")
    assert fwd.end(signal.SIGTERM) == (0, "")
    assert relays(name) == []


def test_errors_before_it_listens(box):
    cli, name, _ = box
    proc = cli("port-forward", f"{RUN}-nope", "8000", check=False)
    assert proc.returncode == 3 and f"no devbox {RUN}-nope" in proc.stderr
    proc = cli("port-forward", name, "8000:99999", check=False)
    assert proc.returncode == 2 and "invalid port spec" in proc.stderr
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    proc = cli("port-forward", name, f"{port}:8000", check=False)
    taken.close()
    assert proc.returncode == 4 and f"port {port} on 127.0.0.1 is in use" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 2
    assert relays(name) == []


def test_the_python_api_forwards_as_a_context_manager(box, monkeypatch):
    cli, name, _ = box
    from devbox_cli import Client

    monkeypatch.setenv("DEVBOX_HOME", str(cli.home))
    with Client().port_forward(name, 8000, 0) as fwd:
        conn = http.client.HTTPConnection(*fwd.address, timeout=60)
        conn.request("GET", "/bytes?n=100000&seed=3")
        assert hashlib.sha256(conn.getresponse().read()).hexdigest() == expected(100000, 3)
        conn.close()
        assert len(relays(name)) == 1
        assert fwd.wait(timeout=0) is False
    assert relays(name) == []


def test_the_devbox_or_its_proxy_stopping_ends_it_clearly(module_cli: Cli):
    cli, name = module_cli, f"{RUN}-pfstop"
    cli("create", name)
    try:
        fwd = Forward(cli, name, ":8000")
        docker("stop", "-t", "1", f"devbox-{name}")
        code, err = fwd.end(sig=None)
        assert (code, err.splitlines()) == (7, [
            f"error: port-forward to devbox {name} ended: the devbox stopped",
            f"hint: start it again with `devbox start {name}`, then port-forward again",
        ])  # fmt: skip
        assert relays(name) == []  # its proxy runs on, without a relay
        proc = cli("port-forward", name, "8000", check=False)
        assert proc.returncode == 4
        assert f"devbox {name} is not running (the devbox is exited)" in proc.stderr
        assert f"start it with `devbox start {name}`" in proc.stderr
        cli("start", name)
        fwd = Forward(cli, name, ":8000")
        docker("stop", "-t", "1", f"devbox-{name}-proxy")
        code, err = fwd.end(sig=None)
        assert code == 7
        assert f"error: port-forward to devbox {name} ended: its proxy stopped" in err
        cli("start", name)
        fwd = Forward(cli, name, ":8000")
        cli("stop", name)
        code, err = fwd.end(sig=None)
        assert code == 7 and f"port-forward to devbox {name} ended: " in err
        cli("start", name)
        assert relays(name) == []
        fwd = Forward(cli, name, ":8000")
        cli("delete", name)
        code, err = fwd.end(sig=None)
        assert code == 7 and f"port-forward to devbox {name} ended: " in err
    finally:
        cli("delete", name, check=False)


class EngineOverTcp:
    """The engine's unix socket served on 127.0.0.1 TCP, counting what it carries: a stand-in
    for a remote engine (DOCKER_HOST=tcp://...), where the host reaches no container."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.carried = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX)
            engine.connect("/var/run/docker.sock")
            for src, dst in ((client, engine), (engine, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := src.recv(1 << 16):
                self.carried += len(chunk)
                dst.sendall(chunk)
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()


def test_it_works_over_a_tcp_engine_every_byte_through_the_engine_api(box):
    cli, name, _ = box
    engine = EngineOverTcp()
    try:
        fwd = Forward(cli, name, ":8000", env={"DOCKER_HOST": engine.host})
        before = engine.carried
        n = 5 << 20
        status, body = fwd.get(f"/bytes?n={n}&seed=8")
        assert status == 200 and hashlib.sha256(body).hexdigest() == expected(n, 8)
        assert engine.carried - before >= n
        assert fwd.end() == (0, "")
        assert relays(name) == []
    finally:
        engine.close()
