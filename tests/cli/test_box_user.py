"""The box user's ids from the box's own passwd and group files, and the remap that gives
them to the invoking user (engine/box_user.py), without Docker."""

from __future__ import annotations

import tarfile

import pytest

from devbox_cli.engine.box_user import (
    BoxUser,
    handover_rule,
    is_root,
    remapped_group,
    remapped_passwd,
    resolve_user,
)

PASSWD = """root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
agent:x:1000:1000::/home/agent:/bin/bash
broken line
evil:x:notanumber:1::/:/bin/sh
"""
GROUP = """root:x:0:
agent:x:1000:
staff:x:50:agent
"""


@pytest.mark.parametrize(
    ("spec", "user"),
    [
        ("", BoxUser(0, 0, "root", "/root")),
        ("agent", BoxUser(1000, 1000, "agent", "/home/agent")),
        ("1000", BoxUser(1000, 1000, "agent", "/home/agent")),
        ("agent:staff", BoxUser(1000, 50, "agent", "/home/agent")),
        ("agent:77", BoxUser(1000, 77, "agent", "/home/agent")),
        ("4242", BoxUser(4242, 0)),  # a uid without an entry: gid 0, as runc does
        ("4242:4343", BoxUser(4242, 4343)),
        ("nobody-here", BoxUser(0, 0)),
        ("evil", BoxUser(0, 0)),  # a malformed entry is not used
    ],
)
def test_resolve_user(spec, user):
    assert resolve_user(spec, PASSWD, GROUP) == user


ROOTS = [("", True), ("root", True), ("0", True), ("0:0", True), ("root:staff", True),
         ("agent", False), ("1000:0", False)]  # fmt: skip


@pytest.mark.parametrize(("spec", "root"), ROOTS)
def test_is_root(spec, root):
    assert is_root(spec) is root


def test_the_remap_rewrites_only_the_image_users_entry():
    text = remapped_passwd(PASSWD, "agent", 43210, 43211)
    assert "agent:x:43210:43211::/home/agent:/bin/bash" in text.splitlines()
    assert text.replace("43210:43211", "1000:1000") == PASSWD
    assert remapped_group(GROUP, 1000, 43211) == GROUP.replace("agent:x:1000:", "agent:x:43211:")
    assert remapped_group(GROUP, 1000, 50) is None  # staff has it: the user joins staff


def test_the_handover_rule():
    old, new = BoxUser(1000, 1000), BoxUser(43210, 43211)
    rule = handover_rule(old, new, root_too=False)
    mine, root, half = tarfile.TarInfo("a"), tarfile.TarInfo("b"), tarfile.TarInfo("c")
    mine.uid, mine.gid = 1000, 1000
    root.uid, root.gid = 0, 0
    half.uid, half.gid = 0, 1000
    assert rule(mine, False) and (mine.uid, mine.gid) == (43210, 43211)
    assert not rule(root, True) and (root.uid, root.gid) == (0, 0)
    assert rule(half, False) and (half.uid, half.gid) == (0, 43211)
    fresh = handover_rule(None, new, root_too=True)
    assert fresh(root, True) and (root.uid, root.gid) == (43210, 43211)
    other = tarfile.TarInfo("d")
    assert not fresh(other, False) and other.uid == 0  # only a fresh volume's root
