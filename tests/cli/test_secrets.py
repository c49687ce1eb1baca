"""Sealed secrets through the Python API and through real `devbox secret` processes."""

from __future__ import annotations

import json
import os
import pty
import select
import sys
import time
from pathlib import Path

import pytest

from devbox_cli import Client
from devbox_cli.errors import ConflictError, NotFoundError, StoreError, UsageError
from devbox_cli.secrets import SecretInfo
from tests.cli.support import run

VALUE = "sk-test-PLAINTEXT-4f1c9e77d2"  # recognizable, so a leak is easy to spot


def files_containing(home: Path, needle: str) -> list[Path]:
    """A recursive grep of the store, including any temp file left behind."""
    return [p for p in home.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


class InUse(Client):
    """A Client whose devboxes all use everything: stands in for DevboxesAPI's Docker lookup."""

    def _devboxes_using(self, kind: str, name: str) -> list[str]:
        return ["box-b", "box-a"]


# -- API -----------------------------------------------------------------------------------


def test_create_list_get_update_delete():
    client = Client()
    info = client.create_secret("ANTHROPIC_API_KEY", VALUE)
    assert isinstance(info, SecretInfo)
    assert info.name == "ANTHROPIC_API_KEY"
    assert info.created_at == info.updated_at
    assert info.created_at.endswith("Z")
    client.create_secret("_other", "x")
    assert [s.name for s in client.list_secrets()] == ["ANTHROPIC_API_KEY", "_other"]
    assert client.get_secret("ANTHROPIC_API_KEY") == info
    updated = client.update_secret("ANTHROPIC_API_KEY", "new-value")
    assert updated.created_at == info.created_at
    assert client._secret_value("ANTHROPIC_API_KEY") == "new-value"
    client.delete_secret("ANTHROPIC_API_KEY")
    assert [s.name for s in client.list_secrets()] == ["_other"]


def test_secret_info_carries_no_value():
    info = Client().create_secret("K", VALUE)
    assert VALUE not in repr(info)
    assert info.to_json() == {
        "name": "K",
        "created_at": info.created_at,
        "updated_at": info.updated_at,
    }
    public = [m for m in dir(Client) if not m.startswith("_") and "secret" in m]
    assert sorted(public) == [
        "create_secret",
        "delete_secret",
        "get_secret",
        "list_secrets",
        "update_secret",
    ]


def test_no_plaintext_on_disk(devbox_home):
    client = Client()
    client.create_secret("A", VALUE)
    client.update_secret("A", VALUE + "-2")
    client.create_secret("B", VALUE + "-b")
    client.create_gateway("g", "https://api.example.com", headers=["x-k=secret:B"])
    assert files_containing(devbox_home, "PLAINTEXT") == []
    assert sorted(p.name for p in devbox_home.iterdir()) == [
        ".lock",
        "gateways.json",
        "key.json",
        "secrets.json",
    ]


@pytest.mark.parametrize("name", ["A", "_", "a_b_1", "ANTHROPIC_API_KEY", "_9", "x" * 128])
def test_valid_names(name):
    assert Client().create_secret(name, "v").name == name


@pytest.mark.parametrize(
    "name", ["", "1ABC", "with-dash", "has space", "dot.ted", "ünï", "A\n", "x" * 129, "$X"]
)
def test_invalid_names(name):
    with pytest.raises(UsageError, match="invalid secret name"):
        Client().create_secret(name, "v")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "cannot be empty"),
        ("two\nlines", "newlines or control characters"),
        ("cr\rhere", "newlines or control characters"),
        ("nul\x00", "newlines or control characters"),
        ("x" * (64 * 1024 + 1), "limited to"),
    ],
)
def test_invalid_values(value, message):
    with pytest.raises(UsageError, match=message) as err:
        Client().create_secret("K", value)
    assert value not in str(err.value) or value == ""
    assert Client().list_secrets() == []


def test_name_taken_and_unknown_name():
    client = Client()
    client.create_secret("K", "v")
    with pytest.raises(ConflictError, match="already exists") as err:
        client.create_secret("K", "w")
    assert "devbox secret update K" in err.value.hint
    for call in (
        lambda: client.get_secret("NOPE"),
        lambda: client.update_secret("NOPE", "v"),
        lambda: client.delete_secret("NOPE"),
        lambda: client._secret_value("NOPE"),
    ):
        with pytest.raises(NotFoundError, match="no secret NOPE") as err:
            call()
        assert "devbox secret create NOPE" in err.value.hint


def test_delete_refused_while_a_devbox_uses_it():
    client = InUse()
    client.create_secret("K", "v")
    with pytest.raises(ConflictError, match="box-a, box-b") as err:
        client.delete_secret("K")
    assert "--force" in err.value.hint
    assert [s.name for s in client.list_secrets()] == ["K"]
    client.delete_secret("K", force=True)
    assert client.list_secrets() == []


def test_delete_refused_while_a_gateway_header_uses_it():
    client = Client()
    client.create_secret("ORG", "v")
    client.create_gateway("g", "https://api.example.com", headers=["x-org=secret:ORG"])
    with pytest.raises(ConflictError, match=r"header of gateway.* g"):
        client.delete_secret("ORG")
    client.delete_secret("ORG", force=True)
    assert client.list_secrets() == []


def test_secret_value_needs_the_passphrase(monkeypatch):
    Client(passphrase="pw").create_secret("K", VALUE)
    with pytest.raises(StoreError, match="protected by a passphrase") as err:
        Client()._secret_value("K")
    assert VALUE not in str(err.value)
    with pytest.raises(StoreError, match="wrong passphrase"):
        Client(passphrase="nope")._secret_value("K")
    monkeypatch.setenv("DEVBOX_PASSPHRASE", "pw")
    assert Client()._secret_value("K") == VALUE


# -- CLI: where the value comes from -------------------------------------------------------


def test_cli_value_from_stdin_strips_exactly_one_newline():
    assert run("secret", "create", "K", stdin=VALUE + "\n").returncode == 0
    assert Client()._secret_value("K") == VALUE
    assert run("secret", "update", "K", stdin="no-newline").returncode == 0
    assert Client()._secret_value("K") == "no-newline"
    assert run("secret", "update", "K", stdin="crlf\r\n").returncode == 0
    assert Client()._secret_value("K") == "crlf"
    proc = run("secret", "update", "K", stdin="two\n\n")
    assert proc.returncode == 2
    assert "newlines" in proc.stderr


def test_cli_value_from_env():
    proc = run("secret", "create", "K", "--from-env", "MY_KEY", env={"MY_KEY": VALUE})
    assert proc.returncode == 0, proc.stderr
    assert Client()._secret_value("K") == VALUE
    assert VALUE not in proc.stdout + proc.stderr


def test_cli_from_env_unset_is_a_usage_error():
    env = {k: v for k, v in os.environ.items() if k != "NOT_SET_ANYWHERE"}
    proc = run("secret", "create", "K", "--from-env", "NOT_SET_ANYWHERE", env=env)
    assert proc.returncode == 2
    assert "NOT_SET_ANYWHERE is not set" in proc.stderr
    assert Client().list_secrets() == []


@pytest.mark.parametrize(
    "argv",
    [["K", VALUE], ["K", "--value", VALUE], ["K", f"--value={VALUE}"], ["K", "--", VALUE]],
)
@pytest.mark.parametrize("command", ["create", "update"])
def test_cli_refuses_a_value_on_the_command_line(command, argv):
    if command == "update":
        Client().create_secret("K", "old")
    proc = run("secret", command, *argv, stdin="piped\n")
    assert proc.returncode == 2
    assert "never taken from the command line" in proc.stderr
    assert VALUE not in proc.stdout + proc.stderr
    assert files_containing(Client().store.home, VALUE) == []
    if command == "update":
        assert Client()._secret_value("K") == "old"
    else:
        assert Client().list_secrets() == []


def test_cli_empty_stdin_is_refused():
    proc = run("secret", "create", "K", stdin="")
    assert proc.returncode == 2
    assert "cannot be empty" in proc.stderr


def test_cli_hidden_prompt_on_a_terminal():
    """On a real pseudo-terminal: asked twice, nothing echoed, mismatch refused."""
    out, code = _run_on_pty(["secret", "create", "TTY_KEY"], [VALUE, VALUE])
    assert code == 0, out
    assert "value:" in out
    assert "value (again):" in out
    assert VALUE not in out  # getpass turned echo off
    assert Client()._secret_value("TTY_KEY") == VALUE
    out, code = _run_on_pty(["secret", "create", "OTHER"], ["one", "two"])
    assert code == 2
    assert "do not match" in out
    assert [s.name for s in Client().list_secrets()] == ["TTY_KEY"]


def _run_on_pty(args: list[str], answers: list[str]) -> tuple[str, int]:
    pid, fd = pty.fork()
    if pid == 0:  # child: the pty is its controlling terminal and stdin
        os.execv(sys.executable, [sys.executable, "-m", "devbox_cli", *args])
    output = since = b""
    pending = list(answers)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            since += chunk
            # answer each prompt once, when it is shown (it ends with ": ", no newline)
            if pending and since.endswith(b": "):
                os.write(fd, pending.pop(0).encode() + b"\n")
                since = b""
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    return output.decode(errors="replace"), os.waitstatus_to_exitcode(status)


# -- CLI: output and exit codes ------------------------------------------------------------


def test_cli_json_shapes():
    created = run("secret", "create", "K", "-o", "json", stdin=VALUE)
    assert created.returncode == 0
    info = json.loads(created.stdout)
    assert set(info) == {"name", "created_at", "updated_at"}
    assert info["name"] == "K"
    run("secret", "create", "A", stdin="other")
    listed = run("secret", "list", "-o", "json")
    assert [s["name"] for s in json.loads(listed.stdout)] == ["A", "K"]
    assert all(set(s) == {"name", "created_at", "updated_at"} for s in json.loads(listed.stdout))
    shown = run("secret", "show", "K", "-o", "json")
    assert json.loads(shown.stdout) == info
    updated = json.loads(run("secret", "update", "K", "-o", "json", stdin="w").stdout)
    assert updated["name"] == "K"
    deleted = run("secret", "delete", "K", "-o", "json")
    assert json.loads(deleted.stdout) == {"name": "K", "deleted": True}
    remaining = json.loads(run("secret", "list", "-o", "json").stdout)
    assert [s["name"] for s in remaining] == ["A"]


def test_cli_empty_list_json_is_an_array():
    proc = run("secret", "list", "-o", "json")
    assert proc.returncode == 0
    assert json.loads(proc.stdout) == []


def test_cli_text_output_never_shows_the_value():
    run("secret", "create", "K", stdin=VALUE)
    outputs = [
        run("secret", "list"),
        run("secret", "show", "K"),
        run("secret", "list", "-o", "json"),
        run("secret", "show", "K", "-o", "json"),
        run("secret", "create", "K", stdin=VALUE),  # conflict error
        run("secret", "update", "K", stdin=VALUE + "\nsecond line"),  # validation error
    ]
    for proc in outputs:
        assert VALUE not in proc.stdout + proc.stderr
    assert "K" in outputs[0].stdout


@pytest.mark.parametrize(
    ("args", "stdin", "code", "message"),
    [
        (["show", "NOPE"], "", 3, "no secret NOPE"),
        (["delete", "NOPE"], "", 3, "no secret NOPE"),
        (["update", "NOPE"], "v", 3, "devbox secret create NOPE"),
        (["create", "bad-name"], "v", 2, "invalid secret name"),
        (["show", "bad-name"], "", 2, "invalid secret name"),
        (["create", "EXISTS"], "v", 4, "already exists"),
        (["delete"], "", 2, "Missing argument"),
        (["list", "-o", "yaml"], "", 2, "yaml"),
    ],
)
def test_cli_exit_codes(args, stdin, code, message):
    Client().create_secret("EXISTS", "v")
    proc = run("secret", *args, stdin=stdin)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert 1 <= len(proc.stderr.strip().splitlines()) <= 2, proc.stderr


def test_cli_conflict_on_create_is_reported_before_reading_the_value():
    Client().create_secret("K", "v")
    proc = run("secret", "create", "K", stdin="")  # an empty value would be a usage error
    assert proc.returncode == 4


def test_cli_delete_force():
    client = Client()
    client.create_secret("ORG", "v")
    client.create_gateway("g", "https://api.example.com", headers=["x-org=secret:ORG"])
    refused = run("secret", "delete", "ORG")
    assert refused.returncode == 4
    assert "--force" in refused.stderr
    assert run("secret", "delete", "ORG", "--force").returncode == 0
    assert client.list_secrets() == []


def test_cli_passphrase_set_and_remove():
    run("secret", "create", "K", stdin=VALUE)
    assert run("secret", "passphrase", stdin="pw-1\n").returncode == 0
    assert Client().store.key_protected()
    with pytest.raises(StoreError, match="protected"):
        Client()._secret_value("K")
    assert run("secret", "create", "L", stdin="adding needs no passphrase").returncode == 0
    wrong = run("secret", "passphrase", "--remove", env={"DEVBOX_PASSPHRASE": "pw-2"})
    assert wrong.returncode == 5
    assert "wrong passphrase" in wrong.stderr
    assert "pw-1" not in wrong.stderr + wrong.stdout
    ok = run("secret", "passphrase", "--remove", env={"DEVBOX_PASSPHRASE": "pw-1"})
    assert ok.returncode == 0, ok.stderr
    assert not Client().store.key_protected()
    assert Client()._secret_value("K") == VALUE


def test_cli_help_is_the_docstring():
    proc = run("secret", "create", "--help")
    assert proc.returncode == 0
    assert "never taken from the command line" in proc.stdout
    assert "--from-env" in proc.stdout


def test_cli_asks_for_the_store_passphrase_on_a_terminal():
    client = Client(passphrase="tty-pass")
    client.create_secret("K", VALUE)
    out, code = _run_on_pty(["secret", "passphrase", "--remove"], ["wrong"])
    assert code == 5, out
    assert "devbox store passphrase:" in out
    assert "wrong passphrase" in out
    assert Client().store.key_protected()
    out, code = _run_on_pty(["secret", "passphrase", "--remove"], ["tty-pass"])
    assert code == 0, out
    assert "tty-pass" not in out
    assert Client()._secret_value("K") == VALUE


def test_debug_traceback_does_not_carry_the_value():
    proc = run("secret", "create", "K", stdin=VALUE + "\nsecond", env={"DEVBOX_DEBUG": "1"})
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr
    assert "UsageError" in proc.stderr
    assert VALUE not in proc.stdout + proc.stderr
