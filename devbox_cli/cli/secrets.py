"""`devbox secret ...`: sealed secrets. A value is read from stdin, an environment variable
or a hidden prompt, never from the command line (argv shows in `ps` and shell history)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from devbox_cli.cli import complete
from devbox_cli.cli.common import (
    Output,
    OutputOpt,
    QuietOpt,
    WideOpt,
    applied_note,
    make_client,
    report_deleted,
)

app = typer.Typer(no_args_is_help=True)

NameArg = Annotated[
    str,
    typer.Argument(
        help="Secret name, an environment-variable name.", autocompletion=complete.secrets
    ),
]
FromEnvOpt = Annotated[
    str | None,
    typer.Option("--from-env", metavar="VAR", help="Read the value from environment variable VAR."),
]
# Extra arguments are collected, not rejected by click, so that `devbox secret create NAME
# VALUE` gets a message explaining why, and click never echoes the value in its error.
EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


@app.command("create", context_settings=EXTRA_ARGS)
def create(
    ctx: typer.Context,
    name: NameArg,
    from_env: FromEnvOpt = None,
    output: OutputOpt = Output.text,
) -> None:
    """Create a secret, sealed at rest.

    The value comes from stdin when piped (one trailing newline is
    stripped), from --from-env VAR, or else from a hidden prompt.
    It is never taken from the command line.

        printf %s "$KEY" | devbox secret create ANTHROPIC_API_KEY
    """
    from devbox_cli.services.kinds import ResourceKind

    _refuse_argv_value(ctx.args)
    client = make_client()
    if any(s.name == name for s in client.list_secrets()):
        raise ResourceKind.SECRET.already_exists(
            name
        )  # before asking for a value that would be thrown away
    info = client.create_secret(name, _read_value(from_env))
    _done(info, f"created secret {name}", output)


@app.command("update", context_settings=EXTRA_ARGS)
def update(
    ctx: typer.Context,
    name: NameArg,
    from_env: FromEnvOpt = None,
    output: OutputOpt = Output.text,
) -> None:
    """Replace a secret's value (same sources as `create`).

    Running devboxes that use it get the new value live, without a restart.
    """
    _refuse_argv_value(ctx.args)
    client = make_client()
    client.get_secret(name)  # fail before asking for a value
    info = client.update_secret(name, _read_value(from_env))
    _done(info, f"updated secret {name}{applied_note(info.applied_to)}", output, updated=True)


@app.command("list")
def list_(output: OutputOpt = Output.text, quiet: QuietOpt = False, wide: WideOpt = False) -> None:
    """List secrets: names and timestamps, never values."""
    from devbox_cli import render

    secrets = make_client().list_secrets()
    if output is Output.json:
        render.print_json([s.to_json() for s in secrets])
        return
    if quiet:
        render.print_names(s.name for s in secrets)
        return
    render.print_table(
        ["NAME", "CREATED", "UPDATED"],
        [(s.name, s.created_at, s.updated_at) for s in secrets],
        empty="no secrets yet: create one with `devbox secret create NAME`",
        wide=wide,
        drop=("UPDATED", "CREATED"),
    )


@app.command("show")
def show(name: NameArg, output: OutputOpt = Output.text) -> None:
    """Show a secret's name and timestamps. The value cannot be read back."""
    from devbox_cli import render

    info = make_client().get_secret(name)
    if output is Output.json:
        render.print_json(info.to_json())
        return
    render.print_fields(
        [("name", info.name), ("created", info.created_at), ("updated", info.updated_at)]
    )


@app.command("delete")
def delete(
    name: NameArg,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Delete even if a devbox or gateway uses it.")
    ] = False,
    output: OutputOpt = Output.text,
) -> None:
    """Delete a secret. Refused while a devbox or a gateway header uses it, unless --force."""
    make_client().delete_secret(name, force=force)
    report_deleted("secret", name, output)


@app.command("passphrase")
def passphrase(
    remove: Annotated[
        bool, typer.Option("--remove", help="Store the private key unprotected again.")
    ] = False,
) -> None:
    """Protect the store's private key with a passphrase, or change or remove it.

    The new passphrase is read from a hidden prompt (twice), or from
    stdin when piped. The current one, if any, comes from
    DEVBOX_PASSPHRASE or a prompt.

    Afterwards, commands that open secrets (creating a devbox) need
    DEVBOX_PASSPHRASE or a terminal; adding a secret never does.
    Setting DEVBOX_PASSPHRASE before the first secret is created
    also protects the key from the start.
    """
    from devbox_cli import render

    client = make_client()
    new = None if remove else _read_new_passphrase()
    client.set_passphrase(new)
    render.print_success("passphrase removed" if remove else "passphrase set")


def _refuse_argv_value(extra: list[str]) -> None:
    if extra:
        from devbox_cli.errors import UsageError

        raise UsageError(
            "unexpected arguments: a secret's value is never taken from the command line "
            "(it would show in `ps` and your shell history)",
            'pipe it in (`printf %s "$VALUE" | devbox secret create NAME`), use --from-env '
            "VAR, or run without it to be prompted",
        )


def _read_value(from_env: str | None) -> str:
    """The value from --from-env, piped stdin, or a hidden prompt with confirmation."""
    from devbox_cli.errors import UsageError

    if from_env is not None:
        value = os.environ.get(from_env)
        if value is None:
            raise UsageError(
                f"environment variable {from_env} is not set", f"export {from_env} first"
            )
        return value
    if not sys.stdin.isatty():
        data = sys.stdin.buffer.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError("the value on stdin is not UTF-8 text") from None
        return _strip_one_newline(text)
    return _prompt_twice("value")


def _read_new_passphrase() -> str:
    from devbox_cli.errors import UsageError

    if sys.stdin.isatty():
        new = _prompt_twice("new passphrase")
    else:
        new = _strip_one_newline(sys.stdin.readline())
    if not new:
        raise UsageError("the passphrase cannot be empty", "use --remove to drop the protection")
    return new


def _prompt_twice(what: str) -> str:
    import getpass

    from devbox_cli.errors import UsageError

    first = getpass.getpass(f"{what}: ")
    if getpass.getpass(f"{what} (again): ") != first:
        raise UsageError("the two entries do not match", "run the command again")
    return first


def _strip_one_newline(text: str) -> str:
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


def _done(info, message: str, output: Output, updated: bool = False) -> None:  # type: ignore[no-untyped-def]
    from devbox_cli import render

    if output is Output.json:
        extra = {"applied_to": list(info.applied_to)} if updated else {}
        render.print_json({**info.to_json(), **extra})
    else:
        render.print_success(message)
