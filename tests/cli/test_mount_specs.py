"""--mount and --volume without Docker: the specs, the box destinations, and the host paths
refused after every symlink is resolved (/, an engine socket or a directory holding one,
the devbox store or anything in or around it, a path that does not exist)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from devbox_cli.engine.workspace import Mount, VolumeMount, Workspace, host_mounts, mounts_of
from devbox_cli.errors import NotFoundError, UsageError
from devbox_cli.services.mounts import (
    STANDARD_SOCKETS,
    check_destination,
    check_destinations,
    check_host_path,
    check_mounts,
    parse_mount_spec,
    parse_volume_spec,
    socket_paths,
)
from devbox_cli.services.workspace import check_specs


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("./proj", ("./proj", "/workspace", False)),
        ("./proj:ro", ("./proj", "/workspace", True)),
        ("./proj:rw", ("./proj", "/workspace", False)),
        ("/src:/code", ("/src", "/code", False)),
        ("/src:/code/:ro", ("/src", "/code", True)),
        ("ro", ("ro", "/workspace", False)),  # a directory named ro
        ("~/p:/home/agent/p", ("~/p", "/home/agent/p", False)),
    ],
)
def test_mount_specs(spec, parsed):
    assert parse_mount_spec(spec) == parsed


@pytest.mark.parametrize("spec", ["", ":/x", "a:b:c:ro", "a:/x:ro:extra", "a:/x:rx"])
def test_bad_mount_specs_are_usage_errors(spec):
    with pytest.raises(UsageError) as err:
        parse_mount_spec(spec)
    assert err.value.exit_code == 2


def test_volume_specs():
    assert parse_volume_spec("cache:/home/agent/.cache") == VolumeMount(
        "cache", "/home/agent/.cache", False
    )
    assert parse_volume_spec("data:ro") == VolumeMount("data", "/workspace", True)
    for bad in ("-x:/a", "a/b:/c", "x" * 64 + ":/a", "v:relative"):
        with pytest.raises(UsageError):
            parse_volume_spec(bad)


@pytest.mark.parametrize(
    ("path", "normal"),
    [
        ("/workspace", "/workspace"),
        ("/workspace/", "/workspace"),
        ("/home/agent/.cache", "/home/agent/.cache"),
        ("/tmp/scratch", "/tmp/scratch"),  # under the tmpfs, not over it
        ("/var/lib/app", "/var/lib/app"),
        ("/opt/a@1.0+b", "/opt/a@1.0+b"),
        ("/etcetera", "/etcetera"),
    ],
)
def test_destinations(path, normal):
    assert check_destination(path) == normal


@pytest.mark.parametrize(
    "path",
    ["relative", "", "/a/../etc", "/a/./b", "/a//b", "/with space", "/glob*", "/q?", "/[x]",
     "/comma,x", "/colon:x", "/" + "a" * 1100],
)  # fmt: skip
def test_malformed_destinations(path):
    with pytest.raises(UsageError, match="invalid --mount destination"):
        check_destination(path)


@pytest.mark.parametrize(
    "path",
    ["/", "/tmp", "/var", "/proc", "/proc/sys", "/sys/fs/cgroup", "/dev", "/dev/shm", "/etc",
     "/etc/ssl/certs", "/run", "/run/devbox", "/var/run", "/usr", "/usr/local/bin", "/bin",
     "/sbin", "/lib", "/lib64", "/boot"],
)  # fmt: skip
def test_system_destinations_are_refused(path):
    with pytest.raises(UsageError, match="part of the box's system") as err:
        check_destination(path, "--volume")
    assert "--volume" in err.value.message


def test_two_mounts_at_one_destination_are_refused():
    check_destinations(["/a", "/a/b", "/b"])
    with pytest.raises(UsageError, match="two mounts at /a"):
        check_destinations(["/a", "/b", "/a"])


# -- host paths ---------------------------------------------------------------------------


@pytest.fixture
def host(tmp_path):
    """A store, an engine socket (a real one) in its own directory, and a project."""
    store = tmp_path / "data" / "devbox"
    store.mkdir(parents=True)
    run = tmp_path / "run"
    run.mkdir()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(run / "engine.sock"))
    project = tmp_path / "project"
    project.mkdir()
    (project / "file.txt").write_text("x")
    yield tmp_path, store, run / "engine.sock", project
    sock.close()


def check(path: Path | str, store: Path, sock: Path, **kw) -> str:
    return check_host_path(str(path), store=store, sockets=[str(sock)], **kw)


def test_a_project_directory_is_resolved(host):
    root, store, sock, project = host
    (root / "link").symlink_to(project)
    assert check(project, store, sock) == str(project)
    assert check(root / "link", store, sock) == str(project)  # what Docker mounts


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("data/devbox", "it is in the devbox store"),
        ("data/devbox/sub", "it is in the devbox store"),
        ("data", "it holds the devbox store"),
        (".", "it holds the devbox store"),
        ("run", "it is or holds the engine socket"),
        ("run/engine.sock", "it is or holds the engine socket"),
    ],
)
def test_refused_host_paths_and_symlinks_to_them(host, target, reason):
    root, store, sock, _ = host
    (store / "sub").mkdir(exist_ok=True)
    (root / "alias").symlink_to(root / target)
    for path in (root / target, root / "alias"):
        with pytest.raises(UsageError) as err:
            check(path, store, sock, directory=False)
        assert reason in err.value.message
        assert err.value.exit_code == 2
        assert "Traceback" not in str(err.value)


def test_a_symlinked_store_is_refused_under_both_its_names(host):
    root, store, sock, project = host
    (project / "store-link").symlink_to(store)  # the store seen through the project
    fake_home = root / "fake-home"
    fake_home.symlink_to(store)  # DEVBOX_HOME itself a symlink
    with pytest.raises(UsageError, match="holds the devbox store"):
        check(root, fake_home, sock)
    with pytest.raises(UsageError, match="in the devbox store"):
        check(project / "store-link", store, sock)
    # the project itself holds only a symlink to the store: Docker mounts the link, not it
    assert check(project, store, sock) == str(project)


def test_root_is_refused_however_it_is_named(host):
    root, store, sock, _ = host
    (root / "slash").symlink_to("/")
    for path in ("/", root / "slash", "/.."):
        with pytest.raises(UsageError, match="the host's root"):
            check(path, store, sock)


def test_the_standard_and_docker_host_sockets_are_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    (tmp_path / "docker.sock").touch()  # a rootless engine's socket, where it exists
    found = socket_paths("unix:///srv/engine/docker.sock")
    assert set(STANDARD_SOCKETS) <= set(found)
    assert "/srv/engine/docker.sock" in found and str(tmp_path / "docker.sock") in found
    assert str(tmp_path / "podman" / "podman.sock") not in found  # absent: not in the way
    for path in ("/run", "/var/run", "/var"):
        if os.path.isdir(path):
            with pytest.raises(UsageError, match="engine socket"):
                check_host_path(path, store=tmp_path / "store", sockets=found)


@pytest.mark.parametrize("name", ["missing", "dangling"])
def test_a_path_that_does_not_exist_is_not_found(host, name):
    root, store, sock, _ = host
    (root / "dangling").symlink_to(root / "nowhere")
    with pytest.raises(NotFoundError) as err:
        check(root / name, store, sock)
    assert err.value.exit_code == 3


def test_a_file_is_not_a_mount(host):
    _, store, sock, project = host
    with pytest.raises(UsageError, match="not a directory") as err:
        check(project / "file.txt", store, sock)
    assert "devbox cp" in (err.value.hint or "")
    assert check(project / "file.txt", store, sock, directory=False).endswith("file.txt")


def test_mounts_need_an_engine_on_this_machine(host):
    _, store, _, project = host
    with pytest.raises(UsageError, match="engine on this machine"):
        check_mounts([str(project)], store=store, docker_host="tcp://10.0.0.1:2376")
    assert check_mounts([], store=store, docker_host="ssh://box") == ()


def test_check_specs_resolves_mounts_and_volumes(host, monkeypatch):
    root, store, sock, project = host
    monkeypatch.setenv("DOCKER_HOST", f"unix://{sock}")
    (root / "p").symlink_to(project)
    mounts, volumes = check_specs(
        [f"{root / 'p'}:/code:ro", Mount(str(project), "/workspace/")],
        ["cache:/home/agent/.cache"],
        store_home=str(store),
    )
    assert mounts == (Mount(str(project), "/code", True), Mount(str(project), "/workspace"))
    assert volumes == (VolumeMount("cache", "/home/agent/.cache"),)
    with pytest.raises(UsageError, match="two mounts at /code"):
        check_specs([f"{project}:/code"], ["v:/code"], store_home=str(store))
    with pytest.raises(UsageError, match="engine socket"):
        check_specs([str(sock.parent)], [], store_home=str(store))
    with pytest.raises(UsageError, match="part of the box's system"):
        check_specs([], [VolumeMount("v", "/etc")], store_home=str(store))


def test_the_host_config_and_the_view_read_back():
    ws = Workspace(
        mounts=(Mount("/home/u/p", "/workspace", True),),
        volumes=(VolumeMount("cache", "/home/agent/.cache"),),
    )
    assert host_mounts(ws) == [
        {"Type": "bind", "Source": "/home/u/p", "Target": "/workspace", "ReadOnly": True,
         "BindOptions": {"Propagation": "rprivate", "NonRecursive": True}},
        {"Type": "volume", "Source": "devbox-vol-cache", "Target": "/home/agent/.cache",
         "ReadOnly": False},
    ]  # fmt: skip
    inspect = {
        "Mounts": [
            {"Type": "volume", "Name": "devbox-vol-cache", "Source": "/var/lib/docker/x",
             "Destination": "/home/agent/.cache", "RW": True},
            {"Type": "bind", "Source": "/home/u/p", "Destination": "/workspace", "RW": False},
            {"Type": "tmpfs", "Destination": "/tmp"},
            "not a mount",
        ]
    }  # fmt: skip
    views = mounts_of(inspect)
    assert [(v.kind, v.source, v.destination, v.read_only) for v in views] == [
        ("volume", "cache", "/home/agent/.cache", False),
        ("bind", "/home/u/p", "/workspace", True),
    ]
    assert views[1].describe() == "/home/u/p -> /workspace (read-only)"
    assert mounts_of({}) == ()
