"""From the package alone (issue 13): the wheel, installed in a fresh virtualenv outside the
checkout, builds every image with `devbox images build` and runs the walkthrough.

The proxy and default images are built under a namespace of this run
($DEVBOX_IMAGE_NAMESPACE), so neither is reused from the engine: the proxy's wheels are
downloaded anew into a cache of this test, and both images are built from the files the
wheel carries. The base (a Debian root, the same whatever builds it) is reused when the
checkout's build made it: tagged into the namespace, it saves the half minute an import of
the debootstrap root costs; without it the wheel makes the base too. The digests of the
build inputs name the images, so the wheel naming the same images as the checkout shows it
carries every one of them.

The fresh virtualenv gets the wheel itself; its dependencies (typer, rich, docker-py, ...)
come from the checkout's virtualenv through a path entry, since installing them from PyPI
takes minutes here; every requirement the wheel declares is checked to be met.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from devbox_cli.engine.images import image_refs
from tests.docker.conftest import REPO, RUN, Infra, docker

pytestmark = pytest.mark.docker

NAMESPACE = f"devbox-{RUN}"
PREFIX = "ANTHROPIC_API_KEY"
SKIP_COPY = shutil.ignore_patterns(
    ".venv", ".git", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache",
    "mutants", ".cache", "tests", "bench",
)  # fmt: skip


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kw)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from a copy of the checkout, installed in a fresh virtualenv."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(REPO, source, ignore=SKIP_COPY)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(work / "dist"),
         str(source)], cwd=work)  # fmt: skip
    [wheel] = (work / "dist").glob("devbox-*.whl")
    venv = work / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "--no-index", str(wheel)])
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(run([str(venv / "bin" / "python"), "-c", purelib]).stdout.strip())
    # last on the path: the wheel's own devbox_cli and proxy come first
    (site / "zz-checkout-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv


@pytest.fixture(scope="module")
def env(installed, tmp_path_factory, infra: Infra) -> dict[str, str]:
    home = tmp_path_factory.mktemp("wheel-home")
    out = {k: v for k, v in os.environ.items() if not k.startswith(("DEVBOX_", "PYTHON"))}
    out.update(
        PATH=f"{installed / 'bin'}:{os.environ.get('PATH', '')}",
        DEVBOX_HOME=str(home),
        DEVBOX_IMAGE_NAMESPACE=NAMESPACE,
        DEVBOX_EGRESS_NETWORK=infra.egress,
        XDG_CACHE_HOME=str(tmp_path_factory.mktemp("wheel-cache")),
    )
    return out


@pytest.fixture(scope="module")
def devbox(installed, env, tmp_path_factory):  # type: ignore[no-untyped-def]
    """`devbox ARGS` from the installed wheel, run outside the checkout."""
    cwd = tmp_path_factory.mktemp("elsewhere")

    def call(*args: str, input: str | None = None, check: bool = True, **extra: str):  # type: ignore[no-untyped-def]
        proc = subprocess.run(
            [str(installed / "bin" / "devbox"), *args], input=input, capture_output=True,
            text=True, env={**env, **extra}, cwd=cwd, timeout=600, check=False,
        )  # fmt: skip
        if check:
            assert proc.returncode == 0, f"devbox {' '.join(args)}: {proc.stderr}"
        return proc

    base = image_refs().base
    if docker("image", "inspect", base, check=False).returncode == 0:
        docker("tag", base, f"{NAMESPACE}/{base.split('/', 1)[1]}")
    yield call
    call("delete", "--all", check=False)
    found = docker("image", "ls", "-q", "--filter", f"reference={NAMESPACE}/*", check=False)
    refs = docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", check=False).stdout
    ours = [r for r in refs.split() if r.startswith(f"{NAMESPACE}/")]
    if ours or found.stdout.split():
        docker("image", "rm", "-f", *ours, check=False)


def test_the_wheel_runs_from_its_own_files(installed, devbox):
    where = subprocess.run(
        [str(installed / "bin" / "python"), "-c",
         "import devbox_cli, proxy; print(devbox_cli.__file__); print(proxy.__file__)"],
        capture_output=True, text=True, check=True, cwd="/",
    ).stdout.split()  # fmt: skip
    assert all(path.startswith(str(installed)) for path in where), where
    # every requirement the wheel declares is met in its virtualenv
    check = subprocess.run(
        [str(installed / "bin" / "python"), "-c", "\n".join([
            "from importlib.metadata import requires, version",
            "from packaging.requirements import Requirement",
            "bad = [str(r) for r in map(Requirement, requires('devbox')) if not r.marker"
            " and not r.specifier.contains(version(r.name), prereleases=True)]",
            "print(bad)",
        ])], capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert check.stdout.strip() == "[]", check.stderr


def test_the_wheel_carries_every_build_input(installed):
    out = subprocess.run(
        [str(installed / "bin" / "python"), "-m", "devbox_cli.engine.images"],
        capture_output=True, text=True, check=True, cwd="/", env={"PATH": "/usr/bin:/bin"},
    ).stdout  # fmt: skip
    refs = image_refs()
    assert out == f"base={refs.base}\nproxy={refs.proxy}\ndefault={refs.default}\n"


def test_images_build_from_the_wheel_then_the_walkthrough(devbox, infra: Infra):
    built = devbox("images", "build", "-o", "json")
    how = {b["role"]: b["how"] for b in json.loads(built.stdout)}
    assert how["proxy"] == how["default"] == "built"
    assert how["base"] in ("present", "debootstrap", "from debian:bookworm-slim")
    assert "downloading the proxy's wheels" in built.stderr  # plain lines off a terminal
    listed = json.loads(devbox("images", "list", "-o", "json").stdout)
    current = {i["role"]: i for i in listed if i["current"]}
    assert {r: i["state"] for r, i in current.items()} == dict.fromkeys(
        ("base", "proxy", "default"), "current"
    )
    assert all(i["image"].startswith(f"{NAMESPACE}/") for i in current.values())
    # create builds a missing image by itself, saying so
    docker("image", "rm", current["default"]["image"])
    secret = "sk-ant-wheel-" + RUN
    devbox("gateway", "create", "anthropic-gateway", "--endpoint", "https://api.anthropic.com",
           "--ca-cert", str(infra.ca_pem))  # fmt: skip
    devbox("secret", "create", "ANTHROPIC", input=secret)
    devbox("policy", "create", "anthropic-only", "--allow", "*.anthropic.com",
           "--allow-cidr", f"{infra.upstream_ip}/32")  # fmt: skip
    name = f"{RUN}-wheel"
    created = devbox("create", name, "--gateway", f"{PREFIX}=anthropic-gateway:ANTHROPIC",
                     "--network-policy", "anthropic-only", "-q")  # fmt: skip
    assert created.stdout == f"{name}\n"
    assert f"no image {current['default']['image']} yet: building it" in created.stderr
    shown = json.loads(devbox("show", name, "-o", "json").stdout)
    assert shown["image"] == current["default"]["image"]
    assert shown["proxy"]["health"] == "ok"
    url = devbox("exec", name, "--", "sh", "-c", f"echo ${PREFIX}_URL").stdout.strip()
    assert url == f"http://proxy:3128/gw/{PREFIX}"
    answer = devbox("exec", name, "--", "sh", "-c",
                    f'curl -sS -X POST "${PREFIX}_URL/v1/messages" '
                    f'-H "Authorization: Bearer ${PREFIX}" -d "{{}}"').stdout  # fmt: skip
    assert json.loads(answer)["host"] == "api.anthropic.com"
    refused = devbox(
        "exec",
        name,
        "--",
        "sh",
        "-c",
        'curl -s -o /dev/null -w "%{http_code}" http://other.example.test/',
    )
    assert refused.stdout == "403"
    log = devbox("logs", name, "--egress", "--denied", COLUMNS="120").stdout.splitlines()
    assert log[0].split()[:2] == ["TIME", "DECISION"]
    assert any("other.example.test:80" in line and " deny " in line for line in log[1:])
    devbox("delete", name)
