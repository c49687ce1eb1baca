"""Isolation proofs, from inside real devboxes: no host address, no other devbox, no DNS
for outside names, and no egress at all while the proxy is down or unconfigured."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from tests.docker.conftest import RUN, Cli, docker

pytestmark = pytest.mark.docker

PROBE = 'curl -s -o /dev/null -m 5 -w "%{http_code}" http://other.example.test/'


@pytest.fixture(scope="module")
def boxes(module_cli: Cli):
    cli = module_cli
    # every public destination, plus the stand-in upstreams on the test egress network
    cli("policy", "create", "open", "--allow-all", "--allow-cidr", cli.infra.subnet)
    names = [f"{RUN}-iso-a", f"{RUN}-iso-b"]
    try:
        for name in names:
            cli("create", name, "--network-policy", "open")
        yield cli, names
    finally:
        cli("delete", *names, check=False)


@pytest.fixture(scope="module")
def host_listener():
    """A TCP listener on every host address: any connection to it is recorded."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", 0))
    server.listen(64)
    hits: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, peer = server.accept()
            except OSError:
                continue
            hits.append(peer[0])
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nhi\n")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], hits
    finally:
        stop.set()
        thread.join()
        server.close()


def _host_addresses() -> set[str]:
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True)
    return {line.split()[3].split("/")[0] for line in out.stdout.splitlines()}


def _net_gateway(network: str) -> str:
    """The network's gateway: where the host would sit on it. Docker 28 allocates none on a
    bridge with inhibit_ipv4 (a devbox network); the address a gateway would take stands in."""
    config = json.loads(docker("network", "inspect", network).stdout)[0]["IPAM"]["Config"][0]
    return config.get("Gateway") or str(next(ipaddress.ip_network(config["Subnet"]).hosts()))


def _ip_on(container: str, network: str) -> str:
    nets = json.loads(docker("inspect", container).stdout)[0]["NetworkSettings"]["Networks"]
    return nets[network]["IPAddress"]


def test_no_host_address_is_reachable(boxes, host_listener):
    cli, (a, _b) = boxes
    port, hits = host_listener
    # positive control: the listener answers on the host itself
    with socket.create_connection(("127.0.0.1", port), timeout=3):
        pass
    targets = _host_addresses() - {"127.0.0.1"}
    targets |= {_net_gateway(f"devbox-{a}-net"), _net_gateway(cli.infra.egress), "172.17.0.1"}
    script = " ".join(
        f"(curl --noproxy '*' -s -m 3 -o /dev/null http://{ip}:{port}/ && echo REACHED {ip}) &"
        for ip in sorted(targets)
    )
    proc = cli.sh(a, script + " wait")
    assert "REACHED" not in proc.stdout
    assert [h for h in hits if h != "127.0.0.1"] == []


def test_the_host_has_no_address_on_the_devbox_network(boxes):
    _cli, (a, _b) = boxes
    network = json.loads(docker("network", "inspect", f"devbox-{a}-net").stdout)[0]
    subnet = ipaddress.ip_network(network["IPAM"]["Config"][0]["Subnet"])
    assert [ip for ip in _host_addresses() if ipaddress.ip_address(ip) in subnet] == []
    assert network["Internal"] is True
    assert network["Options"]["com.docker.network.bridge.inhibit_ipv4"] == "true"


def test_outside_names_do_not_resolve_but_the_proxy_does(boxes):
    cli, (a, _b) = boxes
    # Docker's resolver on an internal network does not forward; a lookup hangs until the
    # resolver's timeout, so the names are tried in parallel, each for up to 8 s.
    names = ("example.com", "api.anthropic.com", "other.example.test", "deb.debian.org")
    script = " ".join(f"(timeout 8 getent hosts {n} && echo RESOLVED {n}) &" for n in names)
    proc = cli.sh(a, script + " wait")
    assert "RESOLVED" not in proc.stdout, proc.stdout
    assert cli.sh(a, "getent hosts proxy").returncode == 0


def test_the_proxy_is_the_way_out(boxes):
    cli, (a, _b) = boxes
    assert cli.sh(a, PROBE).stdout == "200"
    direct = f"curl --noproxy '*' -s -m 3 http://{cli.infra.other_ip}/"
    assert cli.sh(a, direct).returncode != 0


def test_two_devboxes_cannot_reach_each_other(boxes):
    cli, (a, b) = boxes
    serve = "nohup python3 -m http.server 8000 >/dev/null 2>&1 &"
    assert cli.sh(b, serve).returncode == 0
    wait = (
        "for i in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:8000/ && exit 0; "
        "sleep 0.1; done; exit 1"
    )
    assert cli.sh(b, wait).returncode == 0  # positive control: b reaches its own server
    b_ip = _ip_on(f"devbox-{b}", f"devbox-{b}-net")
    b_proxy_ip = _ip_on(f"devbox-{b}-proxy", f"devbox-{b}-net")
    script = " ".join(
        f"(curl --noproxy '*' -s -m 3 -o /dev/null {url} && echo REACHED {url}) &"
        for url in (f"http://{b_ip}:8000/", f"http://{b_proxy_ip}:3128/_devbox/health")
    )
    assert "REACHED" not in cli.sh(a, script + " wait").stdout
    # nor through its own proxy: b's network is private and not in a's policy
    via_proxy = f'curl -s -o /dev/null -m 5 -w "%{{http_code}}" http://{b_ip}:8000/'
    assert cli.sh(a, via_proxy).stdout != "200"


def _wait(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def inside(name: str, script: str) -> str:
    """Run in the box with `docker exec`: `devbox exec` would heal the proxy first."""
    return docker("exec", f"devbox-{name}", "sh", "-c", script, check=False).stdout


def test_a_stopped_proxy_means_no_egress_until_it_is_started_again(boxes):
    cli, (_a, b) = boxes
    assert inside(b, PROBE) == "200"
    docker("stop", "-t", "1", f"devbox-{b}-proxy")
    assert inside(b, PROBE) != "200"
    assert {d["name"]: d for d in cli.json("list")}[b]["proxy"]["status"] == "exited"
    repaired = cli.json("repair", b)
    assert repaired["proxy"]["health"] == "ok"
    assert inside(b, PROBE) == "200"


def test_a_crashed_proxy_restarts_by_itself_fails_closed_and_the_next_command_heals_it(boxes):
    cli, (a, _b) = boxes
    proxy = f"devbox-{a}-proxy"
    assert inside(a, PROBE) == "200"
    before = json.loads(docker("inspect", proxy).stdout)[0]
    os.kill(before["State"]["Pid"], signal.SIGKILL)  # a crash, not a `docker stop`

    def restarted() -> bool:
        state = json.loads(docker("inspect", proxy).stdout)[0]
        return state["RestartCount"] > before["RestartCount"] and state["State"]["Running"]

    _wait(restarted, what="the proxy to restart")
    # Restarted with an empty tmpfs: unconfigured, so it refuses everything (fail closed).
    _wait(lambda: inside(a, PROBE) == "503", what="the restarted proxy to answer")
    token_free = 'curl -s -o /dev/null -w "%{http_code}" http://proxy:3128/_devbox/health'
    assert inside(a, token_free) == "503"
    assert {d["name"]: d for d in cli.json("list")}[a]["proxy"]["configured"] is False
    assert cli.sh(a, PROBE).stdout == "200"  # devbox exec handed it its config first
