"""`devbox create`: first a plan, validated whole before anything is made (names, images,
gateways, secrets, policy, limits, the box's environment, and the interception CA when a
bound gateway intercepts hosts); then the Docker objects, made under a rollback that
removes them again if any step fails.

The box container is created on a worker thread (and made to trust the CA there) while the
proxy starts and takes its config: the box has no egress until then, and the two are
independent until the end.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from devbox_cli.engine import images
from devbox_cli.engine.box_user import prepare
from devbox_cli.engine.limits import BoxLimits, box_host_config, fit_to_engine, limits_of
from devbox_cli.engine.topology import (
    DEFAULT_EGRESS,
    Rollback,
    check_free,
    create_box,
    create_box_network,
    create_proxy,
    egress_network,
    fresh_name,
    make_default_egress,
)
from devbox_cli.engine.trust import install_ca
from devbox_cli.engine.views import (
    Binding,
    Devbox,
    ProxyView,
    expiry_text,
    iso_time,
    state_of,
)
from devbox_cli.engine.workspace import EMPTY, Mount, VolumeMount, Workspace, host_mounts, mounts_of
from devbox_cli.errors import DevboxRuntimeError, ImageMissingError
from devbox_cli.names import check_devbox_name
from devbox_cli.services.authority import DevboxCA, new_ca
from devbox_cli.services.box_env import box_environment
from devbox_cli.services.proxy_push import push_config
from devbox_cli.services.workspace import make_volumes, plan_workspace

if TYPE_CHECKING:
    from devbox_cli.engine.docker_backend import DockerBackend
    from devbox_cli.home import PushLedger
    from devbox_cli.services.proxy_config import ProxyConfigs
    from proxy.config import ProxyConfig

Progress = Callable[[str], None]


@dataclass(frozen=True)
class CreatePlan:
    """Everything `devbox create` will make, checked before anything is."""

    name: str
    store: str  # Store.identity() of the store making it
    image: str
    proxy_image: str
    bindings: tuple[Binding, ...]
    policy: str | None
    environment: dict[str, str] = field(repr=False)  # the box's: gateway tokens included
    config: ProxyConfig = field(repr=False)  # the proxy's: holds the credentials
    limits: BoxLimits
    host_config: dict[str, Any]
    egress: str
    workspace: Workspace = EMPTY  # mounts and volumes (services/workspace.py)
    labels: dict[str, str] = field(default_factory=dict)  # more of the box's (devbox.expires)
    ca: DevboxCA | None = field(default=None, repr=False)  # its key is hazmat


def plan_create(
    docker: DockerBackend,
    configs: ProxyConfigs,
    *,
    name: str | None,
    image: str | None,
    bindings: tuple[Binding, ...],
    policy: str | None,
    env: Mapping[str, str],
    limits: BoxLimits,
    say: Progress,
    mounts: tuple[Mount, ...] = (),
    volumes: tuple[VolumeMount, ...] = (),
    labels: Mapping[str, str] | None = None,
) -> CreatePlan:
    """Check everything against the store and the engine; raise before anything is made."""
    box_environment(name or "", bindings, dict(env))  # a clash fails before Docker is asked
    image = image or images.box_image()
    proxy_image = images.proxy_image()

    say("checking gateways, secrets and policy")
    tokens = {b.prefix: "gwt_" + secrets.token_urlsafe(32) for b in bindings}
    name = check_devbox_name(name) if name else fresh_name(docker)
    intercepted = configs.intercepted_names(bindings)  # unknown gateways raise here
    with ThreadPoolExecutor(max_workers=1) as pool:
        # A CA is mostly cryptography's import (0.05-0.3 s): made while the engine is asked.
        making = pool.submit(new_ca, name, intercepted) if intercepted else None
        say("checking Docker")
        check_free(docker, name)
        for ref, what in ((image, "image"), (proxy_image, "proxy image")):
            if docker.image(ref) is None:
                raise ImageMissingError(
                    f"no {what} {ref} in the local Docker engine",
                    "build the devbox images with `devbox images build`, or pass an existing "
                    "--image",
                    ref=ref,
                )
        egress = egress_network(docker)
        workspace = plan_workspace(docker, configs.store.identity(), image, mounts, volumes)
        host_config = box_host_config(fit_to_engine(limits, docker.info()))
        if workspace:
            host_config["mounts"] = host_mounts(workspace)
        ca = making.result() if making is not None else None
    config = configs.build(name, bindings, tokens, policy, ca=ca)  # unknown names raise here
    return CreatePlan(
        name=name,
        store=configs.store.identity(),
        image=image,
        proxy_image=proxy_image,
        bindings=bindings,
        policy=policy,
        environment=box_environment(name, bindings, dict(env), tokens, ca_bundle=ca is not None),
        config=config,
        limits=limits,
        host_config=host_config,
        egress=egress,
        workspace=workspace,
        labels=dict(labels or {}),
        ca=ca,
    )


def carry_out(
    docker: DockerBackend, plan: CreatePlan, say: Progress, ledger: PushLedger | None = None
) -> Devbox:
    """Make the devbox of `plan` and return once it can run commands (proxy configured, box
    up; the push noted in `ledger`). On any failure whatever was made is removed again."""
    # Leaving the block the pool is shut down first (it waits for the box's creation), then
    # the rollback removes, on failure, everything made, the box included.
    with Rollback(docker) as made, ThreadPoolExecutor(max_workers=1) as pool:
        say("creating the network")
        if plan.egress == DEFAULT_EGRESS and docker.network(plan.egress) is None:
            make_default_egress(docker)
        net = made.network(create_box_network(docker, plan.name, plan.store))
        workspace = make_volumes(docker, made, plan.workspace, plan.store)
        box = pool.submit(_make_box, made, plan, net, workspace)
        say("starting the proxy")
        proxy_id = made.container(
            create_proxy(docker, plan.name, plan.store, plan.proxy_image, net, plan.egress)
        )
        docker.connect(proxy_id, plan.egress)
        docker.start(proxy_id)
        say("configuring the proxy")
        push_config(docker, plan.name, proxy_id, plan.config, ledger=ledger)
        box_id = box.result()
        say("waiting for the devbox")
        info = docker.container(box_id)
        if state_of(info) != "running":
            raise DevboxRuntimeError(
                f"the devbox container exited right away ({state_of(info)})",
                "the image needs a `sleep` binary; check `docker logs` of the container",
            )
    return Devbox(
        name=plan.name,
        id=box_id[:12],
        status="running",
        image=plan.image,
        policy=plan.policy,
        gateways=plan.bindings,
        proxy=ProxyView(proxy_id[:12], "running", "ok", configured=True),
        created_at=iso_time(info.get("Created") if info else None),
        egress_network=plan.egress,
        limits=limits_of(info.get("HostConfig") or {}),
        mounts=mounts_of(info or {}),
        expires_at=expiry_text(plan.labels),
    )


def _make_box(made: Rollback, plan: CreatePlan, network: str, workspace: Workspace) -> str:
    """The box (on a worker thread), trusting the devbox's CA when it has one."""
    box_id = create_box(
        made,
        name=plan.name,
        store=plan.store,
        image=plan.image,
        network=network,
        environment=plan.environment,
        host=plan.host_config,
        bindings=plan.bindings,
        policy=plan.policy,
        user=workspace.owner.user if workspace.owner else None,
        prepare=(lambda d, box_id: prepare(d, box_id, workspace)) if workspace else None,
        labels=plan.labels,
    )
    if plan.ca is not None:
        from devbox_cli.engine.docker_backend import DockerBackend

        install_ca(DockerBackend(), box_id, plan.ca.authority.cert)
    return box_id
