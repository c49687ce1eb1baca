"""The habits users bring from docker, kubectl and the LLM CLIs (issue 13): --version,
shell completion, NO_COLOR, -q, and lists that fit an 80-column terminal. The real CLI in a
subprocess; the engine, where one is needed, is the stand-in on a real socket."""

from __future__ import annotations

import json
import re

import pytest

from devbox_cli import Client, __version__
from tests.cli.fake_engine import FakeEngine
from tests.cli.support import run

NOWHERE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
ENGINE_VERSION = {"Version": "27.5.1", "ApiVersion": "1.47", "Os": "linux", "Arch": "amd64"}
ANSI_COLOR = re.compile(r"\x1b\[[0-9;]*3[0-7]m|\x1b\[[0-9;]*38;")


def container(name: str, role: str, store: str, **labels: str) -> dict:
    return {
        "Id": (name + role).encode().hex().ljust(64, "0")[:64],
        "Names": [f"/devbox-{name}" + ("-proxy" if role == "proxy" else "")],
        "Image": "devbox/default:0.1.0-0123456789ab",
        "State": "running" if role == "box" else "exited",
        "Status": "Up",
        "Created": 1764662400,
        "Labels": {"devbox.name": name, "devbox.role": role, "devbox.store": store, **labels},
    }


@pytest.fixture
def store_id(devbox_home) -> str:
    """A store with a key, a secret, a gateway and a policy (made in-process: the CLI's
    own start-up is what the tests below pay for); its identity."""
    client = Client(str(devbox_home))
    client.create_secret("ANTHROPIC", "sk-value")
    client.create_gateway("anthropic-gateway", preset="anthropic")
    client.create_policy("anthropic-only", allow=["*.anthropic.com"])
    return client.store.identity()


@pytest.fixture
def engine(tmp_path, store_id):
    """An engine holding two devboxes of this store and one of another store."""
    gateways = json.dumps(
        {"ANTHROPIC_API_KEY": {"gateway": "anthropic-gateway", "secret": "ANTHROPIC"}}
    )
    boxes = [
        container("agent-with-gateway", "box", store_id, **{
            "devbox.policy": "anthropic-only", "devbox.gateways": gateways,
            "devbox.expires": "2099-01-01T00:00:00Z",
        }),
        container("agent-with-gateway", "proxy", store_id),
        container("agent-two", "box", store_id),
        container("someone-elses", "box", "f" * 16),
    ]  # fmt: skip
    with FakeEngine(tmp_path) as fake:
        fake.route("GET", "/_ping", 200, "OK")
        fake.route("GET", "/version", 200, ENGINE_VERSION)
        fake.route("GET", "/networks", 200, [])

        def containers(rfile, wfile, boxes=boxes):  # the filter, as the engine applies it
            wanted = store_id
            mine = [b for b in boxes if b["Labels"]["devbox.store"] == wanted]
            body = json.dumps(mine).encode()
            wfile.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )

        fake.hijack("GET", "/containers/json", containers)
        yield fake


# -- version ------------------------------------------------------------------------------


def test_version_flag_prints_devbox_and_the_engine(engine):
    proc = run("--version", env={"DOCKER_HOST": engine.host})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"devbox {__version__}",
        "Docker Engine 27.5.1 (API 1.47, linux/amd64)",
    ]
    assert run("-V", env={"DOCKER_HOST": engine.host}).stdout == proc.stdout


@pytest.mark.parametrize("argv", [["--version", "-o", "json"], ["version", "-o", "json"]])
def test_version_as_json_carries_the_engine_version(engine, argv):
    proc = run(*argv, env={"DOCKER_HOST": engine.host})
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["version"] == __version__
    assert data["engine"] == {"version": "27.5.1", "api_version": "1.47", "os": "linux",
                              "arch": "amd64"}  # fmt: skip
    assert data["engine_error"] is None
    assert data["images"]["proxy"].startswith("devbox/proxy:")


def test_version_without_an_engine_still_answers_and_says_why():
    proc = run("--version", "-o", "json", env=NOWHERE)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["version"] == __version__ and data["engine"] is None
    assert "nonexistent" in data["engine_error"]
    text = run("--version", env=NOWHERE)
    assert text.stdout.startswith(f"devbox {__version__}\nDocker Engine: cannot reach")


# -- completion ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "complete -o default -F _devbox_completion devbox"),
        ("zsh", "#compdef devbox"),
        ("fish", "complete --command devbox"),
    ],
)
def test_completion_scripts_for_each_shell(shell, marker):
    proc = run("completion", shell)
    assert proc.returncode == 0, proc.stderr
    assert marker in proc.stdout
    assert "_DEVBOX_COMPLETE=complete_" + shell in proc.stdout


def test_completion_of_an_unknown_shell_is_a_usage_error():
    proc = run("completion", "tcsh")
    assert proc.returncode == 2
    assert "tcsh" in proc.stderr and "Traceback" not in proc.stderr


def bash_complete(words: str, env: dict[str, str] | None = None) -> list[str]:
    """What bash gets for the command line `words` (the last word being completed)."""
    parts = words.split(" ")
    proc = run(env={
        "_DEVBOX_COMPLETE": "complete_bash", "COMP_WORDS": words,
        "COMP_CWORD": str(len(parts) - 1), **(env or {}),
    })  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout.split()


def test_completion_of_commands():
    assert bash_complete("devbox sec") == ["secret"]
    assert set(bash_complete("devbox snapshot ")) >= {"create", "list", "delete"}


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("devbox secret show ", ["ANTHROPIC"]),
        ("devbox secret delete AN", ["ANTHROPIC"]),
        ("devbox secret show X", []),
        ("devbox gateway show ", ["anthropic-gateway"]),
        ("devbox policy update anth", ["anthropic-only"]),
        ("devbox create box --network-policy ", ["anthropic-only"]),
    ],
)
def test_completion_of_store_names(store_id, words, expected):
    assert bash_complete(words, NOWHERE) == expected


def test_completion_of_devbox_names_asks_the_engine_for_this_stores_own(engine):
    env = {"DOCKER_HOST": engine.host}
    assert bash_complete("devbox show ", env) == ["agent-two", "agent-with-gateway"]
    assert bash_complete("devbox delete agent-w", env) == ["agent-with-gateway"]
    assert bash_complete("devbox stop a", env) == ["agent-two", "agent-with-gateway"]


def test_completion_of_exec_completes_the_devbox_name_only(engine):
    env = {"DOCKER_HOST": engine.host}
    assert bash_complete("devbox exec agent-t", env) == ["agent-two"]
    assert bash_complete("devbox exec -u root agent-t", env) == ["agent-two"]
    assert bash_complete("devbox exec agent-two ", env) == []
    assert bash_complete("devbox exec -u ", env) == []


def test_completion_without_an_engine_completes_nothing_and_prints_no_error(store_id):
    assert bash_complete("devbox show ", NOWHERE) == []


def test_zsh_and_fish_answers_carry_the_names(store_id):
    zsh = run(env={"_DEVBOX_COMPLETE": "complete_zsh",
                   "_TYPER_COMPLETE_ARGS": "devbox gateway show "})  # fmt: skip
    assert "anthropic-gateway" in zsh.stdout, zsh.stderr
    fish = run(env={"_DEVBOX_COMPLETE": "complete_fish", "_TYPER_COMPLETE_FISH_ACTION": "get-args",
                    "_TYPER_COMPLETE_ARGS": "devbox policy show a"})  # fmt: skip
    assert fish.stdout.split() == ["anthropic-only"], fish.stderr


def test_completion_never_makes_a_store_key(devbox_home):
    assert bash_complete("devbox show ", NOWHERE) == []
    assert not (devbox_home / "key.json").exists()


# -- NO_COLOR -----------------------------------------------------------------------------


def test_errors_are_coloured_on_a_terminal_and_not_under_no_color():
    coloured = run("secret", "show", "NOPE", env={"FORCE_COLOR": "1"})
    assert coloured.returncode == 3
    assert ANSI_COLOR.search(coloured.stderr), coloured.stderr
    plain = run("secret", "show", "NOPE", env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert plain.returncode == 3
    assert "error:" in plain.stderr and "NOPE" in plain.stderr
    assert not ANSI_COLOR.search(plain.stderr), plain.stderr


def test_success_lines_under_no_color_have_no_colour(devbox_home):
    proc = run("secret", "create", "K", stdin="v", env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert proc.returncode == 0 and "created secret K" in proc.stderr
    assert not ANSI_COLOR.search(proc.stderr)


# -- -q and tables that fit ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["secret", "list", "-q"], "ANTHROPIC\n"),
        (["gateway", "list", "-q"], "anthropic-gateway\n"),
        (["policy", "list", "--quiet"], "anthropic-only\n"),
    ],
)
def test_quiet_lists_print_only_names(store_id, argv, names):
    proc = run(*argv)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == names and proc.stderr == ""


def test_devbox_list_quiet_prints_only_this_stores_names(engine):
    proc = run("list", "-q", env={"DOCKER_HOST": engine.host})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "agent-two\nagent-with-gateway\n"


def test_devbox_list_keeps_one_line_per_devbox_in_80_columns(engine):
    proc = run("list", env={"DOCKER_HOST": engine.host, "COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3, proc.stdout  # the header and one line per devbox
    assert all(len(line) <= 80 for line in lines), [len(line) for line in lines]
    header = lines[0].split()
    assert header[:5] == ["NAME", "STATUS", "PROXY", "POLICY", "GATEWAYS"]
    assert "IMAGE" not in header  # the first column to go, as docker ps drops its own
    assert lines[2].split()[:5] == [
        "agent-with-gateway", "running", "exited", "anthropic-only", "ANTHROPIC_API_KEY",
    ]  # fmt: skip


def test_devbox_list_wide_keeps_every_column(engine):
    proc = run("list", "--wide", env={"DOCKER_HOST": engine.host, "COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == [
        "NAME", "STATUS", "PROXY", "POLICY", "GATEWAYS", "IMAGE", "CREATED", "EXPIRES",
    ]  # fmt: skip
    assert len(lines) == 3 and "devbox/default:0.1.0-0123456789ab" in lines[2]


def test_a_pipe_gets_every_column_whole(engine):
    proc = run("list", env={"DOCKER_HOST": engine.host, "COLUMNS": ""})
    assert "IMAGE" in proc.stdout.splitlines()[0]
    assert "…" not in proc.stdout


@pytest.mark.parametrize("width", [40, 60, 80])
def test_narrow_terminals_cut_cells_short_rather_than_wrap(engine, width):
    proc = run("list", env={"DOCKER_HOST": engine.host, "COLUMNS": str(width)})
    lines = proc.stdout.splitlines()
    assert len(lines) == 3 and all(len(line) <= width for line in lines), proc.stdout


def test_gateway_list_fits_80_columns_with_a_long_description(store_id, devbox_home):
    long = "Gateway for the Anthropic Claude API, used by every agent of the team " * 2
    Client(str(devbox_home)).update_gateway("anthropic-gateway", description=long)
    proc = run("gateway", "list", env={"COLUMNS": "80"})
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all(len(line) <= 80 for line in lines), proc.stdout
    assert lines[1].startswith("anthropic-gateway")
