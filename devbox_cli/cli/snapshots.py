"""`devbox snapshot create|list|delete`: a devbox's filesystem kept as a local image, to
start new devboxes from (`devbox create --from-snapshot SNAPSHOT`)."""

from __future__ import annotations

from typing import Annotated

import typer

from devbox_cli.cli import complete
from devbox_cli.cli.common import Output, OutputOpt, QuietOpt, WideOpt, make_client

app = typer.Typer(no_args_is_help=True)


@app.command("create")
def create(
    name: Annotated[
        str,
        typer.Argument(
            help="Devbox to snapshot.", show_default=False, autocompletion=complete.devboxes
        ),
    ],
    snapshot: Annotated[
        str | None,
        typer.Argument(help="Snapshot name (default: NAME-<UTC time>).", show_default=False),
    ] = None,
    output: OutputOpt = Output.text,
) -> None:
    """Save a devbox's filesystem as a snapshot (a local image).

    The box only, never its proxy; no gateway token, proxy setting or
    --env of the devbox goes with it, and no secret is ever in a box. A
    running box is paused for a moment while its files are read. /tmp
    (a tmpfs) is not part of it.

        devbox snapshot create agent before-refactor
        devbox create agent2 --from-snapshot before-refactor
    """
    from devbox_cli import render

    with render.progress("taking a snapshot") as update:
        snap = make_client().create_snapshot(name, snapshot, progress=update)
    if output is Output.json:
        render.print_json(snap.to_json())
        return
    render.print_success(
        f"snapshot {snap.name} of devbox {name} saved as {snap.image}: "
        f"devbox create --from-snapshot {snap.name}"
    )


@app.command("list")
def list_(output: OutputOpt = Output.text, quiet: QuietOpt = False, wide: WideOpt = False) -> None:
    """List this store's snapshots."""
    from devbox_cli import render

    snaps = make_client().list_snapshots()
    if output is Output.json:
        render.print_json([s.to_json() for s in snaps])
        return
    if quiet:
        render.print_names(s.name for s in snaps)
        return
    render.print_table(
        ["NAME", "SOURCE", "CREATED", "SIZE", "IMAGE"],
        [(s.name, s.source or "-", s.created_at, _size(s.size), s.image) for s in snaps],
        empty="no snapshots: take one with `devbox snapshot create NAME`",
        wide=wide,
        drop=("IMAGE", "SIZE", "SOURCE", "CREATED"),
    )


@app.command("delete")
def delete(
    snapshots: Annotated[
        list[str],
        typer.Argument(
            help="Snapshot names.", show_default=False, autocompletion=complete.snapshots
        ),
    ],
    output: OutputOpt = Output.text,
) -> None:
    """Delete snapshots. Missing ones are reported, not errors; one a devbox
    was created from is refused until that devbox is deleted."""
    from devbox_cli import render

    results = make_client().delete_snapshots(snapshots)
    if output is Output.json:
        render.print_json([r.to_json() for r in results])
        return
    for r in results:
        if r.removed:
            render.print_success(f"deleted snapshot {r.name}")
        else:
            render.print_warning(f"no snapshot {r.name}: nothing to delete")


def _size(size: int | None) -> str:
    return "-" if size is None else f"{size / 1e6:.0f}MB"
