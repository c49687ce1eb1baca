"""The surface: every command is in the README's command table and has its Python method in
the README's Python API table, and every operation a service offers is a Client method.

Everything is found by walking: the Typer app for commands, the Client's composed services
for operations. A new command or a new public service method fails here until the README
and the Client carry it (or it is declared below as no operation, with the reason)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import typer.main

from devbox_cli.cli import app
from devbox_cli.client import Client, _Via
from tests.cli.test_help import command_paths

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
ROOT = typer.main.get_command(app)
GROUPS = {name for name, cmd in ROOT.commands.items() if hasattr(cmd, "commands")}
COMMANDS = [p for p in command_paths(ROOT) if len(p) == 2 or (len(p) == 1 and p[0] not in GROUPS)]
# -h and -o are promised for every command once, above the table.
EVERYWHERE = {"--help", "-h", "--output", "-o"}

# Client attributes holding a service whose public methods are not operations of their own.
MACHINERY = {
    "configs": "ProxyConfigs builds proxy configs (with secret values) for the pushes",
    "proxies": "ProxyPusher pushes configs; each resource's service calls it",
    "store": "the Store: its unlock() and prompt are the Client's set-up, not operations",
}
# Public methods of a service that are not operations, with the reason.
NOT_OPERATIONS = {
    ("healer", "configured"): "reads a container inspect the caller already has (list, show)",
    ("healer", "heal"): "client.heal_devbox is DevboxService.heal, which checks the name first",
    ("images", "builds"): "the build an image ref needs, a step of build_images",
}


def section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def table_rows(text: str, first: str) -> list[list[str]]:
    """The cells of each row of the table whose first column starts with `first`."""
    rows = []
    for line in text.splitlines():
        if line.startswith(f"| {first}"):
            rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows


def commands_in(cell: str) -> dict[tuple[str, ...], str]:
    """`devbox secret update NAME`, `list`, `show NAME` -> the command paths it names, each
    with its fragment. A fragment without `devbox` continues the group of the one before."""
    found: dict[tuple[str, ...], str] = {}
    group: str | None = None
    for fragment in re.findall(r"`([^`]+)`", cell):
        words = fragment.split()
        if words[0] == "devbox":
            words = words[1:]
            group = words[0] if words[0] in GROUPS else None
        elif words[0] in GROUPS:
            group = words[0]
        elif group:
            words = [group, *words]
        path = tuple(words[:2]) if words[0] in GROUPS else (words[0],)
        found[path] = found.get(path, "") + " " + fragment.replace("\\|", "|")
    return found


def documented_commands() -> dict[tuple[str, ...], str]:
    found: dict[tuple[str, ...], str] = {}
    for row in table_rows(section("Commands"), "`devbox"):
        for path, fragment in commands_in(row[0]).items():
            found[path] = found.get(path, "") + fragment
    return found


def command(path: tuple[str, ...]):  # type: ignore[no-untyped-def]
    cmd = ROOT
    for word in path:
        cmd = cmd.commands[word]
    return cmd


def option_names(path: tuple[str, ...]) -> list[list[str]]:
    return [
        [*p.opts, *p.secondary_opts]
        for p in command(path).params
        if p.param_type_name == "option" and not {*p.opts, *p.secondary_opts} & EVERYWHERE
    ]


def mentions(text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


def test_the_walks_find_what_they_are_about():
    assert {("secret", "create"), ("cp",), ("snapshot", "delete"), ("volume", "list")} <= set(
        COMMANDS
    )
    assert ("secret",) not in COMMANDS and len(COMMANDS) > 30
    assert {("cp",), ("secret", "update"), ("logs",)} <= documented_commands().keys()


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_and_each_of_its_options_is_in_the_readme_table(path):
    documented = documented_commands()
    assert path in documented, f"`devbox {' '.join(path)}` is not in README's command table"
    missing = [n for n in option_names(path) if not any(mentions(documented[path], f) for f in n)]
    assert missing == [], f"devbox {' '.join(path)}: the table's row does not name {missing}"


def test_the_table_names_no_command_that_does_not_exist():
    assert sorted(set(documented_commands()) - set(COMMANDS)) == []


def test_the_readme_check_finds_a_missing_command_and_option():
    cell = "`devbox secret update NAME`, `list`, `devbox logs NAME [-f]`, `volume delete N`"
    assert set(commands_in(cell)) == {
        ("secret", "update"), ("secret", "list"), ("logs",), ("volume", "delete")}  # fmt: skip
    assert not mentions(commands_in(cell)[("logs",)], "--tail")
    assert not mentions("[--add-allow H]", "--allow") and mentions("[--allow H]", "--allow")


# -- the Python API --------------------------------------------------------------------------


def client_operations() -> dict[str, _Via]:
    return {name: v for name, v in vars(Client).items() if isinstance(v, _Via)}


def service_methods(client: Client) -> dict[tuple[str, str], object]:
    """(attribute, method) for every public method defined on each service the Client
    composes, machinery left out."""
    found = {}
    for attr, service in vars(client).items():
        if attr.startswith("_") or attr in MACHINERY:
            continue
        assert type(service).__module__.startswith("devbox_cli.services."), attr
        for name, fn in vars(type(service)).items():
            if not name.startswith("_") and inspect.isfunction(fn):
                found[(attr, name)] = fn
    return found


def test_every_public_service_operation_is_a_client_method():
    client = Client()  # the store only: the engine is opened on first use
    on_client = {(v.service, v.method.__name__) for v in client_operations().values()}
    methods = service_methods(client)
    assert {("copies", "copy_to"), ("volumes", "delete"), ("lifecycle", "gc")} <= methods.keys()
    missing = sorted(set(methods) - on_client - set(NOT_OPERATIONS))
    assert missing == [], f"service operations without a Client method: {missing}"
    assert set(NOT_OPERATIONS) <= set(methods)  # no stale exception
    for name, via in client_operations().items():  # each is its service's own method
        assert getattr(client, name) == getattr(getattr(client, via.service), via.method.__name__)


def python_table() -> list[tuple[dict[tuple[str, ...], str], set[str]]]:
    """README's Python API table: (the commands of a row, the Client methods it names)."""
    rows = []
    for cells in table_rows(section("Python API"), "`devbox"):
        rows.append((commands_in(cells[0]), set(re.findall(r"client\.(\w+)\(", cells[1]))))
    return rows


def test_the_python_api_table_gives_every_command_its_method_and_names_every_method():
    rows = python_table()
    by_command = {path: methods for paths, methods in rows for path in paths}
    assert sorted(set(COMMANDS) - set(by_command)) == []
    assert sorted(set(by_command) - set(COMMANDS)) == []
    named = {m for _, methods in rows for m in methods}
    public = set(client_operations()) | {"watcher"}
    assert sorted(named - public) == [], "the table names methods the Client does not have"
    assert sorted(public - named) == [], "Client methods the table does not name"
    cli_only = {("shell",), ("version",), ("completion",)}
    assert all(methods for path, methods in by_command.items() if path not in cli_only)
