"""The announcement's walkthrough end to end, as CLI commands against the real engine:
gateway, secret, policy, devbox, then a credentialed call from inside. Plus the policy's
effect, live policy updates, in-use deletes, and a hunt for the secret's value everywhere."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.docker.conftest import IMAGES, RUN, Cli, docker

pytestmark = pytest.mark.docker

PREFIX = "ANTHROPIC_API_KEY"


@dataclass
class Walk:
    cli: Cli
    name: str
    secret: str
    created: dict


@pytest.fixture(scope="module")
def walk(module_cli: Cli):
    cli = module_cli
    infra = cli.infra
    secret = "sk-ant-test-" + secrets.token_hex(20)
    name = f"{RUN}-walk"
    # 1. a gateway for the endpoint (the test CA stands in for the public PKI)
    cli("gateway", "create", "anthropic-gateway", "--endpoint", "https://api.anthropic.com",
        "--ca-cert", str(infra.ca_pem))  # fmt: skip
    # 2. the secret, from stdin
    cli("secret", "create", "ANTHROPIC", input=secret)
    # 3. the policy (the stand-in upstream lives on a private subnet, hence --allow-cidr)
    cli("policy", "create", "anthropic-only", "--allow", "*.anthropic.com",
        "--allow", "anthropic.com", "--allow-cidr", f"{infra.upstream_ip}/32")  # fmt: skip
    # 4. the devbox
    created = cli.json("create", name, "--gateway", f"{PREFIX}=anthropic-gateway:ANTHROPIC",
                       "--network-policy", "anthropic-only")  # fmt: skip
    # the test CA inside the box, for HTTPS through the proxy's CONNECT tunnels
    cli("exec", "-i", name, "--", "sh", "-c", "cat > /tmp/ca.pem", input=infra.ca_pem.read_text())
    try:
        yield Walk(cli, name, secret, created)
    finally:
        cli("delete", name, check=False)


def test_create_prints_the_devbox_as_json(walk: Walk):
    c = walk.created
    assert c["name"] == walk.name
    assert c["status"] == "running" and c["id"]
    assert c["image"] == IMAGES.default
    assert c["policy"] == "anthropic-only"
    assert c["gateways"] == [
        {"prefix": PREFIX, "gateway": "anthropic-gateway", "secret": "ANTHROPIC",
         "url": f"http://proxy:3128/gw/{PREFIX}"}
    ]  # fmt: skip
    assert c["proxy"]["status"] == "running" and c["proxy"]["id"]


def test_inside_the_url_and_a_token_that_is_not_the_secret(walk: Walk):
    url = walk.cli("exec", walk.name, "--", "sh", "-c", f"echo ${PREFIX}_URL").stdout.strip()
    assert url == f"http://proxy:3128/gw/{PREFIX}"
    token = walk.cli("exec", walk.name, "--", "sh", "-c", f"echo ${PREFIX}").stdout.strip()
    assert token.startswith("gwt_") and len(token) > 40
    assert token != walk.secret and walk.secret not in token


def test_the_gateway_call_reaches_the_upstream_with_the_real_secret(walk: Walk):
    body = '{"model":"claude","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}'
    proc = walk.cli.sh(
        walk.name,
        f'curl -sS -X POST "${PREFIX}_URL/v1/messages" -H "Authorization: Bearer ${PREFIX}" '
        f"-H 'content-type: application/json' -d '{body}'",
    )
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["content"][0]["text"] == "hello from the stand-in upstream"
    assert answer["host"] == "api.anthropic.com"
    expected = hashlib.sha256(f"Bearer {walk.secret}".encode()).hexdigest()
    assert answer["auth_sha256"] == expected  # the upstream got the real secret
    assert answer["body_sha256"] == hashlib.sha256(body.encode()).hexdigest()


def test_a_wrong_token_gets_401_and_nothing_more(walk: Walk):
    proc = walk.cli.sh(
        walk.name,
        f'curl -s -o /dev/null -w "%{{http_code}}" -X POST "${PREFIX}_URL/v1/messages" '
        '-H "Authorization: Bearer gwt_wrong"',
    )
    assert proc.stdout == "401"


def test_an_allowed_host_is_reachable_through_https_proxy(walk: Walk):
    proc = walk.cli.sh(walk.name, "curl -sS --cacert /tmp/ca.pem https://www.anthropic.com/hi")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello from www.anthropic.com\n"


@pytest.mark.parametrize(
    "url", ["http://other.example.test/", "http://10.0.0.1/", "http://172.17.0.1:8080/"]
)
def test_any_other_host_is_refused_with_403(walk: Walk, url: str):
    proc = walk.cli.sh(walk.name, f'curl -s -o /dev/null -w "%{{http_code}}" {url}')
    assert proc.stdout == "403"


@pytest.mark.parametrize("url", ["http://example.com/", "http://api.anthropic.com.evil.test/"])
def test_an_unresolvable_other_host_is_refused_with_403(walk: Walk, url: str):
    # A name no allow rule admits is refused on the name, never looked up, although this
    # test policy has an --allow-cidr (it admits addresses of admitted names only).
    proc = walk.cli.sh(walk.name, f'curl -s -o /dev/null -w "%{{http_code}}" {url}')
    assert proc.stdout == "403"


def test_an_https_tunnel_to_another_host_is_refused_with_403(walk: Walk):
    proc = walk.cli.sh(
        walk.name, 'curl -s -o /dev/null -w "%{http_connect}" https://other.example.test/'
    )
    assert proc.returncode != 0
    assert proc.stdout == "403"


def test_bypassing_the_proxy_fails(walk: Walk):
    upstream = walk.cli.infra.upstream_ip
    proc = walk.cli.sh(
        walk.name,
        "for u in https://api.anthropic.com/ http://"
        + upstream
        + "/ https://"
        + upstream
        + "/; do curl --noproxy '*' -sk -m 3 -o /dev/null \"$u\" && echo REACHED $u; done; :",
    )
    assert "REACHED" not in proc.stdout


def test_show_and_list_report_the_devbox(walk: Walk):
    shown = walk.cli.json("show", walk.name)
    assert shown["proxy"]["health"] == "ok"
    assert shown["gateways"][0]["url"] == f"http://proxy:3128/gw/{PREFIX}"
    listed = {b["name"]: b for b in walk.cli.json("list")}
    assert listed[walk.name]["status"] == "running"
    assert listed[walk.name]["policy"] == "anthropic-only"
    text = walk.cli("show", walk.name).stdout
    assert f"${PREFIX}_URL" in text and "anthropic-only" in text


def test_the_egress_log_records_requests_as_json_lines(walk: Walk):
    walk.cli.sh(walk.name, "curl -s -o /dev/null http://other.example.test/denied")
    lines = walk.cli("logs", walk.name, "--egress", "-o", "json").stdout.splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert any(r.get("kind") == "gateway" and r.get("status") == 200 for r in records)
    assert any(r.get("host") == "other.example.test" and r.get("status") == 403 for r in records)


EGRESS_COLUMNS = ["TIME", "DECISION", "METHOD", "HOST:PORT", "PATH", "STATUS", "RULE", "BYTES",
                  "DURATION"]  # fmt: skip
RED = "\x1b[31m"


def test_the_egress_log_for_people_is_aligned_columns(walk: Walk):
    walk.cli.sh(walk.name, "curl -s -o /dev/null http://other.example.test/denied")
    lines = walk.cli("logs", walk.name, "--egress", env={"COLUMNS": "200"}).stdout.splitlines()
    assert lines[0].split() == EGRESS_COLUMNS
    rows = [line.split() for line in lines[1:]]
    assert ["allow", "POST", "api.anthropic.com:443", "/v1/messages", "200"] in [
        r[1:6] for r in rows
    ]
    assert ["deny", "GET", "other.example.test:80", "/denied", "403"] in [r[1:6] for r in rows]
    status_at = lines[0].index("STATUS")
    assert all(line[status_at - 1] == " " and line[status_at] != " " for line in lines[1:])


def test_the_egress_log_filters(walk: Walk):
    def rows(*flags: str) -> list[list[str]]:
        out = walk.cli("logs", walk.name, "--egress", *flags, env={"COLUMNS": "200"}).stdout
        return [line.split() for line in out.splitlines()[1:]]

    everything = rows()
    denied = rows("--denied")
    assert denied and all(r[1] != "allow" for r in denied)
    assert len(denied) == sum(r[1] != "allow" for r in everything)
    other = rows("--host", "other.*")
    assert other and all(r[3].startswith("other.example.test:") for r in other)
    assert len(rows("--since", "1h")) == len(everything)
    none = walk.cli("logs", walk.name, "--egress", "--since", "2999-01-01T00:00:00Z")
    assert none.stdout.splitlines()[1:] == [] and "no egress that matches" in none.stderr
    as_json = walk.cli("logs", walk.name, "--egress", "--denied", "-o", "json").stdout
    records = [json.loads(line) for line in as_json.splitlines()]
    assert records and all(r["decision"] != "allow" for r in records)


def test_denials_stand_out_in_red_unless_no_color(walk: Walk):
    coloured = walk.cli("logs", walk.name, "--egress", env={"FORCE_COLOR": "1"}).stdout
    denial = next(line for line in coloured.splitlines() if "/denied" in line)
    allowed = next(line for line in coloured.splitlines() if "/v1/messages" in line)
    assert RED in denial and RED not in allowed
    plain = walk.cli("logs", walk.name, "--egress", env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert "/denied" in plain.stdout and RED not in plain.stdout


def test_policy_update_is_in_force_when_the_command_returns(walk: Walk):
    # `policy update` returns once every running proxy has applied the change (the push is
    # acknowledged), so the very next request already sees it: no waiting, no clock.
    probe = 'curl -s -o /dev/null -w "%{http_code}" http://other.example.test/'
    assert walk.cli.sh(walk.name, probe).stdout == "403"
    other = f"{walk.cli.infra.other_ip}/32"
    # the name needs an allow rule; the allow-cidr lets its private address in
    out = walk.cli.json("policy", "update", "anthropic-only", "--add-allow", "other.example.test",
                        "--add-allow-cidr", other)  # fmt: skip
    try:
        assert out["applied_to"] == [walk.name]
        assert walk.cli.sh(walk.name, probe).stdout == "200"
        # no restart: the box and its proxy kept running
        shown = walk.cli.json("show", walk.name)
        assert (
            shown["id"] == walk.created["id"]
            and shown["proxy"]["id"] == walk.created["proxy"]["id"]
        )
    finally:
        walk.cli("policy", "update", "anthropic-only", "--remove-allow", "other.example.test",
                 "--remove-allow-cidr", other)  # fmt: skip
    assert walk.cli.sh(walk.name, probe).stdout == "403"


@pytest.mark.parametrize(
    "kind,name", [("secret", "ANTHROPIC"), ("gateway", "anthropic-gateway"),
                  ("policy", "anthropic-only")]
)  # fmt: skip
def test_deleting_what_a_devbox_uses_is_refused_naming_it(walk: Walk, kind: str, name: str):
    proc = walk.cli(kind, "delete", name, check=False)
    assert proc.returncode == 4, proc.stderr
    assert walk.name in proc.stderr


def test_the_secret_value_is_found_nowhere(walk: Walk, tmp_path: Path):
    secret, box, cli = walk.secret, walk.name, walk.cli
    # Make sure the secret has been used, so it had every chance to leak.
    test_the_gateway_call_reaches_the_upstream_with_the_real_secret(walk)
    # Inside the box: every process's environment and command line, and the filesystem. The
    # secret goes in on stdin (grep -f), so it is not on a command line itself.
    hunt = (
        "cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n' > /tmp/procs;"
        'printf %s "$(cat)" > /tmp/needle;'
        "grep -cF -f /tmp/needle /tmp/procs;"
        "grep -rlF -f /tmp/needle / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev"
        " | grep -v '^/tmp/needle$' ; rm -f /tmp/needle; :"
    )
    proc = cli("exec", "-i", "-u", "root", box, "--", "sh", "-c", hunt, input=secret)
    lines = proc.stdout.split()
    assert lines[0] == "0", "the secret is in a process's environment or command line"
    assert lines[1:] == [], f"the secret is in files {lines[1:]}"
    env = cli("exec", box, "--", "env").stdout
    assert secret not in env
    # docker inspect of both containers (their files on the host's disk: the next test)
    for container in (f"devbox-{box}", f"devbox-{box}-proxy"):
        inspect = docker("inspect", container).stdout
        assert secret not in inspect, f"docker inspect {container}"
    # the proxy's logs (audit and diagnostics), and every CLI output of this module
    logs = docker("logs", f"devbox-{box}-proxy")
    assert secret not in logs.stdout + logs.stderr
    assert all(secret not in out for out in cli.transcript)
    # the store on disk holds it sealed only
    stored = subprocess.run(
        ["grep", "-rlF", "--", secret, str(cli.home)], capture_output=True, text=True, check=False
    )
    assert stored.stdout == ""


def _grep_files(needle: str, directory: str) -> list[str]:
    """The files under `directory` holding `needle`; fails when grep could not read them all."""
    found = subprocess.run(
        ["grep", "-rlF", "--", needle, directory], capture_output=True, text=True, check=False
    )
    assert found.returncode in (0, 1), f"grep could not search {directory}: {found.stderr}"
    return found.stdout.split()


def test_the_secret_value_is_not_in_the_containers_files_on_the_host(walk: Walk):
    # Needs read access to Docker's data root (root on the engine's host); a hunt that
    # cannot look is a skip that says so, never a pass.
    test_the_gateway_call_reaches_the_upstream_with_the_real_secret(walk)
    for container in (f"devbox-{walk.name}", f"devbox-{walk.name}-proxy"):
        info = json.loads(docker("inspect", container).stdout)[0]
        directory = str(Path(info["HostnamePath"]).parent)  # /var/lib/docker/containers/<id>
        if not os.access(directory, os.R_OK | os.X_OK):
            pytest.skip(f"cannot read {directory} (Docker's data root): run as root to hunt there")
        # The hunt can see: the container's own name is in its config there.
        assert _grep_files(info["Name"].lstrip("/"), directory), f"nothing readable in {directory}"
        assert _grep_files(walk.secret, directory) == [], "the secret is on the host's disk"


def _gateway_answer(walk: Walk) -> dict:
    proc = walk.cli.sh(
        walk.name,
        f'curl -sS -X POST "${PREFIX}_URL/v1/messages" -H "x-api-key: ${PREFIX}" -d "{{}}"',
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_a_rotated_secret_reaches_the_running_devbox_live(walk: Walk):
    # Last in this module: it changes the secret the fixture made.
    proxy = f"devbox-{walk.name}-proxy"
    started = docker("inspect", "-f", "{{.State.StartedAt}}", proxy).stdout
    rotated = "sk-ant-rotated-" + secrets.token_hex(20)
    out = walk.cli.json("secret", "update", "ANTHROPIC", input=rotated)
    assert out["applied_to"] == [walk.name]
    expected = hashlib.sha256(f"Bearer {rotated}".encode()).hexdigest()
    assert _gateway_answer(walk)["auth_sha256"] == expected
    assert docker("inspect", "-f", "{{.State.StartedAt}}", proxy).stdout == started
    assert all(rotated not in out for out in walk.cli.transcript)
    walk.secret = rotated


def test_a_gateway_update_reaches_the_running_devbox_live(walk: Walk):
    out = walk.cli.json("gateway", "update", "anthropic-gateway", "--header", "x-team=agents")
    assert out["applied_to"] == [walk.name]
    assert _gateway_answer(walk)["x_team"] == "agents"
