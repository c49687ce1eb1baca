"""The top-level devbox commands: create, exec, shell, list, show, logs, repair, delete.

Each parses, calls one DevboxesAPI method and renders. `devbox exec` itself never gets here:
devbox_cli/__main__.py sends it to the fast path (engine/fastexec.py); the command below
exists so that `devbox --help` lists it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from devbox_cli.cli import complete
from devbox_cli.cli.common import Output, OutputOpt, QuietOpt, WideOpt, make_client
from devbox_cli.errors import ImageMissingError

if TYPE_CHECKING:
    from devbox_cli.engine.views import Devbox

NameArg = Annotated[
    str, typer.Argument(help="Devbox name.", show_default=False, autocompletion=complete.devboxes)
]
PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def register(app: typer.Typer) -> None:
    app.command("create")(create)
    app.command(
        "exec",
        cls=complete.exec_command_class(),
        context_settings=PASSTHROUGH,
        add_help_option=False,
    )(exec_)
    app.command("shell")(shell)
    app.command("list")(list_)
    app.command("show")(show)
    app.command("repair")(repair)
    app.command("delete")(delete)


def create(
    name: Annotated[
        str | None, typer.Argument(help="Devbox name (generated when omitted).", show_default=False)
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(help="Image of the devbox (default: $DEVBOX_IMAGE or devbox/default)."),
    ] = None,
    gateway: Annotated[
        list[str] | None,
        typer.Option(
            "--gateway",
            "-g",
            metavar="PREFIX=GATEWAY:SECRET",
            help="Bind a gateway: the devbox gets $PREFIX (a token) and $PREFIX_URL. Repeatable.",
        ),
    ] = None,
    network_policy: Annotated[
        str | None,
        typer.Option(
            "--network-policy",
            "-p",
            help="Network policy for egress.",
            autocompletion=complete.policies,
        ),
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", "-e", metavar="K=V", help="Environment variable. Repeatable."),
    ] = None,
    cpus: Annotated[
        str | None,
        typer.Option(help="CPUs, e.g. 1.5, or unlimited [default: $DEVBOX_CPUS, else 2]."),
    ] = None,
    memory: Annotated[
        str | None,
        typer.Option(
            help="Memory (no swap), e.g. 8g, or unlimited [default: $DEVBOX_MEMORY, else 4g]."
        ),
    ] = None,
    pids_limit: Annotated[
        str | None,
        typer.Option(
            help="Processes and threads, or unlimited [default: $DEVBOX_PIDS_LIMIT, else 4096]."
        ),
    ] = None,
    tmp_size: Annotated[
        str | None,
        typer.Option(help="Size of the tmpfs at /tmp [default: $DEVBOX_TMP_SIZE, else 2g]."),
    ] = None,
    disk: Annotated[
        str | None,
        typer.Option(
            help="Cap the box's writable layer, where the engine's storage driver can "
            "[default: $DEVBOX_DISK, else not capped]."
        ),
    ] = None,
    runtime: Annotated[
        str | None,
        typer.Option(
            help="Docker runtime, e.g. runsc or crun, as `docker info` lists them "
            "[default: $DEVBOX_RUNTIME, else the engine's]."
        ),
    ] = None,
    mount: Annotated[
        list[str] | None,
        typer.Option(
            "--mount",
            "-m",
            metavar="SRC[:DST][:ro]",
            help="Bind-mount a host directory (DST default /workspace). Repeatable.",
        ),
    ] = None,
    volume: Annotated[
        list[str] | None,
        typer.Option(
            "--volume",
            "-v",
            metavar="NAME[:DST][:ro]",
            help="Mount a devbox volume, made on first use; it outlives the devbox. Repeatable.",
        ),
    ] = None,
    ttl: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="Lifetime, e.g. 90m, 8h or 3d: then `devbox gc` deletes it.",
            show_default=False,
        ),
    ] = None,
    from_snapshot: Annotated[
        str | None,
        typer.Option(
            "--from-snapshot",
            metavar="SNAPSHOT",
            help="Start from a snapshot's files (`devbox snapshot list`) instead of --image.",
            show_default=False,
            autocompletion=complete.snapshots,
        ),
    ] = None,
    output: OutputOpt = Output.text,
    quiet: QuietOpt = False,
) -> None:
    """Create a devbox and wait until it can run commands.

    The devbox reaches nothing but its own proxy: gateway routes
    ($PREFIX_URL) and, under the network policy, HTTP(S) through
    $HTTPS_PROXY. Real secrets stay in the proxy.

        devbox create agent --gateway ANTHROPIC_API_KEY=anthropic-gateway:ANTHROPIC \\
            --network-policy anthropic-only --mount ./project

    With --mount the box's user takes your uid:gid, so what the agent
    writes there is yours (README: Workspace).
    """
    from devbox_cli import render
    from devbox_cli.services.box_env import parse_env_spec, parse_gateway_specs

    bindings = parse_gateway_specs(gateway or [])
    env_vars = dict(parse_env_spec(e) for e in env or [])
    client = make_client()
    options = dict(
        name=name,
        image=image,
        gateways=bindings,
        policy=network_policy,
        env=env_vars,
        cpus=cpus,
        memory=memory,
        pids_limit=pids_limit,
        tmp_size=tmp_size,
        disk=disk,
        runtime=runtime,
        mounts=mount or [],
        volumes=volume or [],
        ttl=ttl,
        from_snapshot=from_snapshot,
    )
    for _attempt in range(3):  # the proxy image, then the default one, may be missing
        try:
            box = _create(client, options)
            break
        except ImageMissingError as missing:
            role = client.images.builds(missing.ref)
            if role is None:
                raise
            with render.steps("images") as (step, detail):
                step(f"no image {missing.ref} yet: building it, as `devbox images build` does")
                client.images.build(roles=(role,), step=step, detail=detail)
    if output is Output.json:
        render.print_json(box.to_json())
        return
    if quiet:
        print(box.name)
        return
    _fields(box)
    render.print_success(f"devbox {box.name} is ready: devbox exec {box.name} -- CMD")


def _create(client, options: dict[str, Any]) -> Devbox:  # type: ignore[no-untyped-def]
    from devbox_cli import render

    with render.progress("creating devbox") as update:
        return client.create_devbox(**options, progress=update)


def exec_(ctx: typer.Context) -> None:
    """Run a command in a devbox: devbox exec NAME [-e K=V] [-w DIR] [-u USER] [-i] [-t] -- CMD.

    stdout and stderr are streamed apart; the command's exit status
    becomes devbox's. See `devbox exec --help`.
    """
    from devbox_cli.cli.watch import heal_before_exec
    from devbox_cli.engine import fastexec

    raise typer.Exit(fastexec.main(list(ctx.args), heal=heal_before_exec))


def shell(name: NameArg) -> None:
    """Open an interactive bash shell in a devbox."""
    from devbox_cli.cli.watch import heal_before_exec
    from devbox_cli.engine import fastexec

    flags = ["-i", "-t"] if sys.stdin.isatty() else ["-i"]
    raise typer.Exit(fastexec.main([*flags, name, "--", "bash", "-l"], heal=heal_before_exec))


def list_(output: OutputOpt = Output.text, quiet: QuietOpt = False, wide: WideOpt = False) -> None:
    """List devboxes, read from Docker: status of the box and its proxy.

    PROXY is `configured` when the proxy took its config since it last
    started, `unconfigured` when it started again since (it refuses all
    traffic until the next devbox command or `devbox watch` heals it),
    `unknown` when no push was recorded in this DEVBOX_HOME, else its state.
    """
    from devbox_cli import render

    boxes = make_client().list_devboxes()
    if output is Output.json:
        render.print_json([b.to_json() for b in boxes])
        return
    if quiet:
        render.print_names(b.name for b in boxes)
        return
    render.print_table(
        ["NAME", "STATUS", "PROXY", "POLICY", "GATEWAYS", "IMAGE", "CREATED", "EXPIRES"],
        [
            (
                b.name,
                _since(b.status, b.stopped_at, short=True),
                _proxy_state(b),
                b.policy or "-",
                ",".join(g.prefix for g in b.gateways) or "-",
                b.image,
                b.created_at,
                _relative(b.expires_at) if b.expires_at else "-",
            )
            for b in boxes
        ],
        empty="no devboxes: create one with `devbox create NAME`",
        wide=wide,
        drop=("IMAGE", "CREATED", "EXPIRES", "GATEWAYS", "POLICY"),
    )


def _proxy_state(box: Devbox) -> str:
    """The PROXY column: whether a running proxy holds its config, as far as the push
    ledger knows (list runs no check in the proxy; `devbox show` does)."""
    if box.proxy.status != "running":
        return box.proxy.status
    return {True: "configured", False: "unconfigured"}.get(box.proxy.configured, "unknown")


def show(name: NameArg, output: OutputOpt = Output.text) -> None:
    """Show a devbox: both containers, its gateways with their URLs, its policy."""
    from devbox_cli import render

    box = make_client().get_devbox(name)
    if output is Output.json:
        render.print_json(box.to_json())
        return
    _fields(box)
    if box.status == "stopped":
        render.print_warning(f"devbox {name} is stopped: start it with `devbox start {name}`")
    elif box.status != "running" or box.proxy.health != "ok":
        render.print_warning(
            f"devbox {name} is not fully up (box {box.status}, proxy {box.proxy.status}"
            f"{', ' + box.proxy.health if box.proxy.health else ''}); while its proxy is "
            f"unconfigured it has no egress. Fix it with `devbox repair {name}`"
        )


def repair(name: NameArg, output: OutputOpt = Output.text) -> None:
    """Start a devbox's stopped containers and push its proxy config again.

    Needed after its proxy container restarted (crash, reboot, `docker
    restart`): a restarted proxy holds no config and refuses all traffic.
    Also picks up changed secrets and gateways.
    """
    from devbox_cli import render

    box = make_client().repair_devbox(name)
    if output is Output.json:
        render.print_json(box.to_json())
        return
    render.print_success(f"devbox {name} repaired: proxy {box.proxy.health}")


def delete(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Devbox names.", show_default=False, autocompletion=complete.devboxes),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Delete every devbox.")] = False,
    output: OutputOpt = Output.text,
) -> None:
    """Delete devboxes: their containers and network. Missing ones are reported, not errors."""
    from devbox_cli import render
    from devbox_cli.errors import UsageError

    if not names and not all_:
        raise UsageError("name the devboxes to delete, or pass --all")
    results = make_client().delete_devboxes(names or [], all=all_)
    if output is Output.json:
        render.print_json([r.to_json() for r in results])
        return
    for r in results:
        if r.removed:
            render.print_success(f"deleted devbox {r.name}")
        else:
            render.print_warning(f"no devbox {r.name}: nothing to delete")
    if not results:
        render.print_success("no devboxes to delete")


def _fields(box: Devbox) -> None:
    from devbox_cli import render

    fields = [
        ("name", box.name),
        ("id", box.id),
        ("status", _since(box.status, box.stopped_at)),
        ("image", box.image),
        ("policy", box.policy or "none (every public destination)"),
        (
            "proxy",
            " ".join(
                filter(None, [box.proxy.status, box.proxy.health and f"({box.proxy.health})"])
            ),
        ),
        ("egress network", box.egress_network),
        ("created", box.created_at),
        ("expires", _when(box.expires_at) if box.expires_at else "never"),
    ]
    if box.limits:
        fields += [("limits", box.limits.describe()), ("hardening", box.limits.hardening())]
    for g in box.gateways:
        fields.append((f"${g.prefix}_URL", f"{g.url}  ({g.gateway} with secret {g.secret})"))
    fields += [(m.kind, m.describe()) for m in box.mounts]
    if box.ca:
        fields.append(("intercepts", f"{', '.join(box.ca.hosts)}  (CA sha256 {box.ca.sha256})"))
    render.print_fields(fields)


def _relative(at: str) -> str:
    """`in 5h`, `3h ago`."""
    from datetime import UTC, datetime

    from devbox_cli.engine.views import parse_utc
    from devbox_cli.services.durations import relative

    when = parse_utc(at)
    return relative(when, datetime.now(UTC)) if when else at


def _when(at: str) -> str:
    """`2025-01-31T18:00:00Z (in 5h)`."""
    return f"{at} ({_relative(at)})"


def _since(status: str, stopped_at: str | None, *, short: bool = False) -> str:
    """`stopped since 2025-01-31T18:00:00Z (3h ago)`; in a table `stopped 3h ago`."""
    if not stopped_at:
        return status
    return f"{status} {_relative(stopped_at)}" if short else f"{status} since {_when(stopped_at)}"
