"""The isolation probe's script (services/probe.py) run here, against real sockets: what it
counts as reached (a connection, a TCP reset, a DNS answer) and as blocked (no route, a
timeout, a DNS reply without an answer), and how doctor turns that into checks. The probe
from inside a devbox: tests/docker/test_doctor.py."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import threading

import pytest

from devbox_cli.services import probe
from devbox_cli.services.doctor import probe_checks


def run_script(targets: list[probe.Target], proxy: str, timeout: float = 1.0) -> dict:
    spec = json.loads(probe.probe_input(targets, proxy))
    spec["timeout"] = timeout
    proc = subprocess.run(
        [sys.executable, "-c", probe.SCRIPT], input=json.dumps(spec), capture_output=True,
        text=True, timeout=60, check=True,
    )  # fmt: skip
    return probe.parse_output(proc.stdout)


@pytest.fixture
def listener():
    server = socket.create_server(("127.0.0.1", 0))
    yield server.getsockname()[1]
    server.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dns_server():
    """A UDP DNS server on 127.0.0.1 answering queries for `answered.test` with one A record
    and everything else with NXDOMAIN."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                query, peer = sock.recvfrom(512)
            except OSError:
                continue
            qid, answered = query[:2], b"\x08answered\x04test\x00" in query
            flags = 0x8180 if answered else 0x8183
            head = qid + struct.pack(">HHHHH", flags, 1, 1 if answered else 0, 0, 0)
            body = query[12:]
            if answered:
                body += b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 7])
            sock.sendto(head + body, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join()
    sock.close()


def test_connections_and_resets_count_as_reached_silence_as_blocked(listener):
    refused = closed_port()
    targets = [
        probe.Target("host", "127.0.0.1", (listener, refused), "a listener and a closed port"),
        probe.Target("internet", "224.0.0.1", (443,), "multicast: no TCP there"),
    ]
    data = run_script(targets, f"http://127.0.0.1:{refused}/")
    results = {(i, port): (hit, how) for i, port, hit, how in data["results"]}
    assert results[(0, listener)] == (True, "connected")
    assert results[(0, refused)] == (True, "refused: the address answered")
    assert results[(1, 443)][0] is False
    assert data["proxy"].startswith("unreachable")  # nothing on the control's address


def test_a_dns_answer_is_reached_a_reply_without_one_is_not(dns_server, monkeypatch):
    targets = [
        probe.Target("dns-name", "127.0.0.1", (dns_server,), "answers this name"),
        probe.Target("dns-name", "127.0.0.1", (dns_server,), "NXDOMAIN for that one"),
        probe.Target("dns/udp", "127.0.0.1", (dns_server,), "any reply counts"),
    ]
    spec = json.loads(probe.probe_input(targets, "http://127.0.0.1:9/"))
    results = {}
    for name in ("answered.test", "example.com"):
        spec["name"], spec["timeout"] = name, 1.0
        proc = subprocess.run(
            [sys.executable, "-c", probe.SCRIPT], input=json.dumps(spec), capture_output=True,
            text=True, timeout=60, check=True,
        )  # fmt: skip
        results[name] = {i: (hit, how) for i, _p, hit, how in json.loads(proc.stdout)["results"]}
    assert results["answered.test"][0] == (True, "a DNS reply")
    assert results["example.com"][1] == (False, "replied without an answer")
    assert results["example.com"][2] == (True, "a DNS reply")


def test_doctor_fails_on_every_reached_target_and_on_a_probe_that_reaches_nothing():
    targets = [
        probe.Target("host", "172.17.0.1", (22, 80), "gateway of network bridge"),
        probe.Target("dns/udp", "8.8.8.8", (53,), "a public resolver"),
        probe.Target("internet", "1.1.1.1", (443,), "a public address"),
    ]
    data = {
        "proxy": "200",
        "results": [[0, 22, False, "timeout"], [0, 80, True, "connected"],
                    [1, 53, True, "a DNS reply"], [2, 443, False, "ENETUNREACH"]],
    }  # fmt: skip
    checks = {c.name: c for c in probe_checks(targets, data)}
    assert checks["isolation control"].status == "pass"
    host = checks["isolation host 172.17.0.1"]
    assert host.status == "fail" and "REACHED on port 80 (connected)" in host.detail
    assert "iptables" in (host.fix or "")
    assert checks["isolation dns/udp 8.8.8.8"].status == "fail"
    assert "DNS" in (checks["isolation dns/udp 8.8.8.8"].fix or "")
    assert checks["isolation internet 1.1.1.1"].status == "pass"
    blind = {c.name: c for c in probe_checks(targets, {"proxy": "unreachable: URLError",
                                                       "results": []})}  # fmt: skip
    assert blind["isolation control"].status == "fail"  # proves nothing: a fail, not a pass
    assert {c.status for n, c in blind.items() if n != "isolation control"} == {"fail"}


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "fe80::1", "not-an-ip", ""])
def test_loopback_link_local_and_garbage_are_not_probed(address):
    assert probe.usable(address) is False


def test_the_host_resolvers_are_read_from_resolv_conf(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nnameserver 10.0.0.2\nsearch x\nnameserver fd00::53\nnameserver\n")
    assert probe.host_resolvers(str(conf)) == ["10.0.0.2", "fd00::53"]
    assert probe.host_resolvers(str(tmp_path / "missing")) == []
