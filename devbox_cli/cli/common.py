"""Options and helpers shared by every command group."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Delete even if a devbox uses it.")]


class Output(StrEnum):
    text = "text"
    json = "json"


OutputOpt = Annotated[
    Output, typer.Option("--output", "-o", help="Output format: text or json.", show_default=True)
]

QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="Only names, one a line (for scripts).")
]
WideOpt = Annotated[bool, typer.Option("--wide", help="Every column, however wide the terminal.")]


def make_client():  # type: ignore[no-untyped-def]  # -> devbox_cli.client.Client
    """The Client a command uses. On a terminal, it asks for the store passphrase (hidden)
    when the private key is protected and DEVBOX_PASSPHRASE is not set."""
    import sys

    from devbox_cli.client import Client

    client = Client()
    if sys.stdin.isatty():
        client.store.prompt = prompt_passphrase
    return client


def prompt_passphrase() -> str:
    import getpass

    return getpass.getpass("devbox store passphrase: ")


def applied_note(applied_to: tuple[str, ...]) -> str:
    """How an update reached running devboxes, for the success line."""
    if applied_to:
        return f"; applied live to devbox(es) {', '.join(applied_to)}"
    return "; no running devbox uses it"


def report_deleted(kind: str, name: str, output: Output) -> None:
    """The result line of `devbox secret|gateway|policy delete`."""
    from devbox_cli import render

    if output is Output.json:
        render.print_json({"name": name, "deleted": True})
    else:
        render.print_success(f"deleted {kind} {name}")
