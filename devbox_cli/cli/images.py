"""`devbox images build|list`: the images devbox runs, built from the installed package."""

from __future__ import annotations

from typing import Annotated

import typer

from devbox_cli.cli.common import Output, OutputOpt, QuietOpt, WideOpt, make_client

app = typer.Typer(no_args_is_help=True)


@app.command("build")
def build(
    base: Annotated[
        str | None,
        typer.Option(
            metavar="IMAGE",
            help="Make the base from this Debian image instead of debian:bookworm-slim "
            "(pulled unless the engine has it).",
            show_default=False,
        ),
    ] = None,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline", help="Make the base with debootstrap (root), without trying to pull."
        ),
    ] = False,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Build again even the images that are there.")
    ] = False,
    output: OutputOpt = Output.text,
    quiet: QuietOpt = False,
) -> None:
    """Build the proxy image and the default devbox image (and their base).

    Everything comes from the installed package; an image already there
    is kept, since its tag names what it is built from. The base is
    debian:bookworm-slim with a few packages where the engine can pull;
    with no registry, as root with debootstrap, a Debian root made on
    this host. The proxy's wheels are downloaded on the host with pip.

        devbox images build
        sudo devbox images build --offline
    """
    from devbox_cli import render

    if base is not None and offline:
        from devbox_cli.errors import UsageError

        raise UsageError("--base and --offline are two ways of making the base: pick one")
    with render.steps("images") as (step, detail):
        built = make_client().images.build(
            base=base, offline=offline, rebuild=rebuild, step=step, detail=detail
        )
    if output is Output.json:
        render.print_json([b.to_json() for b in built])
    elif quiet:
        for b in built:
            print(b.ref)
    else:
        for b in built:
            render.print_success(f"{b.ref}: {'already there' if b.how == 'present' else b.how}")


@app.command("list")
def list_(output: OutputOpt = Output.text, quiet: QuietOpt = False, wide: WideOpt = False) -> None:
    """List the devbox images: base, proxy and default, and whether each is
    the one this version of devbox runs (`current`), an `other version`, or
    `missing` (build it with `devbox images build`)."""
    from devbox_cli import render

    found = make_client().images.list()
    if output is Output.json:
        render.print_json([i.to_json() for i in found])
        return
    if quiet:
        for i in found:
            if i.present:
                print(i.ref)
        return
    render.print_table(
        ["ROLE", "IMAGE", "STATE", "SIZE", "CREATED"],
        [
            (
                i.role,
                i.ref,
                i.state,
                "-" if i.size is None else render.format_bytes(i.size),
                i.created or "-",
            )
            for i in found
        ],
        wide=wide,
        drop=("CREATED", "SIZE"),
    )
