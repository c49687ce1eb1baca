"""The pure parts of the devbox commands, without Docker: `devbox exec` argument parsing and
its wire helpers, the box's environment, the spec parsers, the label schema and the views."""

from __future__ import annotations

import dataclasses
import json
import socket
import struct
import threading

import pytest

from devbox_cli.engine import fastexec, wire
from devbox_cli.engine.views import (
    LABEL_GATEWAYS,
    LABEL_NAME,
    LABEL_ROLE,
    LABEL_VERSION,
    VERSION,
    Binding,
    DeleteResult,
    Devbox,
    ProxyView,
    bindings_of,
    env_of,
    gateways_label,
    iso_time,
    labels_for,
    state_of,
)
from devbox_cli.errors import DevboxRuntimeError, DockerUnavailableError, UsageError
from devbox_cli.names import check_devbox_name, is_env_name
from devbox_cli.services import box_env
from devbox_cli.services.box_env import RESERVED_ENV, parse_env_spec, parse_gateway_specs
from devbox_cli.services.egress import lines
from tests.cli.fake_engine import FakeEngine
from tests.cli.support import run


def box_environment(name, bindings, env, tokens=None):  # type: ignore[no-untyped-def]
    """The Python API's {prefix: (gateway, secret)} checked into Bindings, then the box's
    environment from them (services/box_env.py)."""
    return box_env.box_environment(name, box_env.to_bindings(bindings), env, tokens)


def parse_gateway_spec(spec: str) -> tuple[str, str, str]:
    [(prefix, (gateway, secret))] = parse_gateway_specs([spec]).items()
    return prefix, gateway, secret


def labels_of(bindings: dict[str, tuple[str, str]]) -> str:
    return gateways_label(box_env.to_bindings(bindings))


# -- devbox exec: arguments ------------------------------------------------------------------


def parsed(*args: str) -> dict:
    opts = fastexec.parse_args(list(args))
    assert opts is not None
    return {k: getattr(opts, k) for k in fastexec.ExecOptions.__slots__}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["b", "--", "ls", "-l"], {"name": "b", "cmd": ["ls", "-l"]}),
        (["b", "ls", "-l"], {"name": "b", "cmd": ["ls", "-l"]}),  # no -- needed
        (["-it", "b", "sh"], {"interactive": True, "tty": True, "cmd": ["sh"]}),
        (["-i", "-t", "b", "sh"], {"interactive": True, "tty": True}),
        (["--interactive", "--tty", "b", "sh"], {"interactive": True, "tty": True}),
        (["-e", "A=1", "-eB=2", "--env", "C=3", "--env=D=4", "b", "x"],
         {"env": ["A=1", "B=2", "C=3", "D=4"]}),
        (["-w", "/src", "-u", "1000:1000", "b", "x"], {"workdir": "/src", "user": "1000:1000"}),
        (["--workdir=/w", "--user=me", "b", "x"], {"workdir": "/w", "user": "me"}),
        (["-iw/w", "b", "x"], {"interactive": True, "workdir": "/w"}),  # a value ends a group
        (["b", "--", "-h"], {"cmd": ["-h"]}),  # after NAME and --, flags are the command's
        (["b", "x", "-e", "A=1"], {"cmd": ["x", "-e", "A=1"], "env": []}),
        (["-e", "A=", "b", "x"], {"env": ["A="]}),
    ],
)  # fmt: skip
def test_exec_arguments(args, expected):
    got = parsed(*args)
    assert {k: got[k] for k in expected} == expected


def test_exec_env_without_a_value_passes_ours_or_nothing(monkeypatch):
    monkeypatch.setenv("FROM_HERE", "v=1")
    monkeypatch.delenv("NOT_HERE", raising=False)
    assert parsed("-e", "FROM_HERE", "-e", "NOT_HERE", "b", "x")["env"] == ["FROM_HERE=v=1"]


@pytest.mark.parametrize("args", [["-h"], ["--help"], ["-i", "--help", "b", "x"]])
def test_exec_help(args):
    assert fastexec.parse_args(args) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "missing NAME"),
        (["b"], "missing CMD"),
        (["b", "--"], "missing CMD"),
        (["-x", "b", "x"], "unknown option -x"),
        (["-ix", "b", "x"], "unknown option -x"),
        (["--bogus", "b", "x"], "unknown option --bogus"),
        (["--env"], "--env needs a value"),
        (["b", "-w"], "-w needs a value"),
        (["../etc", "x"], "invalid devbox name"),
        (["b/../../x", "x"], "invalid devbox name"),
    ],
)
def test_exec_usage_errors(args, message):
    with pytest.raises(UsageError, match=message.replace(".", r"\.")):
        fastexec.parse_args(args)


@pytest.mark.parametrize("name", ["a", "A0", "box-1.2_x", "x" * 63])
def test_valid_devbox_names(name):
    assert check_devbox_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "-a", ".a", "_a", "a b", "a/b", "a?b", "x" * 64, "é", "a\n", "a%2f"]
)
def test_invalid_devbox_names(name):
    """The name goes into Engine API paths: nothing that could change the path gets in."""
    with pytest.raises(UsageError) as info:
        check_devbox_name(name)
    assert info.value.exit_code == 2


def test_the_unix_socket_is_the_only_transport(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    with pytest.raises(DockerUnavailableError, match="unix socket"):
        wire.socket_path()
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/x.sock")
    assert wire.socket_path() == "/run/x.sock"
    monkeypatch.delenv("DOCKER_HOST")
    assert wire.socket_path() == "/var/run/docker.sock"


# -- devbox exec: the wire, over a real socket pair ------------------------------------------


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


def feed(payload: bytes, chunk: int = 3) -> socket.socket:
    """One end of a socket pair; the other writes `payload` in small pieces, then closes."""
    ours, theirs = socket.socketpair()

    def write() -> None:
        with theirs:
            for i in range(0, len(payload), chunk):
                theirs.sendall(payload[i : i + chunk])

    threading.Thread(target=write, daemon=True).start()
    return ours


def test_frames_split_across_reads_are_reassembled():
    stream = frame(1, b"out1") + frame(2, b"err") + frame(1, b"") + frame(1, b"x" * 70000)
    with feed(stream[5:]) as sock:
        got = list(wire.frames(sock, stream[:5]))
    assert got == [(1, b"out1"), (2, b"err"), (1, b""), (1, b"x" * 70000)]


def test_a_truncated_frame_is_dropped_not_invented():
    with feed(frame(1, b"whole") + frame(1, b"cut short")[:-3]) as sock:
        assert list(wire.frames(sock, b"")) == [(1, b"whole")]


def test_response_head_and_content_length_body():
    raw = (
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
        b'{"Id":"ab"}'
    )
    with feed(raw) as sock:
        status, headers, rest = wire.read_head(sock)
        body = wire.read_body(sock, headers, rest)
    assert (status, headers["content-type"], json.loads(body)) == (
        201,
        "application/json",
        {"Id": "ab"},
    )


def test_response_chunked_body():
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    raw += b"4\r\nWiki\r\n5;x=1\r\npedia\r\n0\r\n\r\n"
    with feed(raw) as sock:
        _, headers, rest = wire.read_head(sock)
        assert wire.read_body(sock, headers, rest) == b"Wikipedia"


def test_an_engine_that_hangs_up_mid_head_is_a_runtime_error():
    with (
        feed(b"HTTP/1.1 200 OK\r\nContent-") as sock,
        pytest.raises(DevboxRuntimeError, match="closed the connection"),
    ):
        wire.read_head(sock)


# -- the box's environment and the spec parsers ----------------------------------------------


def test_box_environment_points_every_client_at_the_proxy():
    env = box_environment("b", {"KEY": ("g", "S")}, {"MINE": "1"}, {"KEY": "gwt_x"})
    assert env["MINE"] == "1" and env["DEVBOX_NAME"] == "b"
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        assert env[var] == "http://proxy:3128"
    assert env["NO_PROXY"] == env["no_proxy"] == "proxy,localhost,127.0.0.1,::1"
    assert env["KEY"] == "gwt_x" and env["KEY_URL"] == "http://proxy:3128/gw/KEY"


def test_box_environment_without_tokens_checks_only():
    """create_devbox validates before it has tokens; no token variables appear then."""
    env = box_environment("", {"KEY": ("g", "S")}, {})
    assert "KEY" not in env and "KEY_URL" not in env


@pytest.mark.parametrize("var", RESERVED_ENV)
def test_env_cannot_override_the_proxy_settings(var):
    with pytest.raises(UsageError, match=f"--env {var} collides with the proxy settings"):
        box_environment("b", {}, {var: "http://evil:1"})


@pytest.mark.parametrize(
    ("bindings", "env", "message"),
    [
        ({"KEY": ("g", "S")}, {"KEY": "x"}, "--env KEY collides with gateway prefix KEY"),
        ({"KEY": ("g", "S")}, {"KEY_URL": "x"}, "--env KEY_URL collides"),
        ({"A": ("g", "S"), "A_URL": ("g", "S")}, {}, "gateway prefix A_URL sets A_URL"),
        ({"HTTPS_PROXY": ("g", "S")}, {}, "sets HTTPS_PROXY, which the proxy settings"),
        ({"DEVBOX": ("g", "S")}, {}, None),  # DEVBOX and DEVBOX_URL are free
        ({"1KEY": ("g", "S")}, {}, "invalid gateway prefix"),
        ({"KEY": ("g", "")}, {}, "needs a gateway and a secret"),
        ({"KEY": ("g",)}, {}, "needs a gateway and a secret"),
        ({}, {"BAD-NAME": "x"}, "invalid environment variable name"),
    ],
)
def test_box_environment_refuses_shadowing(bindings, env, message):
    if message is None:
        box_environment("b", bindings, env)
        return
    with pytest.raises(UsageError, match=message):
        box_environment("b", bindings, env)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("K=g:S", ("K", "g", "S")),
        ("API_KEY=anthropic-gateway:ANTHROPIC", ("API_KEY", "anthropic-gateway", "ANTHROPIC")),
        ("K=g:S:extra", ("K", "g", "S:extra")),
    ],
)  # fmt: skip
def test_gateway_spec(spec, expected):
    assert parse_gateway_spec(spec) == expected


@pytest.mark.parametrize("spec", ["", "K", "K=", "K=g", "K=g:", "=g:S", "K=:S"])
def test_bad_gateway_spec(spec):
    with pytest.raises(UsageError, match="PREFIX=GATEWAY:SECRET"):
        parse_gateway_spec(spec)


@pytest.mark.parametrize(
    ("spec", "expected"), [("A=1", ("A", "1")), ("A=", ("A", "")), ("_a1=x=y", ("_a1", "x=y"))]
)
def test_env_spec(spec, expected):
    assert parse_env_spec(spec) == expected


@pytest.mark.parametrize("spec", ["A", "=1", "1A=x", "A-B=x", "A B=x", ""])
def test_bad_env_spec(spec):
    with pytest.raises(UsageError, match="K=V"):
        parse_env_spec(spec)


@pytest.mark.parametrize(
    ("name", "ok"), [("A", True), ("_", True), ("a_1", True), ("", False), ("1a", False),
                     ("a-b", False), ("a.b", False), ("é", False)],
)  # fmt: skip
def test_env_names(name, ok):
    assert is_env_name(name) is ok


# -- labels and views ------------------------------------------------------------------------


def test_labels_carry_names_never_values():
    labels = labels_for("b", "box", "store-id", **{LABEL_GATEWAYS: labels_of({"K": ("g", "S")})})
    assert labels[LABEL_NAME] == "b" and labels[LABEL_ROLE] == "box"
    assert labels[LABEL_VERSION] == VERSION
    assert json.loads(labels[LABEL_GATEWAYS]) == {"K": {"gateway": "g", "secret": "S"}}


def test_gateway_views_round_trip_the_label():
    label = labels_of({"B": ("g2", "S2"), "A": ("g1", "S1")})
    views = bindings_of({LABEL_GATEWAYS: label})
    assert views == (Binding("A", "g1", "S1"), Binding("B", "g2", "S2"))
    assert [v.url for v in views] == ["http://proxy:3128/gw/A", "http://proxy:3128/gw/B"]


@pytest.mark.parametrize("label", [None, "", "not json", "[1, 2]", '{"K": "flat"}', "null"])
def test_a_damaged_gateways_label_shows_no_gateways(label):
    labels = {} if label is None else {LABEL_GATEWAYS: label}
    assert bindings_of(labels) == ()


@pytest.mark.parametrize(
    ("created", "expected"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (1700000000.5, "2023-11-14T22:13:20Z"),
        ("2024-05-01T10:20:30.123456789Z", "2024-05-01T10:20:30Z"),
        ("2024-05-01T10:20:30Z", "2024-05-01T10:20:30Z"),
        ("", None),
        (None, None),
    ],
)
def test_iso_time(created, expected):
    assert iso_time(created) == expected


def test_env_of_and_state_of():
    container = {"Config": {"Env": ["A=1", "B=x=y", "JUNK"]}, "State": {"Status": "exited"}}
    assert env_of(container) == {"A": "1", "B": "x=y"}
    assert env_of({}) == {} and env_of({"Config": None}) == {}
    assert state_of(container) == "exited"
    assert state_of({"State": "running"}) == "running"  # `docker ps` gives a plain string
    assert state_of(None) == "missing"


def test_views_as_json():
    box = Devbox(
        name="b",
        id="abc",
        status="running",
        image="img",
        policy=None,
        gateways=bindings_of({LABEL_GATEWAYS: labels_of({"K": ("g", "S")})}),
        proxy=ProxyView("def", "running", "ok"),
    )
    got = box.to_json()
    assert set(got) == {f.name for f in dataclasses.fields(Devbox)}  # every field is shown
    assert {k: got[k] for k in ("name", "id", "status", "image", "policy")} == {
        "name": "b",
        "id": "abc",
        "status": "running",
        "image": "img",
        "policy": None,
    }
    assert got["gateways"] == [
        {"prefix": "K", "gateway": "g", "secret": "S", "url": "http://proxy:3128/gw/K"}
    ]
    assert got["proxy"] == {"id": "def", "status": "running", "health": "ok", "configured": None}
    assert (got["created_at"], got["egress_network"]) == (None, None)
    assert DeleteResult("b", False).to_json() == {"name": "b", "removed": False}


def test_log_chunks_become_lines_across_chunk_boundaries():
    chunks = [b'{"a":', b' 1}\n{"b"', b": 2}\r\n\n", b"\xff tail"]
    assert list(lines(chunks)) == ['{"a": 1}', '{"b": 2}', "", "\ufffd tail"]


def test_list_survives_a_container_with_a_damaged_gateways_label(tmp_path):
    """Anyone with access to the engine can label a container devbox.name=...; a gateways
    label that is JSON but not an object used to crash `devbox list` (exit 1, for every
    devbox). It shows as a devbox without gateways instead."""
    box = {"Id": "f" * 64, "State": "running", "Image": "img", "Created": 0, "Labels": {
        LABEL_NAME: "odd", LABEL_ROLE: "box", LABEL_GATEWAYS: "[1, 2]"}}  # fmt: skip
    with FakeEngine(tmp_path) as engine:
        engine.route("GET", "/version", 200, {"ApiVersion": "1.41"})
        engine.route("GET", "/containers/json", 200, [box])
        engine.route("GET", "/networks", 200, [])
        proc = run("list", "-o", "json", env={"DOCKER_HOST": engine.host})
    assert proc.returncode == 0, proc.stderr
    assert [(b["name"], b["gateways"]) for b in json.loads(proc.stdout)] == [("odd", [])]
