"""README promises: every command takes -h, and errors are one or two lines.

The commands are found by walking the Typer app, so a new command is covered without
touching this file."""

from __future__ import annotations

import pytest
import typer.main

from devbox_cli.__main__ import main
from devbox_cli.cli import app
from tests.cli.support import run


def command_paths(command, path: tuple[str, ...] = ()):
    yield path
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from command_paths(sub, (*path, name))


PATHS = list(command_paths(typer.main.get_command(app)))


def test_the_walk_finds_the_commands():
    assert {("secret", "create"), ("policy", "check"), ("exec",), ("delete",)} <= set(PATHS)


@pytest.mark.parametrize("flag", ["-h", "--help"])
@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "devbox")
def test_every_command_takes_h(capsys, path, flag):
    assert main([*path, flag]) == 0
    out = capsys.readouterr()
    assert out.out.lstrip().startswith(f"Usage: {' '.join(('devbox', *path))} "), out.out
    assert out.err == ""


@pytest.mark.parametrize(
    ("args", "message", "command"),
    [
        (["nope"], "No such command 'nope'.", "devbox"),
        (["list", "--bogus"], "No such option: --bogus", "devbox list"),
        (["secret", "create"], "Missing argument 'name'.", "devbox secret create"),
        (["gateway", "list", "-o", "yaml"], "Invalid value for '--output'", "devbox gateway list"),
        (["logs", "b", "--tail", "lots"], "Invalid value for '--tail'", "devbox logs"),
        (["policy", "check", "p"], "Missing argument 'url'.", "devbox policy check"),
    ],
)
def test_usage_errors_are_two_lines_naming_the_help(args, message, command):
    proc = run(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"error: {message}")
    assert lines[1] == f"hint: see `{command} -h`"
