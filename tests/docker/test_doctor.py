"""`devbox doctor` against the real engine: it passes on a healthy setup (the isolation probe
included, from a throwaway devbox it always removes) and fails, naming the fix, when the
egress network is gone or unfit, an image is missing, or a proxy is unconfigured. It also
runs against the nested engine (`make test-engines`): isolation on the engine users run."""

from __future__ import annotations

import json
import time

import pytest

from tests.docker.conftest import RUN, Cli, docker

pytestmark = pytest.mark.docker


def doctor(cli: Cli, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict]:
    proc = cli("doctor", "-o", "json", *args, check=False, env=env)
    assert "Traceback" not in proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def by_name(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


def health(name: str) -> str:
    url = "http://proxy:3128/_devbox/health"
    curl = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url]
    return docker("exec", f"devbox-{name}", *curl, check=False).stdout


def probe_leftovers() -> list[str]:
    names = docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
    names += docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    return sorted(n for n in names if n.startswith("devbox-doctor-"))


@pytest.fixture(scope="module")
def healthy(module_cli: Cli):
    name = f"{RUN}-doc"
    module_cli("create", name)
    try:
        yield module_cli, name
    finally:
        module_cli("delete", name, check=False)


def test_a_healthy_setup_passes_every_check_and_leaves_nothing(healthy):
    cli, name = healthy
    before = probe_leftovers()
    code, report = doctor(cli)
    checks = by_name(report)
    assert code == 0 and report["ok"] is True, [
        c for c in report["checks"] if c["status"] != "pass"
    ]
    assert checks["engine"]["detail"].startswith("Docker ")
    assert checks[f"devbox {name}"]["status"] == "pass"
    assert checks["isolation control"]["status"] == "pass"  # the probe box reached its proxy
    probes = [c for c in report["checks"] if c["name"].startswith("isolation ")]
    kinds = {c["name"].split()[1] for c in probes}
    assert {"host", "dns/udp", "dns/tcp", "dns-name", "internet"} <= kinds
    assert any(cli.infra.gateway_ip in c["name"] for c in probes)  # the egress bridge's gateway
    assert all(c["status"] == "pass" for c in probes)
    assert probe_leftovers() == before  # the throwaway devbox is gone, network and all
    text = cli("doctor", "--no-probe")
    assert "PASS" in text.stdout and "FAIL" not in text.stdout


def test_a_missing_egress_network_fails_naming_the_fix(healthy):
    cli, _name = healthy
    code, report = doctor(cli, env={"DEVBOX_EGRESS_NETWORK": f"{RUN}-gone"})
    checks = by_name(report)
    assert code == 1 and report["ok"] is False
    assert checks["egress network"]["status"] == "fail"
    assert f"docker network create {RUN}-gone" in checks["egress network"]["fix"]
    assert checks["isolation probe"]["status"] == "skip"
    assert checks["engine"]["status"] == "pass"


def test_an_internal_egress_network_fails(healthy):
    cli, _name = healthy
    net = f"{RUN}-internal"
    docker("network", "create", "--internal", "--label", f"devbox.test={RUN}", net)
    try:
        code, report = doctor(cli, "--no-probe", env={"DEVBOX_EGRESS_NETWORK": net})
    finally:
        docker("network", "rm", net, check=False)
    check = by_name(report)["egress network"]
    assert code == 1 and check["status"] == "fail"
    assert "internal" in check["detail"] and "DEVBOX_EGRESS_NETWORK" in check["fix"]


def test_a_missing_image_fails_naming_the_fix(healthy):
    cli, _name = healthy
    missing = f"devbox/proxy:missing-{RUN}"
    code, report = doctor(cli, env={"DEVBOX_PROXY_IMAGE": missing})
    check = by_name(report)["image (proxy)"]
    assert code == 1 and check["status"] == "fail"
    assert missing in check["detail"]
    assert "unset DEVBOX_PROXY_IMAGE" in check["fix"]
    assert by_name(report)["isolation probe"]["status"] == "skip"


def test_an_unconfigured_proxy_fails_naming_repair_and_doctor_heals_nothing(healthy):
    cli, name = healthy
    docker("restart", "-t", "1", f"devbox-{name}-proxy")
    deadline = time.monotonic() + 60
    while health(name) != "503":  # its server is up again, without its config
        assert time.monotonic() < deadline, "the restarted proxy never answered"
        time.sleep(0.2)
    code, report = doctor(cli, "--no-probe")
    check = by_name(report)[f"devbox {name}"]
    assert code == 1 and check["status"] == "fail"
    assert "unconfigured" in check["detail"] and "started again" in check["detail"]
    assert check["fix"].startswith(f"run `devbox repair {name}`")
    assert health(name) == "503"  # doctor only looked
    cli("repair", name)
    assert doctor(cli, "--no-probe")[0] == 0
