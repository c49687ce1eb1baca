"""Fixtures for the end-to-end tests against the real Docker engine.

Everything a test run makes carries the run id: devboxes are named `<RUN>-...` (so their
containers are `devbox-<RUN>-...`), and the stand-in upstream and the test egress network
carry the label devbox.test=<RUN>. A session finalizer removes all of it, even on failure.

The stand-in for api.anthropic.com is a container from the proxy image (it has python3 and
aiohttp) on the test egress network, with the network aliases api.anthropic.com,
www.anthropic.com and (another container) other.example.test, serving HTTPS with a trustme test CA.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devbox_cli.engine.images import image_refs

REPO = Path(__file__).resolve().parents[2]
RUN = f"t{secrets.token_hex(3)}"
IMAGES = image_refs()
PROXY_IMAGE = os.environ.get("DEVBOX_PROXY_IMAGE", IMAGES.proxy)
_venv_devbox = REPO / ".venv" / "bin" / "devbox"
DEVBOX = [str(_venv_devbox)] if _venv_devbox.exists() else [sys.executable, "-m", "devbox_cli"]


def docker(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        ["docker", *args], capture_output=True, text=True, input=input, timeout=120, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def residue(name: str) -> list[str]:
    """Every container or network left of devbox `name` (by label and by name)."""
    found = docker("ps", "-aq", "--filter", f"label=devbox.name={name}").stdout.split()
    found += docker("ps", "-aq", "--filter", f"name=^devbox-{name}(-proxy)?$").stdout.split()
    found += docker("network", "ls", "-q", "--filter", f"label=devbox.name={name}").stdout.split()
    found += docker("network", "ls", "-q", "--filter", f"name=^devbox-{name}-net$").stdout.split()
    return found


def _cleanup() -> None:
    for filt in (f"name=devbox-{RUN}", f"label=devbox.test={RUN}"):
        ids = docker("ps", "-aq", "--filter", filt, check=False).stdout.split()
        if ids:
            docker("rm", "-f", *ids, check=False)
    for filt in (f"name=devbox-{RUN}", f"label=devbox.test={RUN}"):
        ids = docker("network", "ls", "-q", "--filter", filt, check=False).stdout.split()
        if ids:
            docker("network", "rm", *ids, check=False)
    volumes = run_volumes()
    if volumes:
        docker("volume", "rm", "-f", *volumes, check=False)


def run_volumes() -> list[str]:
    """Every volume of this run: devbox volumes are named devbox-vol-<RUN>-..."""
    names = docker("volume", "ls", "-q", "--filter", f"name={RUN}", check=False).stdout.split()
    return sorted(n for n in names if RUN in n)


@dataclass
class Infra:
    egress: str  # the test egress network (DEVBOX_EGRESS_NETWORK)
    subnet: str
    gateway_ip: str  # the host's address on the egress bridge
    upstream_ip: str  # api.anthropic.com, www.anthropic.com
    other_ip: str  # other.example.test
    ca_pem: Path  # the test CA that signed the upstream's certificate
    workdir: Path


@dataclass
class Cli:
    """Runs the real CLI in a subprocess; keeps a transcript of everything it printed."""

    home: Path
    infra: Infra
    transcript: list[str] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DEVBOX_")}
        env.update(DEVBOX_HOME=str(self.home), DEVBOX_EGRESS_NETWORK=self.infra.egress)
        env.update(extra)
        return env

    def __call__(
        self,
        *args: str,
        input: str | bytes | None = None,
        check: bool = True,
        env: dict[str, str] | None = None,
        text: bool = True,
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [*DEVBOX, *args],
            input=input,
            capture_output=True,
            text=text,
            env=self.env(**(env or {})),
            timeout=180,
            check=False,
        )
        out, err = proc.stdout, proc.stderr
        if not text:
            out, err = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        self.transcript.append(out + err)
        if check and proc.returncode != 0:
            raise AssertionError(f"devbox {' '.join(args)} exited {proc.returncode}: {err}")
        return proc

    def json(self, *args: str, **kw: Any) -> Any:
        return json.loads(self(*args, "-o", "json", **kw).stdout)

    def sh(
        self, box: str, script: str, *, user: str | None = None, input: str | None = None
    ) -> subprocess.CompletedProcess:
        flags = ["-u", user] if user else []
        flags += ["-i"] if input is not None else []
        return self("exec", *flags, box, "--", "sh", "-c", script, input=input, check=False)


@pytest.fixture(scope="session")
def infra(tmp_path_factory) -> Any:
    import trustme

    _cleanup()
    work = tmp_path_factory.mktemp("docker-infra")
    ca = trustme.CA()
    cert = ca.issue_cert("api.anthropic.com", "www.anthropic.com", "other.example.test")
    srv = work / "srv"
    srv.mkdir()
    cert.cert_chain_pems[0].write_to_path(str(srv / "cert.pem"))
    cert.private_key_pem.write_to_path(str(srv / "key.pem"))
    ca.cert_pem.write_to_path(str(work / "ca.pem"))
    shutil.copy(Path(__file__).with_name("upstream_server.py"), srv / "upstream_server.py")
    for path in (work, srv, *srv.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)  # test material, read by the container

    egress = f"{RUN}-egress"
    try:
        docker("network", "create", "--label", f"devbox.test={RUN}", egress)
        ipam = json.loads(docker("network", "inspect", egress).stdout)[0]["IPAM"]["Config"][0]
        ips = {}
        # Two stand-ins: the allowed upstreams and one "other" host at another address, so a
        # policy can allow the first by --allow-cidr <ip>/32 and leave the other refused.
        for role, aliases in (
            ("upstream", ["api.anthropic.com", "www.anthropic.com"]),
            ("other", ["other.example.test"]),
        ):
            container = f"{RUN}-{role}"
            docker(
                "run", "-d", "--name", container, "--label", f"devbox.test={RUN}",
                "--network", egress, *(f"--network-alias={a}" for a in aliases),
                "--user", "0", "-v", f"{srv}:/srv:ro", "--entrypoint", "/opt/proxy/bin/python",
                PROXY_IMAGE, "/srv/upstream_server.py", "/srv/cert.pem", "/srv/key.pem",
            )  # fmt: skip
            ips[role] = docker(
                "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                container,
            ).stdout.strip()  # fmt: skip
        for role in ips:
            deadline = time.monotonic() + 30
            while '"ready"' not in docker("logs", f"{RUN}-{role}").stdout:
                assert time.monotonic() < deadline, docker("logs", f"{RUN}-{role}").stderr
                time.sleep(0.1)
        yield Infra(
            egress,
            ipam["Subnet"],
            ipam["Gateway"],
            ips["upstream"],
            ips["other"],
            work / "ca.pem",
            work,
        )
    finally:
        _cleanup()


@pytest.fixture(scope="module")
def module_cli(infra, tmp_path_factory) -> Cli:
    """A CLI with a store of its own, shared by one test module."""
    return Cli(tmp_path_factory.mktemp("devbox-home"), infra)
