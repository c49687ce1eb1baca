"""`devbox port-forward NAME [LOCAL:]REMOTE`: parse, call Client.port_forward, report."""

from __future__ import annotations

from typing import Annotated

import typer

from devbox_cli.cli import complete
from devbox_cli.cli.common import Output, OutputOpt, make_client


def register(app: typer.Typer) -> None:
    app.command("port-forward")(port_forward)


def port_forward(
    name: Annotated[
        str,
        typer.Argument(help="Devbox name.", show_default=False, autocompletion=complete.devboxes),
    ],
    ports: Annotated[
        str,
        typer.Argument(
            metavar="[LOCAL:]REMOTE",
            help="REMOTE: the port in the devbox. LOCAL: the port on 127.0.0.1 (default: "
            "the same; empty or 0: a free one, printed).",
            show_default=False,
        ),
    ],
    output: OutputOpt = Output.text,
) -> None:
    """Forward a port on 127.0.0.1 to a port inside a devbox, until Ctrl-C.

    Each connection is relayed by the devbox's proxy, so the devbox gets
    no new route and its image needs nothing. With -o json one line with
    the local address is printed once it listens.

        devbox port-forward agent 8080         # 127.0.0.1:8080 -> port 8080
        devbox port-forward agent 9000:80      # 127.0.0.1:9000 -> port 80
        devbox port-forward agent :80 -o json  # a free port, printed
    """
    import contextlib
    import signal
    import sys

    from devbox_cli import render
    from devbox_cli.services.ports import parse_port_spec

    local, remote = parse_port_spec(ports)
    client = make_client()
    # A `kill` stops it as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    with (
        client.port_forward(name, remote, local, report=render.print_warning) as forward,
        contextlib.suppress(KeyboardInterrupt),  # Ctrl-C is how it is meant to end
    ):
        if output is Output.json:
            render.print_json_line(forward.to_json())
        else:
            host, port = forward.address
            sys.stdout.write(
                f"forwarding {host}:{port} to port {remote} in devbox {name}; Ctrl-C stops\n"
            )
            sys.stdout.flush()
        forward.wait()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
