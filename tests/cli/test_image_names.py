"""Image names are keyed on their build inputs (devbox_cli/engine/images.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devbox_cli import __version__
from devbox_cli.engine import images

REPO = Path(__file__).resolve().parents[2]
IN_PLACE = images.image_refs()  # before any test points the inputs elsewhere


@pytest.fixture
def copies(tmp_path, monkeypatch):
    """The build inputs copied to tmp_path, and image_refs reading them there."""
    proxy = tmp_path / "proxy"
    shutil.copytree(images.proxy_dir(), proxy, ignore=shutil.ignore_patterns("__pycache__"))
    assets = tmp_path / "assets"
    shutil.copytree(images.ASSETS, assets)
    monkeypatch.setattr(images, "proxy_dir", lambda: proxy)
    monkeypatch.setattr(images, "BASE_PACKAGES", assets / "base-packages.txt")
    monkeypatch.setattr(images, "DEFAULT_DOCKERFILE", assets / "default.Dockerfile")
    images.refs_in.cache_clear()
    yield proxy, assets
    images.refs_in.cache_clear()


def test_names_carry_the_version_and_a_digest():
    refs = images.image_refs()
    assert re.fullmatch(rf"devbox/proxy:{re.escape(__version__)}-[0-9a-f]{{12}}", refs.proxy)
    assert re.fullmatch(rf"devbox/default:{re.escape(__version__)}-[0-9a-f]{{12}}", refs.default)
    assert re.fullmatch(r"devbox/base:bookworm-[0-9a-f]{12}", refs.base)


def test_names_depend_on_contents_not_on_where_the_files_are(copies):
    assert images.image_refs() == IN_PLACE


@pytest.mark.parametrize(
    ("edit", "changed"),
    [
        ("proxy/gateway.py", {"proxy"}),
        ("proxy/requirements.txt", {"proxy"}),
        ("proxy/Dockerfile", {"proxy"}),
        ("proxy/new_module.py", {"proxy"}),
        ("assets/default.Dockerfile", {"default"}),
        ("assets/base-packages.txt", {"base", "proxy", "default"}),
    ],
)
def test_a_changed_input_renames_exactly_its_images(copies, edit, changed):
    before = images.image_refs()
    path = copies[0].parent / edit
    path.write_text((path.read_text() if path.exists() else "") + "\n# changed\n")
    images.refs_in.cache_clear()
    after = images.image_refs()
    renamed = {k for k in ("base", "proxy", "default") if getattr(before, k) != getattr(after, k)}
    assert renamed == changed


def test_the_module_prints_what_build_sh_reads():
    out = subprocess.run(
        [sys.executable, "-m", "devbox_cli.engine.images"],
        capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout  # fmt: skip
    refs = IN_PLACE
    assert out == f"base={refs.base}\nproxy={refs.proxy}\ndefault={refs.default}\n"
