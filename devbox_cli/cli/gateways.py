"""`devbox gateway ...`: Agent Gateway configs (endpoint, intercepted hosts, auth, headers,
CA bundle)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from devbox_cli.cli import complete
from devbox_cli.cli.common import (
    ForceOpt,
    Output,
    OutputOpt,
    QuietOpt,
    WideOpt,
    applied_note,
    make_client,
    report_deleted,
)

if TYPE_CHECKING:
    from devbox_cli.services.gateways import Gateway

app = typer.Typer(no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="Gateway name.", autocompletion=complete.gateways)]
EndpointOpt = Annotated[
    str | None,
    typer.Option("--endpoint", metavar="URL", help="Upstream base URL, http(s), path allowed."),
]
AuthOpt = Annotated[
    str | None,
    typer.Option(
        "--auth",
        metavar="SPEC",
        help="bearer (default), basic, header:HEADER or query:PARAM.",
    ),
]
HeaderOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--header",
        metavar="NAME=VALUE",
        help="Custom header, NAME=VALUE or NAME=secret:SECRET; repeatable, at most 8.",
    ),
]
HostOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--host",
        metavar="HOST[:PORT]",
        help="Intercept HTTPS to HOST (port 443 unless given): any tool gets the credential. "
        "Repeatable.",
    ),
]
CaCertOpt = Annotated[
    Path | None,
    typer.Option(
        "--ca-cert", metavar="FILE", help="PEM bundle to trust for the endpoint and hosts."
    ),
]
DescriptionOpt = Annotated[str | None, typer.Option("--description", help="Free text.")]
PresetOpt = Annotated[
    str | None,
    typer.Option("--preset", metavar="NAME", help="anthropic or openai: endpoint and auth."),
]


@app.command("create")
def create(
    name: NameArg,
    endpoint: EndpointOpt = None,
    host: HostOpt = None,
    auth: AuthOpt = None,
    header: HeaderOpt = None,
    ca_cert: CaCertOpt = None,
    description: DescriptionOpt = None,
    preset: PresetOpt = None,
    output: OutputOpt = Output.text,
) -> None:
    """Create a gateway: where a credential goes and how it is sent.

    --auth bearer sends `Authorization: Bearer <secret>`; header:HEADER
    sends `HEADER: <secret>`; basic sends the secret (user:pass)
    base64-encoded; query:PARAM adds PARAM=<secret> to the query.

    --host makes it a host gateway: the devbox's proxy terminates HTTPS
    to that host with a certificate from the devbox's own CA and swaps
    the devbox's $PREFIX token for the credential wherever a client puts
    it (Bearer, Basic user or password, x-api-key, the auth's header).

        devbox gateway create anthropic --preset anthropic
        devbox gateway create internal --endpoint https://llm.corp/v1 \\
            --auth header:x-api-key --ca-cert corp-ca.pem
        devbox gateway create github --host github.com --auth basic
    """
    gateway = make_client().create_gateway(
        name,
        endpoint,
        hosts=host or (),
        auth=auth,
        headers=header or (),
        ca_cert=ca_cert,
        description=description,
        preset=preset,
    )
    _done(gateway, f"created gateway {name} → {_where(gateway)}", output)


@app.command("update")
def update(
    name: NameArg,
    endpoint: EndpointOpt = None,
    no_endpoint: Annotated[
        bool, typer.Option("--no-endpoint", help="Drop the endpoint: a host gateway only.")
    ] = False,
    host: Annotated[
        list[str] | None,
        typer.Option("--host", metavar="HOST[:PORT]", help="Replace the intercepted hosts."),
    ] = None,
    add_host: Annotated[
        list[str] | None,
        typer.Option("--add-host", metavar="HOST[:PORT]", help="Intercept one more host."),
    ] = None,
    remove_host: Annotated[
        list[str] | None,
        typer.Option("--remove-host", metavar="HOST[:PORT]", help="Stop intercepting a host."),
    ] = None,
    auth: AuthOpt = None,
    header: Annotated[
        list[str] | None,
        typer.Option(
            "--header",
            metavar="NAME=VALUE",
            help="Add or replace a header, NAME=VALUE or NAME=secret:SECRET.",
        ),
    ] = None,
    remove_header: Annotated[
        list[str] | None,
        typer.Option("--remove-header", metavar="NAME", help="Drop a custom header."),
    ] = None,
    clear_headers: Annotated[
        bool, typer.Option("--clear-headers", help="Drop every custom header first.")
    ] = False,
    ca_cert: CaCertOpt = None,
    no_ca_cert: Annotated[
        bool, typer.Option("--no-ca-cert", help="Trust only the system CAs again.")
    ] = False,
    description: DescriptionOpt = None,
    preset: PresetOpt = None,
    output: OutputOpt = Output.text,
) -> None:
    """Change a gateway. Unnamed settings stay as they are.

    Running devboxes that use it get the change live. A host added is
    intercepted by devboxes created from then on: a devbox's CA covers
    the hosts its gateways named when it was made.
    """
    from devbox_cli.errors import UsageError

    if no_ca_cert and ca_cert is not None:
        raise UsageError("--ca-cert and --no-ca-cert contradict each other")
    if no_endpoint and endpoint is not None:
        raise UsageError("--endpoint and --no-endpoint contradict each other")
    changes: dict[str, object] = {}
    if endpoint is not None or no_endpoint:
        changes["endpoint"] = endpoint
    if host is not None:
        changes["hosts"] = host
    if auth is not None:
        changes["auth"] = auth
    if clear_headers:
        changes["headers"] = ()
    if ca_cert is not None or no_ca_cert:
        changes["ca_cert"] = ca_cert
    if description is not None:
        changes["description"] = description
    gateway = make_client().update_gateway(
        name,
        set_headers=header or (),
        remove_headers=remove_header or (),
        add_hosts=add_host or (),
        remove_hosts=remove_host or (),
        preset=preset,
        **changes,  # type: ignore[arg-type]
    )
    _done(gateway, f"updated gateway {name}{applied_note(gateway.applied_to)}", output, True)


@app.command("list")
def list_(output: OutputOpt = Output.text, quiet: QuietOpt = False, wide: WideOpt = False) -> None:
    """List gateways."""
    from devbox_cli import render

    gateways = make_client().list_gateways()
    if output is Output.json:
        render.print_json([g.to_json() for g in gateways])
        return
    if quiet:
        render.print_names(g.name for g in gateways)
        return
    render.print_table(
        ["NAME", "ENDPOINT", "AUTH", "HEADERS", "CA", "DESCRIPTION"],
        [
            (
                g.name,
                _where(g),
                g.auth_spec(),
                ", ".join(h.name for h in g.headers),
                "yes" if g.ca_cert else "",
                g.description,
            )
            for g in gateways
        ],
        empty="no gateways yet: create one with `devbox gateway create NAME --preset anthropic`",
        wide=wide,
        drop=("DESCRIPTION", "CA", "HEADERS", "AUTH"),
    )


@app.command("show")
def show(name: NameArg, output: OutputOpt = Output.text) -> None:
    """Show one gateway."""
    gateway = make_client().get_gateway(name)
    if output is Output.json:
        from devbox_cli import render

        render.print_json(gateway.to_json())
    else:
        _show_text(gateway)


@app.command("delete")
def delete(
    name: NameArg,
    force: ForceOpt = False,
    output: OutputOpt = Output.text,
) -> None:
    """Delete a gateway. Refused while a devbox uses it, unless --force."""
    make_client().delete_gateway(name, force=force)
    report_deleted("gateway", name, output)


def _show_text(gateway: Gateway) -> None:
    from devbox_cli import render
    from devbox_cli.services.gateway_rules import ca_summary

    headers = [
        f"{h.name}: <secret {h.secret}>" if h.secret else f"{h.name}: {h.value}"
        for h in gateway.headers
    ]
    ca = ""
    if gateway.ca_cert:
        summary = ca_summary(gateway.ca_cert)
        ca = f"{summary['certificates']} certificate(s), sha256 " + ", ".join(summary["sha256"])
    render.print_fields(
        [
            ("name", gateway.name),
            ("endpoint", gateway.endpoint or "(none: a host gateway)"),
            ("hosts", "\n".join(gateway.hosts)),
            ("auth", gateway.auth_spec()),
            ("headers", "\n".join(headers)),
            ("ca cert", ca),
            ("description", gateway.description),
            ("created", gateway.created_at),
            ("updated", gateway.updated_at),
        ]
    )


def _where(gateway: Gateway) -> str:
    """Where its credential goes, in one cell: the endpoint and the intercepted hosts."""
    return ", ".join(filter(None, [gateway.endpoint, *gateway.hosts]))


def _done(gateway: Gateway, message: str, output: Output, updated: bool = False) -> None:
    from devbox_cli import render

    if output is Output.json:
        extra = {"applied_to": list(gateway.applied_to)} if updated else {}
        render.print_json({**gateway.to_json(), **extra})
    else:
        render.print_success(message)
