"""`devbox logs NAME [--egress]`: a devbox's output, or its proxy's egress audit log."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from devbox_cli.cli import complete
from devbox_cli.cli.common import Output, OutputOpt, make_client

NameArg = Annotated[
    str, typer.Argument(help="Devbox name.", show_default=False, autocompletion=complete.devboxes)
]


def register(app: typer.Typer) -> None:
    app.command("logs")(logs)


def logs(
    name: NameArg,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    egress: Annotated[
        bool, typer.Option("--egress", help="The proxy's audit log instead of the box's output.")
    ] = False,
    denied: Annotated[
        bool, typer.Option("--denied", help="With --egress: only what was refused.")
    ] = False,
    since: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="With --egress: only the last DURATION (15m, 2h, 1d) or since a UTC time.",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(
            metavar="PATTERN",
            help="With --egress: only hosts matching PATTERN, e.g. '*.anthropic.com'.",
            show_default=False,
        ),
    ] = None,
    tail: Annotated[
        int | None, typer.Option(help="Only the last N lines.", show_default=False)
    ] = None,
    output: OutputOpt = Output.text,
) -> None:
    """Print a devbox's output, or with --egress its egress audit log.

    The audit log is aligned columns (TIME is UTC; BYTES both ways),
    denials in red on a terminal; -o json prints the proxy's own lines,
    one JSON object each.

        devbox logs agent --egress --denied --since 1h
        devbox logs agent --egress -f --host '*.github.com'
    """
    from devbox_cli import render
    from devbox_cli.errors import UsageError
    from devbox_cli.services.egress import COLUMNS, DROP, egress_filter, egress_row

    wanted = egress_filter(denied=denied, since=since, host=host)
    if wanted.active and not egress:
        raise UsageError("--denied, --since and --host filter the egress log: add --egress")
    client, lines = make_client(), "all" if tail is None else tail
    if not egress:
        for chunk in client.devbox_logs(name, follow=follow, tail=lines):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
        return
    emit = None if output is Output.json else render.column_printer(COLUMNS, drop=DROP)
    shown = 0
    for record in client.egress_log(name, follow=follow, tail=lines):
        if not wanted.admits(record.fields):
            continue
        if emit is None:
            sys.stdout.write(record.line + "\n")
            sys.stdout.flush()
        elif record.fields is not None:
            emit(egress_row(record.fields), record.fields.get("decision") != "allow")
            shown += 1
    if emit is not None and not shown and not follow:
        what = "that matches" if wanted.active else "recorded"
        render.print_note(f"no egress {what} for devbox {name} yet")
