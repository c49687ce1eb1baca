"""The Typer app. One sub-app per command group; each command parses, calls one core
function and renders. No business rules here and no `import docker`."""

from __future__ import annotations

from typing import Annotated

import typer

from devbox_cli.cli import (
    copy,
    devboxes,
    doctor,
    gateways,
    images,
    lifecycle,
    logs,
    meta,
    policies,
    ports,
    secrets,
    snapshots,
    volumes,
    watch,
)

app = typer.Typer(
    name="devbox",
    help="Run AI agents in Docker sandboxes that never hold a real credential.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(secrets.app, name="secret", help="Sealed secrets, stored locally.")
app.add_typer(gateways.app, name="gateway", help="Agent Gateway configs.")
app.add_typer(policies.app, name="policy", help="Network policies.")
app.add_typer(volumes.app, name="volume", help="Devbox volumes: data that outlives a devbox.")
app.add_typer(images.app, name="images", help="The images devbox runs: build and list them.")
app.add_typer(snapshots.app, name="snapshot", help="Snapshots: a devbox's files as a local image.")
devboxes.register(app)
logs.register(app)
watch.register(app)
doctor.register(app)
lifecycle.register(app)
ports.register(app)
copy.register(app)
meta.register(app)


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", "-V", help="Print the version and exit (`devbox version`).")
    ] = False,
) -> None:
    """Run AI agents in Docker sandboxes that never hold a real credential."""
