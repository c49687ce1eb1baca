"""`devbox stop`, `devbox start` and `devbox gc`: devboxes that live for days.

Each parses, calls one Client method and renders. stop and start act on several devboxes
at once; when some fail, the others' results are still shown (and in -o json), then one
error names the ones to retry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from devbox_cli.cli import complete
from devbox_cli.cli.common import Output, OutputOpt, make_client

if TYPE_CHECKING:
    from devbox_cli.engine.views import LifecycleResult

NamesArg = Annotated[
    list[str],
    typer.Argument(help="Devbox names.", show_default=False, autocompletion=complete.devboxes),
]


def register(app: typer.Typer) -> None:
    app.command("stop")(stop)
    app.command("start")(start)
    app.command("gc")(gc)


def stop(names: NamesArg, output: OutputOpt = Output.text) -> None:
    """Stop devboxes: box and proxy. Files stay; running processes end.

    A stopped devbox keeps its filesystem (not /tmp, a tmpfs) and its
    gateway tokens, and stays stopped across a Docker restart. `devbox
    start NAME` brings it back.
    """
    from devbox_cli.services.lifecycle import raise_for_failures

    results = make_client().stop_devboxes(names, check=False)
    _report(results, output, done="stopped", same="was already stopped")
    raise_for_failures(results, "stop")


def start(names: NamesArg, output: OutputOpt = Output.text) -> None:
    """Start stopped devboxes, their proxies configured from the store as it is now.

    A secret, gateway or policy updated while a devbox was stopped takes
    effect. The box's files are as it left them.
    """
    from devbox_cli.services.lifecycle import raise_for_failures

    results = make_client().start_devboxes(names, check=False)
    _report(results, output, done="started", same="was running; its proxy config was pushed again")
    raise_for_failures(results, "start")


def gc(
    stopped_for: Annotated[
        str | None,
        typer.Option(
            "--stopped-for",
            metavar="DURATION",
            help="Also delete devboxes stopped at least this long, e.g. 3d.",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only say which devboxes would be deleted.")
    ] = False,
    output: OutputOpt = Output.text,
) -> None:
    """Delete this store's expired devboxes (`create --ttl`), and with
    --stopped-for the long stopped ones.

    Meant for cron or a systemd timer (README: Lifetimes). Other stores'
    devboxes are never touched.
    """
    from devbox_cli import render

    due = make_client().gc(stopped_for=stopped_for, dry_run=dry_run)
    if output is Output.json:
        render.print_json([d.to_json() for d in due])
        return
    for d in due:
        why = (
            f"expired at {d.expires_at}"
            if d.reason == "expired"
            else f"stopped since {d.stopped_at}"
        )
        if dry_run:
            render.print_success(f"would delete devbox {d.name} ({why})")
        elif d.deleted:
            render.print_success(f"deleted devbox {d.name} ({why})")
        else:
            render.print_warning(f"devbox {d.name} ({why}) was already gone")
    if not due:
        render.print_success("no devbox is due: nothing to delete")


def _report(results: list[LifecycleResult], output: Output, *, done: str, same: str) -> None:
    from devbox_cli import render

    if output is Output.json:
        render.print_json([r.to_json() for r in results])
        return
    for r in results:
        if r.ok:
            render.print_success(
                f"{done} devbox {r.name}" if r.changed else f"devbox {r.name} {same}"
            )
