"""Host gateways end to end, with real tools in a devbox and a real server behind TLS: git
clone and push over HTTPS to git's own smart-HTTP backend (tests/docker/git_server.py), curl
and Python reaching an intercepted host with the credential swapped in, a host no gateway
names still tunnelled end to end (the box sees the server's own certificate), and a hunt for
the secret, the devbox CA's private key and the gateway token everywhere they must not be.

The forge (git.example.test) and a plain host (plain.example.test) are one container on the
test egress network, with a certificate from a test CA of this module; the gateway trusts
that CA with --ca-cert, as it would a corporate one. The box trusts only its devbox CA and
the system CAs, so anything it reaches with the forge's name is the proxy's doing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devbox_cli import Client
from tests.docker.conftest import PROXY_IMAGE, RUN, Cli, docker

pytestmark = pytest.mark.docker

FORGE, PLAIN = "git.example.test", "plain.example.test"
PREFIX = "GIT_TOKEN"
REPO = f"https://{FORGE}/git/demo.git"
# what a credential helper says to git: `gh auth git-credential` answers the same way
HELPER = '!f() { echo username=x-access-token; echo "password=$GIT_TOKEN"; }; f'


@dataclass
class Forge:
    cli: Cli
    secret: str  # the real credential, user:password for Basic
    container: str
    root: str  # the repositories' directory inside the forge container
    ca_pem: Path  # the test CA that signed the forge's certificate
    cert_sha256: str  # of the forge's own certificate (what a tunnelled client sees)
    boxes: list[str] = field(default_factory=list)

    @property
    def expected_auth(self) -> str:
        return hashlib.sha256(b"Basic " + base64.b64encode(self.secret.encode())).hexdigest()

    def log(self) -> list[dict]:
        out = docker("logs", self.container).stdout.splitlines()
        return [json.loads(line) for line in out if line.startswith("{")][1:]


@pytest.fixture(scope="module")
def forge(module_cli: Cli, tmp_path_factory) -> Iterator[Forge]:
    import trustme

    cli = module_cli
    work = tmp_path_factory.mktemp("forge")
    ca = trustme.CA()
    cert = ca.issue_cert(FORGE, PLAIN)
    cert.cert_chain_pems[0].write_to_path(str(work / "cert.pem"))
    cert.private_key_pem.write_to_path(str(work / "key.pem"))
    ca.cert_pem.write_to_path(str(work / "ca.pem"))
    (work / "git_server.py").write_text(Path(__file__).with_name("git_server.py").read_text())
    for path in (work, *work.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    der = __import__("ssl").PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())
    secret = "git:" + secrets.token_urlsafe(24)
    expected = hashlib.sha256(b"Basic " + base64.b64encode(secret.encode())).hexdigest()
    container = f"{RUN}-forge"
    docker(
        "run", "-d", "--name", container, "--label", f"devbox.test={RUN}",
        "--network", cli.infra.egress, f"--network-alias={FORGE}", f"--network-alias={PLAIN}",
        "--user", "0", "-v", f"{work}:/srv:ro", "--entrypoint", "/opt/proxy/bin/python",
        PROXY_IMAGE, "/srv/git_server.py", "/srv/cert.pem", "/srv/key.pem", expected,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while '"ready"' not in (logs := docker("logs", container)).stdout:
        assert time.monotonic() < deadline, logs.stderr
        time.sleep(0.1)
    root = json.loads(logs.stdout.splitlines()[0])["root"]
    ip = docker(
        "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container
    ).stdout.strip()
    cli("secret", "create", "FORGE", input=secret)
    cli("gateway", "create", "forge", "--host", FORGE, "--auth", "basic",
        "--ca-cert", str(work / "ca.pem"))  # fmt: skip
    # the plain host is an ordinary policy host (on a private test subnet, hence the cidr);
    # the forge needs no rule: a host gateway's host is admitted as a gateway route is
    cli("policy", "create", "plain-only", "--allow", PLAIN, "--allow-cidr", f"{ip}/32")
    state = Forge(cli, secret, container, root, work / "ca.pem", hashlib.sha256(der).hexdigest())
    try:
        yield state
    finally:
        for box in state.boxes:
            cli("delete", box, check=False)


@pytest.fixture(scope="module")
def forge_box(forge: Forge) -> Callable[..., str]:
    """`forge_box(suffix, policy="plain-only")` -> a devbox bound to the forge gateway
    (a fetch-only policy can be handed in here once policies have request rules)."""
    made: dict[tuple[str, str], str] = {}

    def make(suffix: str = "box", policy: str = "plain-only") -> str:
        if (suffix, policy) not in made:
            name = f"{RUN}-{suffix}"
            forge.cli("create", name, "--gateway", f"{PREFIX}=forge:FORGE",
                      "--network-policy", policy)  # fmt: skip
            forge.boxes.append(name)
            made[(suffix, policy)] = name
        return made[(suffix, policy)]

    return make


@pytest.fixture(scope="module")
def box(forge_box) -> str:
    return forge_box()


def sh(forge: Forge, box: str, script: str) -> subprocess.CompletedProcess:
    return forge.cli.sh(box, script)


def whoami(forge: Forge, box: str, client: str) -> dict:
    proc = sh(forge, box, client)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# -- git -----------------------------------------------------------------------------------


def git_clone_and_push(
    forge: Forge, box: str, message: str
) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """Clone the demo repository in the box, then push a commit: (clone, push)."""
    clone = sh(
        forge,
        box,
        f"""set -e
        rm -rf /tmp/demo && cd /tmp
        git -c credential.helper='{HELPER}' clone -q {REPO} demo
        cat demo/README""",
    )
    push = sh(
        forge,
        box,
        f"""set -e
        cd /tmp/demo
        git config user.email agent@devbox && git config user.name agent
        echo "{message}" > change && git add change && git commit -qm "{message}"
        git -c credential.helper='{HELPER}' push -q origin main""",
    )
    return clone, push


def forge_commits(forge: Forge) -> list[str]:
    out = docker("exec", forge.container, "git", "--git-dir", f"{forge.root}/demo.git",
                 "log", "--format=%s", "main")  # fmt: skip
    return out.stdout.split("\n")


def test_git_clone_and_push_get_the_credential_and_the_token_never_upstream(forge, box):
    before = len(forge.log())
    clone, push = git_clone_and_push(forge, box, "pushed from the box")
    assert clone.returncode == 0, clone.stderr
    assert clone.stdout == "hello from the git server\n"
    assert push.returncode == 0, push.stderr
    assert forge_commits(forge)[0] == "pushed from the box"
    seen = forge.log()[before:]
    # git asks anonymously first (401), then with its helper's token, swapped by the proxy
    assert seen[0]["auth_ok"] is False
    assert {r["path"] for r in seen if r.get("auth_ok")} >= {
        "/git/demo.git/info/refs", "/git/demo.git/git-upload-pack",
        "/git/demo.git/git-receive-pack",
    }  # fmt: skip
    assert not any(r["token"] for r in seen), "a gateway token reached the server"


def test_the_egress_log_names_the_intercepted_requests(forge, box):
    git_clone_and_push(forge, box, "for the log")
    records = [r.fields for r in Client(str(forge.cli.home)).egress_log(box) if r.fields]
    pushes = [r for r in records if r["kind"] == "intercept" and r["method"] == "POST"]
    assert {r["path"] for r in pushes} >= {"/git/demo.git/git-receive-pack"}
    assert all(r["host"] == FORGE and r["port"] == 443 for r in pushes)
    assert all(r["credential"] is True and r["decision"] == "allow" for r in pushes)
    assert all(r["prefix"] == PREFIX and r["rule"] == "gateway" for r in pushes)
    anonymous = [r for r in records if r["kind"] == "intercept" and r["credential"] is False]
    assert anonymous and all(r["status"] == 401 for r in anonymous)
    connects = [r for r in records if r["kind"] == "connect" and r["host"] == FORGE]
    assert connects and all(r["rule"] == "intercept" for r in connects)


# -- curl and Python -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "client",
    [
        'curl -sS https://{host}/whoami -H "Authorization: Bearer $GIT_TOKEN"',
        'curl -sS -u "x-access-token:$GIT_TOKEN" https://{host}/whoami',
        'curl -sS https://{host}/whoami -H "x-api-key: $GIT_TOKEN"',
        "python3 -c \"import os, urllib.request as u; r = u.Request('https://{host}/whoami',"
        " headers={{'Authorization': 'token ' + os.environ['GIT_TOKEN']}});"
        ' print(u.urlopen(r).read().decode())"',
        'python3 -c "import http.client, os, base64;'
        " c = http.client.HTTPSConnection('proxy', 3128); c.set_tunnel('{host}');"
        " t = base64.b64encode((os.environ['GIT_TOKEN'] + ':x-oauth-basic').encode()).decode();"
        " c.request('GET', '/whoami', headers={{'Authorization': 'Basic ' + t}});"
        ' print(c.getresponse().read().decode())"',
    ],
    ids=["curl-bearer", "curl-basic", "curl-x-api-key", "urllib-token", "http.client-basic"],
)
def test_curl_and_python_reach_the_host_with_the_credential_swapped_in(forge, box, client):
    answer = whoami(forge, box, client.format(host=FORGE))
    assert answer["host"] == FORGE
    assert answer["auth_sha256"] == forge.expected_auth
    assert answer["api_key_sha256"] is None  # the token's header went, the credential came
    assert answer["token_seen"] is False


def test_pips_vendored_requests_trusts_the_bundle_too(forge, box):
    # requests (as pip, the AWS CLI and many SDKs carry it) reads REQUESTS_CA_BUNDLE
    script = (
        "python3 - <<'EOF'\n"
        "import glob, os, sys\n"
        "sys.path.insert(0, glob.glob('/usr/share/python-wheels/pip-*.whl')[0])\n"
        "from pip._vendor import requests\n"
        f"r = requests.get('https://{FORGE}/whoami', auth=('x', os.environ['GIT_TOKEN']))\n"
        "print(r.text)\n"
        "EOF"
    )
    answer = whoami(forge, box, script)
    assert answer["auth_sha256"] == forge.expected_auth and answer["token_seen"] is False


def test_a_request_without_the_token_goes_without_a_credential(forge, box):
    answer = whoami(forge, box, f"curl -sS https://{FORGE}/whoami -H 'Authorization: Bearer mine'")
    assert answer["auth_sha256"] == hashlib.sha256(b"Bearer mine").hexdigest()
    answer = whoami(forge, box, f"curl -sS https://{FORGE}/whoami")
    assert answer["auth_sha256"] is None


def test_a_reflected_credential_comes_back_redacted(forge, box):
    proc = sh(forge, box, f'curl -sS -D - -u "x:$GIT_TOKEN" https://{FORGE}/reflect')
    assert proc.returncode == 0, proc.stderr
    assert "[REDACTED]" in proc.stdout
    assert base64.b64encode(forge.secret.encode()).decode() not in proc.stdout


def test_a_host_header_naming_another_host_gets_421_and_no_credential(forge, box):
    before = len(forge.log())
    curl = f'curl -s -o /dev/null -w "%{{http_code}}" -H "Host: {PLAIN}"'
    proc = sh(forge, box, f'{curl} -H "Authorization: Bearer $GIT_TOKEN" https://{FORGE}/whoami')
    assert proc.stdout == "421"
    assert forge.log()[before:] == []


# -- what is not intercepted ---------------------------------------------------------------

PEER_CERT = """python3 - <<'EOF'
import hashlib, socket, ssl
s = socket.create_connection(("proxy", 3128))
s.sendall(b"CONNECT {host}:443 HTTP/1.1\\r\\nHost: {host}:443\\r\\n\\r\\n")
head = b""
while not head.endswith(b"\\r\\n\\r\\n"):
    head += s.recv(1)
ctx = ssl.create_default_context(cafile="{cafile}")
t = ctx.wrap_socket(s, server_hostname="{host}")
print(hashlib.sha256(t.getpeercert(True)).hexdigest())
print(dict(x[0] for x in t.getpeercert()["issuer"]).get("commonName"))
EOF"""


def test_a_host_no_gateway_names_is_tunnelled_and_shows_its_own_certificate(forge, box):
    forge.cli("exec", "-i", box, "--", "sh", "-c", "cat > /tmp/test-ca.pem",
              input=forge.ca_pem.read_text())  # fmt: skip
    proc = sh(forge, box, PEER_CERT.format(host=PLAIN, cafile="/tmp/test-ca.pem"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[0] == forge.cert_sha256
    # the same server under the intercepted name: the proxy's leaf, from the devbox CA
    proc = sh(forge, box, PEER_CERT.format(host=FORGE, cafile="/etc/devbox/ca-bundle.pem"))
    assert proc.returncode == 0, proc.stderr
    sha, issuer = proc.stdout.split("\n")[:2]
    assert sha != forge.cert_sha256
    assert issuer == f"devbox {box} interception CA"


def test_the_box_trusts_its_ca_in_the_system_store_too(forge, box):
    # a client that reads none of the variables, only the system store's file and hashes
    proc = sh(forge, box, "env -u SSL_CERT_FILE -u CURL_CA_BUNDLE curl -sS -o /dev/null "
                          f"-w '%{{http_code}}' https://{FORGE}/whoami")  # fmt: skip
    assert proc.stdout == "200", proc.stderr
    proc = sh(forge, box, "env -u SSL_CERT_FILE python3 -c \"import urllib.request as u;"
                          f" print(u.urlopen('https://{FORGE}/whoami').status)\"")  # fmt: skip
    assert proc.stdout.strip() == "200", proc.stderr


def test_show_reports_the_ca_and_its_hosts(forge, box):
    shown = forge.cli.json("show", box)
    assert shown["ca"]["hosts"] == [FORGE]
    assert len(shown["ca"]["sha256"].split(":")) == 32
    env = forge.cli("exec", box, "--", "env").stdout
    for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
                "GIT_SSL_CAINFO", "PIP_CERT", "AWS_CA_BUNDLE"):  # fmt: skip
        assert f"{var}=/etc/devbox/ca-bundle.pem" in env


# -- the hunt ------------------------------------------------------------------------------


def _needles(forge: Forge, box: str) -> dict[str, str]:
    ca = Client(str(forge.cli.home)).configs.authorities.load(box)
    assert ca is not None
    body = "".join(line for line in ca.authority.key.splitlines() if "-----" not in line)
    token = forge.cli("exec", box, "--", "sh", "-c", f"echo ${PREFIX}").stdout.strip()
    assert token.startswith("gwt_")
    # a 64-character line of the key's base64 is the key in any PEM file
    return {"secret": forge.secret, "ca key": body[:64], "token": token}


def test_the_secret_the_ca_key_and_the_token_are_found_nowhere(forge, box):
    git_clone_and_push(forge, box, "for the hunt")  # everything used, every chance to leak
    needles = _needles(forge, box)
    hunt = (
        "cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n' > /tmp/procs;"
        'printf %s "$(cat)" > /tmp/needle;'
        "grep -cF -f /tmp/needle /tmp/procs;"
        "grep -rlF -f /tmp/needle / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev"
        " | grep -v '^/tmp/needle$' ; rm -f /tmp/needle /tmp/procs; :"
    )
    for what in ("secret", "ca key"):
        proc = forge.cli("exec", "-i", "-u", "root", box, "--", "sh", "-c", hunt,
                         input=needles[what])  # fmt: skip
        lines = proc.stdout.split()
        assert lines[0] == "0", f"the {what} is in a process's environment or command line"
        assert lines[1:] == [], f"the {what} is in the box's files {lines[1:]}"
    for container in (f"devbox-{box}", f"devbox-{box}-proxy"):
        inspect = docker("inspect", container).stdout
        for what in ("secret", "ca key"):
            assert needles[what] not in inspect, f"the {what} is in docker inspect {container}"
        logs = docker("logs", container)
        for what, needle in needles.items():
            assert needle not in logs.stdout + logs.stderr, f"the {what} is in {container}'s logs"
    for what in ("secret", "ca key"):
        assert all(needles[what] not in out for out in forge.cli.transcript), f"{what} printed"
        stored = subprocess.run(["grep", "-rlF", "--", needles[what], str(forge.cli.home)],
                                capture_output=True, text=True, check=False)  # fmt: skip
        assert stored.stdout == "", f"the {what} is in the store in plaintext"
    # and the token never reached the server, in any request of this module
    assert not any(r["token"] for r in forge.log())


def test_deleting_the_devbox_removes_its_ca(forge, forge_box):
    name = forge_box("short-lived")
    client = Client(str(forge.cli.home))
    assert client.configs.authorities.summary(name) is not None
    forge.cli("delete", name)
    forge.boxes.remove(name)
    assert client.configs.authorities.summary(name) is None


def test_repair_hands_the_proxy_its_ca_again(forge, box):
    # a proxy restarted as a whole comes back unconfigured; repair reads the sealed CA back
    docker("restart", f"devbox-{box}-proxy")
    forge.cli("repair", box)
    answer = whoami(forge, box, f'curl -sS -u "x:$GIT_TOKEN" https://{FORGE}/whoami')
    assert answer["auth_sha256"] == forge.expected_auth


def test_a_create_that_fails_late_leaves_no_ca_behind(forge, monkeypatch):
    from devbox_cli.errors import DevboxRuntimeError
    from devbox_cli.services import create

    def broken(*args, **kwargs):
        raise DevboxRuntimeError("the image has no /bin/sh")

    monkeypatch.setattr(create, "install_ca", broken)
    monkeypatch.setenv("DEVBOX_HOME", str(forge.cli.home))
    monkeypatch.setenv("DEVBOX_EGRESS_NETWORK", forge.cli.infra.egress)
    client = Client(str(forge.cli.home))
    name = f"{RUN}-doomed"
    with pytest.raises(DevboxRuntimeError, match="no /bin/sh"):
        client.create_devbox(name, gateways={PREFIX: ("forge", "FORGE")})
    assert client.configs.authorities.summary(name) is None
    assert docker("ps", "-aq", "--filter", f"label=devbox.name={name}").stdout == ""


def test_two_bound_gateways_naming_one_host_is_a_create_time_error(forge):
    forge.cli("gateway", "create", "forge-too", "--host", FORGE.upper(), "--auth", "bearer")
    name = f"{RUN}-clash"
    proc = forge.cli("create", name, "--gateway", f"{PREFIX}=forge:FORGE",
                     "--gateway", "OTHER=forge-too:FORGE", check=False)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert f"host {FORGE} is intercepted by both gateway forge" in proc.stderr
    assert docker("ps", "-aq", "--filter", f"label=devbox.name={name}").stdout == ""
    assert Client(str(forge.cli.home)).configs.authorities.summary(name) is None
    forge.cli("gateway", "delete", "forge-too")


def test_installing_a_ca_again_replaces_the_one_before(forge):
    # a box made from a snapshot of another devbox carries that one's CA in its files
    from devbox_cli.engine.docker_backend import DockerBackend
    from devbox_cli.engine.trust import install_ca
    from devbox_cli.services.authority import new_ca
    from tests.docker.conftest import IMAGES

    probe = f"{RUN}-trust-probe"
    docker("run", "-d", "--name", probe, "--label", f"devbox.test={RUN}", "--network", "none",
           IMAGES.default, "sleep", "300")  # fmt: skip
    try:
        first, second = new_ca("one", [FORGE]), new_ca("two", [FORGE])
        for ca in (first, second):
            install_ca(DockerBackend(), probe, ca.authority.cert)
        for path in ("/etc/ssl/certs/ca-certificates.crt", "/etc/devbox/ca-bundle.pem"):
            text = docker("exec", probe, "cat", path).stdout
            assert second.authority.cert.strip() in text
            assert first.authority.cert.strip() not in text, path
        links = docker("exec", probe, "find", "/etc/ssl/certs", "-lname", "devbox.pem").stdout
        assert len(links.split()) == 1
    finally:
        docker("rm", "-f", probe, check=False)
