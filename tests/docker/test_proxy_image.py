"""The proxy image carries the aiohttp the proxy is tested with (proxy/compat.py)."""

from __future__ import annotations

import json

import pytest

from tests.docker.conftest import PROXY_IMAGE, docker

pytestmark = pytest.mark.docker


def test_the_proxy_image_has_the_pinned_aiohttp_and_its_internals():
    script = "import json, aiohttp; from proxy import compat; " + (
        "print(json.dumps([aiohttp.__version__, compat.problems()]))"
    )
    out = docker(
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "/opt/proxy/bin/python",
        PROXY_IMAGE,
        "-c",
        script,
    ).stdout
    version, problems = json.loads(out)
    assert problems == [], f"proxy image aiohttp {version}: {problems}"
