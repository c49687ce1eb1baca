"""`devbox version` (also `devbox --version`) and `devbox completion SHELL`."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import typer

from devbox_cli.cli.common import Output, OutputOpt

COMPLETE_VAR = "_DEVBOX_COMPLETE"


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def register(app: typer.Typer) -> None:
    app.command("version")(version)
    app.command("completion")(completion)


def version(output: OutputOpt = Output.text) -> None:
    """Print devbox's version, and the Docker engine's (`devbox --version` too)."""
    import platform

    from devbox_cli import __version__, render
    from devbox_cli.engine.images import image_refs
    from devbox_cli.services.completion import engine_version

    engine = engine_version()
    refs = image_refs()
    if output is Output.json:
        render.print_json(
            {
                "version": __version__,
                "python": platform.python_version(),
                "engine": engine if isinstance(engine, dict) else None,
                "engine_error": engine if isinstance(engine, str) else None,
                "images": {"proxy": refs.proxy, "default": refs.default},
            }
        )
        return
    sys.stdout.write(f"devbox {__version__}\n")
    if isinstance(engine, dict):
        sys.stdout.write(
            f"Docker Engine {engine['version']} (API {engine['api_version']}, "
            f"{engine['os']}/{engine['arch']})\n"
        )
    else:
        sys.stdout.write(f"Docker Engine: {engine}\n")


def completion(
    shell: Annotated[Shell, typer.Argument(help="bash, zsh or fish.", show_default=False)],
) -> None:
    """Print the shell completion script for SHELL.

    Completes commands, options and the names of devboxes, secrets,
    gateways, policies, snapshots and volumes.

        eval "$(devbox completion bash)"        # in ~/.bashrc
        eval "$(devbox completion zsh)"         # in ~/.zshrc (after compinit)
        devbox completion fish > ~/.config/fish/completions/devbox.fish
    """
    from typer._completion_shared import get_completion_script

    script = get_completion_script(prog_name="devbox", complete_var=COMPLETE_VAR, shell=shell)
    sys.stdout.write(script.rstrip("\n") + "\n")
