"""`devbox doctor`: what devbox relies on, checked (services/doctor.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from devbox_cli.cli.common import Output, OutputOpt, make_client

if TYPE_CHECKING:
    from devbox_cli.services.doctor import DoctorReport


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)


def doctor(
    probe: Annotated[
        bool,
        typer.Option("--probe/--no-probe", help="Run the isolation probe (a throwaway devbox)."),
    ] = True,
    output: OutputOpt = Output.text,
) -> None:
    """Check the engine, the images, the egress network, every devbox's
    proxy, and isolation: a throwaway devbox (always removed) must fail to
    reach the engine's host, outside DNS and the internet around its proxy.

    Each check passes or fails with the fix. Exit status 0 when nothing
    failed, 1 when a check failed (the report says which and how to fix it).
    """
    from devbox_cli import render

    client = make_client()
    with render.progress("checking") as update:
        report = client.run_doctor(isolation=probe, progress=update)
    if output is Output.json:
        render.print_json(report.to_json())
    else:
        _report(report)
    if not report.ok:
        raise typer.Exit(1)


def _report(report: DoctorReport) -> None:
    from devbox_cli import render

    rows: list[tuple[str, str, str]] = []
    for check in report.checks:
        rows.append((check.status.upper(), check.name, check.detail))
        if check.fix and check.status == "fail":
            rows.append(("", "", f"fix: {check.fix}"))
    render.print_table(["RESULT", "CHECK", "DETAIL"], rows)
    failed = sum(c.status == "fail" for c in report.checks)
    if failed:
        render.print_warning(f"{failed} of {len(report.checks)} checks failed")
    else:
        render.print_success(f"no check failed ({len(report.checks)} run)")
