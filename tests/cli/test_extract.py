"""The extractor of box archives, attacked with hand-made tar streams: a compromised agent
controls every name, link, mode and type that comes back (services/extract.py).

Each attack asserts both that it was refused or left out and that nothing landed outside
the destination (`outside` is a sibling directory the attacks aim at)."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from devbox_cli.engine.tarpipe import ChunkReader
from devbox_cli.errors import DevboxError
from devbox_cli.services.extract import (
    Extracted,
    Refused,
    check_link_target,
    extract,
    member_parts,
)


def entry(name: str, kind: bytes = tarfile.REGTYPE, *, data: bytes = b"", mode: int = 0o644,
          link: str = "", mtime: int = 1_600_000_000) -> tuple[tarfile.TarInfo, bytes]:  # fmt: skip
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.mtime = kind, mode, link, mtime
    info.uid = info.gid = 0  # the box's root: ignored, files are the invoking user's
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def d(name: str, mode: int = 0o755) -> tuple[tarfile.TarInfo, bytes]:
    return entry(name, tarfile.DIRTYPE, mode=mode)


def archive(*entries: tuple[tarfile.TarInfo, bytes]) -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    # read back as the engine's chunks, never whole
    raw = out.getvalue()
    return ChunkReader(raw[i : i + 700] for i in range(0, len(raw), 700))  # type: ignore[return-value]


@pytest.fixture
def dest(tmp_path):
    (tmp_path / "dest").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "victim").write_text("untouched")
    return tmp_path


def run(dest: Path, *entries, name: str | None = "d", root: str = "d", **kw) -> Extracted:
    return extract(archive(*entries), str(dest / "dest"), name, root, source="devbox t", **kw)


def outside_untouched(dest: Path) -> None:
    assert sorted(p.name for p in (dest / "outside").iterdir()) == ["victim"]
    assert (dest / "outside" / "victim").read_text() == "untouched"
    assert sorted(p.name for p in dest.iterdir()) == ["dest", "outside"]


def test_a_tree_comes_out_with_its_modes_and_times(dest):
    got = run(
        dest,
        d("d", 0o750), entry("d/run.sh", data=b"#!/bin/sh\n", mode=0o755),
        d("d/ro", 0o555), entry("d/ro/f", data=b"x", mode=0o444),
        entry("d/link", tarfile.SYMTYPE, link="ro/f"),
        entry("d/hard", tarfile.LNKTYPE, link="d/run.sh"),
        d("d/shared", 0o2775),
    )  # fmt: skip
    top = dest / "dest" / "d"
    assert stat.S_IMODE(top.stat().st_mode) == 0o750
    assert stat.S_IMODE((top / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((top / "ro").stat().st_mode) == 0o555  # filled, then closed
    assert (top / "ro" / "f").read_bytes() == b"x"
    assert os.readlink(top / "link") == "ro/f"
    assert (top / "hard").stat().st_ino == (top / "run.sh").stat().st_ino
    assert stat.S_IMODE((top / "shared").stat().st_mode) == 0o2775  # setgid dirs are fine
    assert (top / "run.sh").stat().st_mtime == 1_600_000_000
    assert (top / "run.sh").stat().st_uid == os.getuid()
    assert (got.files, got.directories, got.links, got.skipped) == (3, 3, 1, [])
    (top / "ro").chmod(0o755)


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        ([entry("/etc/passwd", data=b"root::0:0")], "absolute path"),
        ([d("d"), entry("d/../../outside/victim", data=b"pwned")], "'..'"),
        ([d("d"), entry("d/sub/../../../outside/x")], "'..'"),
        ([entry("other/x", data=b"x")], "outside the copied path"),
        ([entry("dd/x", data=b"x")], "outside the copied path"),
        ([d("d"), entry("d/hl", tarfile.LNKTYPE, link="/etc/shadow")], "absolute path"),
        ([d("d"), entry("d/hl", tarfile.LNKTYPE, link="d/../../outside/victim")], "'..'"),
    ],
    ids=[
        "absolute",
        "dotdot",
        "dotdot-deep",
        "other-root",
        "root-prefix",
        "hardlink-abs",
        "hardlink-dotdot",
    ],
)
def test_names_out_of_the_copy_stop_it(dest, entries, reason):
    with pytest.raises(Refused) as err:
        run(dest, *entries)
    assert reason in err.value.message
    assert err.value.message.startswith("refused devbox t: ")
    outside_untouched(dest)


def test_a_planted_symlink_is_never_written_through(dest):
    # `link` points inside the copy, so it is made; the entry after it would write through it
    with pytest.raises(Refused, match="is a symlink or not a directory"):
        run(dest, d("d"), d("d/sub"), entry("d/link", tarfile.SYMTYPE, link="sub"),
            entry("d/link/planted", data=b"x"))  # fmt: skip
    assert list((dest / "dest" / "d" / "sub").iterdir()) == []


def test_a_symlink_on_the_host_is_not_followed_either(dest):
    # Say a box with a mount planted these in the destination before the copy.
    (dest / "dest" / "d").mkdir()
    (dest / "dest" / "d" / "dir").symlink_to(dest / "outside")
    (dest / "dest" / "d" / "file").symlink_to(dest / "outside" / "victim")
    with pytest.raises(Refused, match="is a symlink"):
        run(dest, d("d"), entry("d/dir/victim", data=b"pwned"))
    run(dest, d("d"), entry("d/file", data=b"new"))  # replaces the link, not its target
    assert not (dest / "dest" / "d" / "file").is_symlink()
    assert (dest / "dest" / "d" / "file").read_bytes() == b"new"
    outside_untouched(dest)


def test_a_hard_linked_file_at_the_name_is_unlinked_not_truncated(dest):
    (dest / "dest" / "d").mkdir()
    os.link(dest / "outside" / "victim", dest / "dest" / "d" / "f")
    run(dest, d("d"), entry("d/f", data=b"new"))
    assert (dest / "dest" / "d" / "f").read_bytes() == b"new"
    outside_untouched(dest)


@pytest.mark.parametrize(
    ("link", "at", "why"),
    [
        ("/etc/passwd", "d/l", "absolute path"),
        ("../outside/victim", "d/l", "leaves the copy"),
        ("../../outside", "d/sub/l", "leaves the copy"),
        ("x/../../outside", "d/l", "climbs after a name"),
        ("sub/../..", "d/l", "climbs after a name"),
        ("", "d/l", "empty"),
    ],
)
def test_escaping_symlinks_are_left_out_and_reported(dest, link, at, why):
    got = run(dest, d("d"), d("d/sub"), entry(at, tarfile.SYMTYPE, link=link),
              entry("d/after", data=b"kept"))  # fmt: skip
    assert len(got.skipped) == 1 and why in got.skipped[0] and at in got.skipped[0]
    assert not os.path.lexists(dest / "dest" / at)
    assert (dest / "dest" / "d" / "after").read_bytes() == b"kept"
    outside_untouched(dest)


def test_a_chain_of_inside_links_cannot_climb_out(dest):
    # x -> . is inside; a -> x/../outside would be inside lexically, outside in fact
    got = run(dest, d("d"), entry("d/x", tarfile.SYMTYPE, link="."),
              entry("d/a", tarfile.SYMTYPE, link="x/../../outside/victim"))  # fmt: skip
    assert os.readlink(dest / "dest" / "d" / "x") == "."
    assert not os.path.lexists(dest / "dest" / "d" / "a")
    assert "climbs after a name" in got.skipped[0]


@pytest.mark.parametrize(
    ("kind", "what"),
    [(tarfile.CHRTYPE, "device file"), (tarfile.BLKTYPE, "device file"),
     (tarfile.FIFOTYPE, "special file"), (tarfile.CONTTYPE, None)],
)  # fmt: skip
def test_devices_and_fifos_are_left_out(dest, kind, what):
    info, _ = entry("d/dev", kind)
    info.devmajor, info.devminor = 8, 0  # /dev/sda
    got = run(dest, d("d"), (info, b""))
    if what is None:  # a contiguous file is a regular file to tarfile
        assert (dest / "dest" / "d" / "dev").is_file()
        return
    assert what in got.skipped[0]
    assert not os.path.lexists(dest / "dest" / "d" / "dev")


@pytest.mark.parametrize("mode", [0o4755, 0o2755, 0o6777])
def test_setuid_and_setgid_files_are_left_out(dest, mode):
    got = run(dest, d("d"), entry("d/su", data=b"\x7fELF", mode=mode))
    assert "setuid or setgid" in got.skipped[0]
    assert not os.path.lexists(dest / "dest" / "d" / "su")


def test_hard_links_only_to_files_this_copy_wrote(dest):
    (dest / "dest" / "d").mkdir()
    (dest / "dest" / "d" / "old").write_text("on the host before")
    got = run(
        dest,
        d("d"), entry("d/su", data=b"x", mode=0o4755), entry("d/h1", tarfile.LNKTYPE, link="d/su"),
        entry("d/h2", tarfile.LNKTYPE, link="d/old"), entry("d/f", data=b"f"),
        entry("d/f", tarfile.SYMTYPE, link="old"), entry("d/h3", tarfile.LNKTYPE, link="d/f"),
    )  # fmt: skip
    assert [s.split(":")[0] for s in got.skipped] == [
        "setuid or setgid bit on 'd/su'",
        "hard link 'd/h1' to 'd/su', not a file it wrote",
        "hard link 'd/h2' to 'd/old', not a file it wrote",
        "hard link 'd/h3' to 'd/f', not a file it wrote",
    ]
    assert sorted(os.listdir(dest / "dest" / "d")) == ["f", "old"]


def test_the_copied_path_may_not_be_a_symlink(dest):
    got = run(dest, entry("l", tarfile.SYMTYPE, link="x"), name="l", root="l")
    assert "the copied path is a symlink" in got.skipped[0]
    assert not os.path.lexists(dest / "dest" / "l")


def test_a_directory_is_not_replaced_by_a_file(dest):
    (dest / "dest" / "d" / "keep").mkdir(parents=True)
    with pytest.raises(Refused, match="is a directory"):
        run(dest, d("d"), entry("d/keep", data=b"x"))
    assert (dest / "dest" / "d" / "keep").is_dir()


def test_nothing_is_written_into_the_store(dest):
    store = dest / "dest" / "d" / ".local" / "devbox"
    with pytest.raises(Refused, match="in the devbox store"):
        run(dest, d("d"), d("d/.local"), entry("d/.local/devbox/policies.json", data=b"{}"),
            refused_trees=[str(store)])  # fmt: skip
    assert not store.exists()


def test_contents_go_into_an_existing_directory_left_as_it_is(dest):
    (dest / "dest").chmod(0o711)
    got = run(dest, d(".", 0o777), entry("./a", data=b"a"), d("./s"), entry("./s/b", data=b"b"),
              name=None, root=".")  # fmt: skip
    assert stat.S_IMODE((dest / "dest").stat().st_mode) == 0o711
    assert (dest / "dest" / "a").read_bytes() == b"a"
    assert (dest / "dest" / "s" / "b").read_bytes() == b"b"
    assert got.files == 2


def test_a_whole_box_root_maps_below_the_destination(dest):
    run(dest, d(""), d("/etc"), entry("/etc/hostname", data=b"box"), name="root", root="/")
    assert (dest / "dest" / "root" / "etc" / "hostname").read_bytes() == b"box"
    with pytest.raises(Refused, match=r"'\.\.'"):
        run(dest, d(""), entry("/../outside/victim", data=b"x"), name="root", root="/")
    outside_untouched(dest)


def test_a_malformed_stream_is_a_clear_error(dest):
    with pytest.raises(DevboxError, match="malformed"):
        extract(io.BytesIO(b"\x01" * 1024), str(dest / "dest"), "d", "d", source="devbox t")


@pytest.mark.parametrize(
    ("name", "root", "parts"),
    [("d", "d", ()), ("d/a/b", "d", ("a", "b")), ("d/./a//b/", "d", ("a", "b")),
     (".", ".", ()), ("./a", ".", ("a",)), ("", "/", ()), ("/etc/x", "/", ("etc", "x"))],
)  # fmt: skip
def test_member_parts(name, root, parts):
    assert member_parts(name, root) == parts


@pytest.mark.parametrize(
    ("target", "depth", "ok"),
    [("f", 0, True), ("./f", 0, True), ("../f", 1, True), ("../../a/b", 2, True),
     ("../f", 0, False), ("a/../f", 3, False), ("/f", 9, False)],
)  # fmt: skip
def test_link_targets(target, depth, ok):
    if ok:
        check_link_target(target, depth)
    else:
        with pytest.raises(Refused):
            check_link_target(target, depth)
