"""`devbox volume ...`: this store's devbox volumes, made by `devbox create --volume`."""

from __future__ import annotations

from typing import Annotated

import typer

from devbox_cli.cli import complete
from devbox_cli.cli.common import Output, OutputOpt, QuietOpt, WideOpt, make_client

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def list_(output: OutputOpt = Output.text, quiet: QuietOpt = False, wide: WideOpt = False) -> None:
    """List this store's volumes and the devboxes that mount them."""
    from devbox_cli import render

    volumes = make_client().list_volumes()
    if output is Output.json:
        render.print_json([v.to_json() for v in volumes])
        return
    if quiet:
        render.print_names(v.name for v in volumes)
        return
    render.print_table(
        ["NAME", "USED BY", "CREATED", "DOCKER VOLUME"],
        [(v.name, ",".join(v.used_by) or "-", v.created_at, v.docker_name) for v in volumes],
        empty="no volumes: `devbox create NAME --volume VOLUME:/path` makes one",
        wide=wide,
        drop=("DOCKER VOLUME", "CREATED", "USED BY"),
    )


@app.command("delete")
def delete(
    names: Annotated[
        list[str],
        typer.Argument(help="Volume names.", show_default=False, autocompletion=complete.volumes),
    ],
    force: Annotated[
        bool,
        typer.Option("--force", "-f", help="Also delete the devboxes that use them."),
    ] = False,
    output: OutputOpt = Output.text,
) -> None:
    """Delete volumes and their data.

    A volume a devbox uses is refused unless --force, which deletes
    those devboxes first. Deleting a devbox never deletes its volumes.
    """
    from devbox_cli import render

    results = make_client().delete_volumes(names, force=force)
    if output is Output.json:
        render.print_json([r.to_json() for r in results])
        return
    for r in results:
        also = f" and devbox(es) {', '.join(r.devboxes_deleted)}" if r.devboxes_deleted else ""
        render.print_success(f"deleted volume {r.name}{also}")
