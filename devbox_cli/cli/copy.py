"""`devbox cp`: files and directories between the host and a devbox, as docker cp does."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from devbox_cli.cli.common import Output, OutputOpt, make_client


def register(app: typer.Typer) -> None:
    app.command("cp")(cp)


def cp(
    source: Annotated[
        str, typer.Argument(metavar="SRC", help="NAME:PATH, a host path, or - (a tar on stdin).")
    ],
    destination: Annotated[
        str, typer.Argument(metavar="DST", help="NAME:PATH, a host path, or - (a tar on stdout).")
    ],
    follow_link: Annotated[
        bool, typer.Option("--follow-link", "-L", help="Copy what a symlink SRC points to.")
    ] = False,
    output: OutputOpt = Output.text,
) -> None:
    """Copy files and directories between the host and a devbox.

    One side is NAME:PATH (relative to the devbox's /). Modes are kept;
    what lands in the devbox belongs to its user, what lands on the
    host to you. A directory DST that exists receives SRC inside it;
    SRC ending in /. copies a directory's contents. Works on a stopped
    devbox too.

        devbox cp ./project agent:/workspace/
        devbox cp agent:/workspace/dist ./dist
        devbox cp agent:/workspace - | tar -t
    """
    from devbox_cli import render
    from devbox_cli.errors import UsageError

    if output is Output.json and destination == "-":
        raise UsageError(
            "-o json and a tar on stdout (DST -) cannot share stdout",
            "drop -o json, or copy to a host path",
        )
    with render.transfer(f"copying {source}") as update:
        result = make_client().copy(source, destination, follow_link=follow_link, progress=update)
    if output is Output.json:
        render.print_json(result.to_json())
    elif destination != "-":
        render.print_success(f"copied {render.format_bytes(result.bytes)} to {destination}")
    sys.stdout.flush()
