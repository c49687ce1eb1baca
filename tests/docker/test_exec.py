"""`devbox exec` (the fast path) and DevboxesAPI.exec against a real devbox."""

from __future__ import annotations

import hashlib
import os
import select
import subprocess
import time

import pytest

from tests.docker.conftest import DEVBOX, RUN, Cli

pytestmark = pytest.mark.docker

MIB = "import sys; sys.stdout.buffer.write(bytes(range(256)) * 4096)"


@pytest.fixture(scope="module")
def box(module_cli: Cli):
    name = f"{RUN}-exec"
    module_cli("create", name)
    try:
        yield module_cli, name
    finally:
        module_cli("delete", name, check=False)


@pytest.mark.parametrize("code", [0, 1, 7, 255])
def test_exit_codes_propagate(box, code: int):
    cli, name = box
    assert cli("exec", name, "--", "sh", "-c", f"exit {code}", check=False).returncode == code


def test_a_missing_command_is_126_or_127_as_docker_says(box):
    cli, name = box
    proc = cli("exec", name, "--", "no-such-command", check=False)
    assert proc.returncode in (126, 127)
    assert "no-such-command" in proc.stdout + proc.stderr


def test_stdout_and_stderr_stay_apart(box):
    cli, name = box
    proc = cli("exec", name, "--", "sh", "-c", "echo out; echo err >&2; echo out2")
    assert proc.stdout == "out\nout2\n"
    assert proc.stderr == "err\n"


def test_stdin_is_forwarded_with_eof(box):
    cli, name = box
    assert cli("exec", "-i", name, "--", "wc", "-c", input="hello\n").stdout.strip() == "6"
    assert cli("exec", "-i", name, "--", "cat", input="a\nb\n").stdout == "a\nb\n"
    # without -i the command's stdin is closed, not ours
    assert cli("exec", name, "--", "cat", input="ignored").stdout == ""


def test_one_mebibyte_arrives_intact_both_ways(box):
    cli, name = box
    out = cli("exec", name, "--", "python3", "-c", MIB, text=False).stdout
    assert out == bytes(range(256)) * 4096
    data = os.urandom(1 << 20)
    echoed = cli("exec", "-i", name, "--", "cat", input=data, text=False).stdout
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(data).digest()


def test_output_is_streamed_as_produced(box):
    # The command cannot end before the test answers its first line, so that line arriving
    # at all proves it was streamed; the deadline only keeps a broken stream from hanging CI.
    cli, name = box
    proc = subprocess.Popen(
        [*DEVBOX, "exec", "-i", name, "--", "sh", "-c", "echo first; read reply; echo $reply"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=cli.env(),
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "no first line while the command waits: output is held back"
        assert proc.stdout.readline() == b"first\n"
        proc.stdin.write(b"second\n")
        proc.stdin.close()
        assert proc.stdout.readline() == b"second\n"
    finally:
        proc.stdin.close()  # a no-op when answered; else the command ends at EOF
        proc.stdout.close()
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_env_workdir_and_user_flags(box):
    cli, name = box
    out = cli("exec", "-e", "A=1", "--env=B=two", "-w", "/tmp", "-u", "root", name, "--",
              "sh", "-c", 'echo "$A $B $(pwd) $(id -u)"').stdout  # fmt: skip
    assert out == "1 two /tmp 0\n"
    assert cli("exec", name, "id", "-un").stdout == "agent\n"  # `--` is optional


def test_the_devbox_environment_points_at_its_proxy(box):
    cli, name = box
    env = dict(
        line.split("=", 1)
        for line in cli("exec", name, "--", "env").stdout.splitlines()
        if "=" in line
    )
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        assert env[var] == "http://proxy:3128"
    assert "proxy" in env["NO_PROXY"].split(",") and env["no_proxy"] == env["NO_PROXY"]


def test_a_missing_devbox_is_exit_3(box):
    cli, _ = box
    proc = cli("exec", f"{RUN}-nope", "--", "true", check=False)
    assert proc.returncode == 3
    assert "no devbox" in proc.stderr and "Traceback" not in proc.stderr


def test_docker_not_running_is_exit_6(box):
    cli, name = box
    proc = cli("exec", name, "--", "true", check=False,
               env={"DOCKER_HOST": "unix:///nonexistent.sock"})  # fmt: skip
    assert proc.returncode == 6
    assert "Docker" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args", [[], ["NAME"], ["-x", "NAME", "true"], ["../etc", "true"], ["NAME", "-w"]]
)
def test_usage_errors_are_exit_2(box, args):
    cli, name = box
    proc = cli("exec", *[name if a == "NAME" else a for a in args], check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr


def test_help(box):
    cli, _ = box
    out = cli("exec", "--help").stdout
    assert "devbox exec [OPTIONS] NAME" in out and "--interactive" in out


def test_python_api_exec(box):
    cli, name = box
    from devbox_cli import Client

    client = Client(str(cli.home))
    result = client.exec(name, ["sh", "-c", "cat; echo E >&2; exit 5"], stdin="in")
    assert (result.exit_code, result.stdout, result.stderr) == (5, "in", "E\n")
    assert client.exec(name, ["pwd"], workdir="/tmp").stdout == "/tmp\n"


def _on_a_terminal(
    cli: Cli, args: list[str], keys: bytes = b"", *, prompt: bytes = b""
) -> tuple[int, bytes]:
    """Run `devbox ARGS` with a real pseudo-terminal as its stdin/stdout/stderr, type `keys`
    once `prompt` has appeared, and return its exit status and all it wrote to the terminal."""
    import pty
    import select

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [*DEVBOX, *args], stdin=follower, stdout=follower, stderr=follower, env=cli.env()
    )
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the other side closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if keys and prompt in seen:
                os.write(leader, keys)
                keys = b""
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(timeout=30), seen


def test_shell_is_interactive_on_a_terminal(box):
    cli, name = box
    keys = b"echo shell-$((6*7)) $(tty)\nexit 5\n"
    code, seen = _on_a_terminal(cli, ["shell", name], keys, prompt=b"$ ")
    assert code == 5
    assert b"shell-42 /dev/pts/" in seen  # the command ran on a terminal inside the devbox


def test_exec_with_a_tty_merges_streams_on_the_terminal(box):
    cli, name = box
    code, seen = _on_a_terminal(
        cli, ["exec", "-t", name, "--", "sh", "-c", "test -t 1 && echo out-tty; echo err >&2"]
    )
    assert code == 0
    assert b"out-tty" in seen and b"err" in seen
