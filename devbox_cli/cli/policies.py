"""`devbox policy ...`: network policies, the hostname rules a devbox's proxy enforces on every
request that is not a gateway route."""

from __future__ import annotations

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
    from devbox_cli.services.policies import NetworkPolicy

app = typer.Typer(no_args_is_help=True)

NameArg = Annotated[
    str, typer.Argument(help="Policy name, e.g. anthropic-only.", autocompletion=complete.policies)
]
HostsHelp = "HOST: a name or IP, or *.example.com (subdomains at any depth), optional :PORT."


def _list_opt(flag: str, metavar: str, help_: str):  # type: ignore[no-untyped-def]
    return Annotated[list[str] | None, typer.Option(flag, metavar=metavar, help=help_)]


AllowOpt = _list_opt("--allow", "HOST", f"Allow HOST (repeatable). {HostsHelp}")
DenyOpt = _list_opt("--deny", "HOST", "Deny HOST (repeatable); a deny wins over every allow.")
CidrOpt = _list_opt(
    "--allow-cidr",
    "CIDR",
    "Allow IP literals in CIDR, and these addresses for names an --allow admits "
    "(repeatable), private ranges included; it admits no name by itself.",
)
AddAllowOpt = _list_opt("--add-allow", "HOST", "Add an allow rule (repeatable).")
RemoveAllowOpt = _list_opt("--remove-allow", "HOST", "Remove an allow rule (repeatable).")
AddDenyOpt = _list_opt("--add-deny", "HOST", "Add a deny rule (repeatable).")
RemoveDenyOpt = _list_opt("--remove-deny", "HOST", "Remove a deny rule (repeatable).")
AddCidrOpt = _list_opt("--add-allow-cidr", "CIDR", "Add an allowed CIDR (repeatable).")
RemoveCidrOpt = _list_opt("--remove-allow-cidr", "CIDR", "Remove an allowed CIDR (repeatable).")
DescriptionOpt = Annotated[str | None, typer.Option("--description", help="A note for humans.")]


@app.command("create")
def create(
    name: NameArg,
    allow: AllowOpt = None,
    deny: DenyOpt = None,
    allow_cidr: CidrOpt = None,
    allow_all: Annotated[
        bool, typer.Option("--allow-all", help="Allow every public destination (denies apply).")
    ] = False,
    description: DescriptionOpt = None,
    output: OutputOpt = Output.text,
) -> None:
    """Create a network policy.

    Without --allow, --allow-cidr or --allow-all it denies every
    destination except the devbox's gateway routes.

        devbox policy create anthropic-only --allow '*.anthropic.com' --allow anthropic.com
    """
    from devbox_cli import render

    policy = make_client().create_policy(
        name,
        allow=allow or (),
        deny=deny or (),
        allow_cidr=allow_cidr or (),
        allow_all=allow_all,
        description=description,
    )
    if output is Output.json:
        render.print_json(policy.to_json())
        return
    render.print_success(f"created policy {name}")
    if policy.denies_everything:
        render.print_warning(f"policy {name} denies every destination except gateway routes")


@app.command("update")
def update(
    name: NameArg,
    allow: AllowOpt = None,
    deny: DenyOpt = None,
    allow_cidr: CidrOpt = None,
    add_allow: AddAllowOpt = None,
    remove_allow: RemoveAllowOpt = None,
    add_deny: AddDenyOpt = None,
    remove_deny: RemoveDenyOpt = None,
    add_allow_cidr: AddCidrOpt = None,
    remove_allow_cidr: RemoveCidrOpt = None,
    allow_all: Annotated[
        bool | None,
        typer.Option("--allow-all/--no-allow-all", help="Allow every public destination, or not."),
    ] = None,
    description: Annotated[
        str | None, typer.Option("--description", help="A note for humans ('' clears it).")
    ] = None,
    output: OutputOpt = Output.text,
) -> None:
    """Change a policy; running devboxes that use it take the change live.

    --allow, --deny and --allow-cidr replace that list when given;
    --add-* and --remove-* edit it. Other settings are kept.

        devbox policy update anthropic-only --add-allow pypi.org --add-allow '*.pythonhosted.org'
    """
    from devbox_cli import render
    from devbox_cli.errors import UsageError

    lists = (allow, deny, allow_cidr, add_allow, remove_allow, add_deny, remove_deny)
    if all(v is None for v in (*lists, add_allow_cidr, remove_allow_cidr, allow_all, description)):
        raise UsageError(
            "nothing to update",
            f"e.g. `devbox policy update {name} --add-allow HOST` (see --help)",
        )
    policy = make_client().update_policy(
        name,
        allow=allow,
        deny=deny,
        allow_cidr=allow_cidr,
        allow_all=allow_all,
        description=description,
        add_allow=add_allow or (),
        remove_allow=remove_allow or (),
        add_deny=add_deny or (),
        remove_deny=remove_deny or (),
        add_allow_cidr=add_allow_cidr or (),
        remove_allow_cidr=remove_allow_cidr or (),
    )
    if output is Output.json:
        render.print_json({**policy.to_json(), "applied_to": list(policy.applied_to)})
        return
    render.print_success(f"updated policy {name}{applied_note(policy.applied_to)}")
    if policy.denies_everything:
        render.print_warning(f"policy {name} denies every destination except gateway routes")


@app.command("list")
def list_(output: OutputOpt = Output.text, quiet: QuietOpt = False, wide: WideOpt = False) -> None:
    """List network policies."""
    from devbox_cli import render

    policies = make_client().list_policies()
    if output is Output.json:
        render.print_json([p.to_json() for p in policies])
        return
    if quiet:
        render.print_names(p.name for p in policies)
        return
    render.print_table(
        ["NAME", "ALLOW", "DENY", "ALLOW-CIDR", "ALLOW-ALL", "DESCRIPTION"],
        [
            (
                p.name,
                ", ".join(p.allow) or "-",
                ", ".join(p.deny) or "-",
                ", ".join(p.allow_cidr) or "-",
                "yes" if p.allow_all else "no",
                p.description or "",
            )
            for p in policies
        ],
        empty="no policies yet: create one with `devbox policy create NAME --allow HOST`",
        wide=wide,
        drop=("DESCRIPTION", "ALLOW-ALL", "ALLOW-CIDR", "DENY"),
    )


@app.command("show")
def show(name: NameArg, output: OutputOpt = Output.text) -> None:
    """Show a policy's rules."""
    from devbox_cli import render

    policy = make_client().get_policy(name)
    if output is Output.json:
        render.print_json(policy.to_json())
        return
    render.print_fields(_fields(policy))


@app.command("delete")
def delete(
    name: NameArg,
    force: ForceOpt = False,
    output: OutputOpt = Output.text,
) -> None:
    """Delete a policy. Refused while a devbox uses it, unless --force."""
    make_client().delete_policy(name, force=force)
    report_deleted("policy", name, output)


@app.command("check")
def check(
    name: NameArg,
    url: Annotated[str, typer.Argument(help="A URL, or HOST[:PORT] (port 443 by default).")],
    output: OutputOpt = Output.text,
) -> None:
    """Dry run: would a devbox under this policy reach URL?

    Decides on the host name and, when the name is admitted and resolves
    here, on every address it resolves to (a name no rule admits is not
    looked up, as the proxy never looks it up); the rule behind the
    decision is printed.
    Exits 0 whether the destination is allowed or denied; -o json
    gives "allowed" (true/false), "reason" and "rule".

        devbox policy check anthropic-only https://evil.example.com
    """
    from devbox_cli import render

    result = make_client().check_policy(name, url)
    if output is Output.json:
        render.print_json({"policy": name, **result.to_json()})
        return
    render.print_fields(
        [
            ("decision", "allowed" if result.allowed else "denied"),
            ("rule", result.rule),
            ("reason", result.reason),
            ("host", result.host),
            ("port", result.port),
            (
                "addresses",
                ", ".join(result.addresses)
                if result.resolved
                else ("(not looked up)" if not result.allowed else "(does not resolve here)"),
            ),
        ]
    )


def _fields(policy: NetworkPolicy) -> list[tuple[str, object]]:
    return [
        ("name", policy.name),
        ("description", policy.description or ""),
        ("allow", "\n".join(policy.allow) or "-"),
        ("deny", "\n".join(policy.deny) or "-"),
        ("allow-cidr", "\n".join(policy.allow_cidr) or "-"),
        ("allow-all", "yes" if policy.allow_all else "no"),
        ("created", policy.created_at),
        ("updated", policy.updated_at),
    ]
