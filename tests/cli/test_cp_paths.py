"""`devbox cp`'s path rules without Docker (services/cp_paths.py): which argument is a box's,
and where a copy lands, as docker cp decides it. A box is a dict of stats here."""

from __future__ import annotations

import os

import pytest

from devbox_cli.errors import NotFoundError, UsageError
from devbox_cli.services.cp_paths import (
    GO_DIR,
    GO_SYMLINK,
    BoxPath,
    box_target,
    host_target,
    parse_cp_arg,
)


@pytest.mark.parametrize(
    ("arg", "parsed"),
    [
        ("agent:/workspace", BoxPath("agent", "/workspace")),
        ("agent:workspace/x", BoxPath("agent", "/workspace/x")),  # relative to the box's /
        ("agent:/w/.", BoxPath("agent", "/w/.")),
        ("agent:/a:b", BoxPath("agent", "/a:b")),
        ("-", "-"),
        ("/abs/a:b", "/abs/a:b"),
        ("./a:b", "./a:b"),
        ("plain", "plain"),
        ("../up", "../up"),
    ],
)
def test_which_side_is_the_box(arg, parsed):
    assert parse_cp_arg(arg) == parsed


@pytest.mark.parametrize("arg", ["", "agent:", "-bad:/x", "a b:/x"])
def test_bad_arguments(arg):
    with pytest.raises(UsageError):
        parse_cp_arg(arg)


@pytest.fixture
def host(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "dir")
    return tmp_path


def target(dst, *, src_is_dir, contents=False, src_name="src"):
    return host_target(str(dst), src_is_dir=src_is_dir, contents=contents, src_name=src_name)


def test_host_destinations(host):
    d = str(host / "dir")
    assert target(host / "dir", src_is_dir=False) == (d, "src")  # into the directory
    assert target(host / "dir", src_is_dir=True) == (d, "src")
    assert target(host / "dir", src_is_dir=True, contents=True) == (d, None)  # SRC/.
    assert target(host / "file", src_is_dir=False) == (str(host), "file")  # overwritten
    assert target(host / "new", src_is_dir=True) == (str(host), "new")  # becomes the copy
    assert target(host / "new", src_is_dir=False, contents=False) == (str(host), "new")
    assert target(f"{host}/dir/", src_is_dir=False) == (d, "src")
    assert target(host / "new", src_is_dir=True, contents=True) == (str(host), "new")


def test_host_destination_errors(host):
    with pytest.raises(UsageError, match="directory to the file"):
        target(host / "file", src_is_dir=True)
    with pytest.raises(NotFoundError, match="no directory"):
        target(f"{host}/new/", src_is_dir=False)  # a file has nowhere to go
    with pytest.raises(NotFoundError, match="no directory"):
        target(host / "missing" / "x", src_is_dir=False)
    with pytest.raises(UsageError, match="is a symlink") as err:
        target(host / "link", src_is_dir=True)  # a box with a mount could have planted it
    assert str(host / "dir") in err.value.message


def box(**paths):
    stats = {
        p: {"name": os.path.basename(p), "mode": m, "linkTarget": t} for p, (m, t) in paths.items()
    }
    return lambda path: stats.get(path)


BOX = box(**{"/": (GO_DIR | 0o755, ""), "/w": (GO_DIR | 0o755, ""), "/w/f": (0o644, ""),
             "/w/l": (GO_SYMLINK | 0o777, "/w")})  # fmt: skip


@pytest.mark.parametrize(
    ("dst", "src_is_dir", "contents", "where"),
    [
        ("/w", False, False, ("/w", "src")),
        ("/w/", True, False, ("/w", "src")),
        ("/w", True, True, ("/w", None)),
        ("/w/f", False, False, ("/w", "f")),
        ("/w/new", True, False, ("/w", "new")),
        ("/w/new", False, False, ("/w", "new")),
        ("/w/l", False, False, ("/w", "src")),  # a symlink in the box is followed in the box
        ("/", False, False, ("/", "src")),
    ],
)
def test_box_destinations(dst, src_is_dir, contents, where):
    assert box_target(BOX, dst, src_is_dir=src_is_dir, contents=contents, src_name="src") == where


def test_box_destination_errors():
    with pytest.raises(UsageError, match="directory to the file"):
        box_target(BOX, "/w/f", src_is_dir=True, contents=False, src_name="s")
    with pytest.raises(NotFoundError, match="no directory /w/new in the box"):
        box_target(BOX, "/w/new/", src_is_dir=False, contents=False, src_name="s")
    with pytest.raises(NotFoundError, match="no directory /nope in the box"):
        box_target(BOX, "/nope/x", src_is_dir=False, contents=False, src_name="s")
