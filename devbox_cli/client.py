"""The Python API: every operation the CLI offers, on one Client.

    from devbox_cli import Client
    client = Client()                      # DEVBOX_HOME or the platform data dir
    client.create_secret("ANTHROPIC", value)
    client.create_gateway("anthropic", preset="anthropic")
    box = client.create_devbox("agent", gateways={"ANTHROPIC_API_KEY": ("anthropic", "ANTHROPIC")})
    result = client.exec(box.name, ["echo", "hi"])

Client composes, as docker-py's DockerClient composes its collections: the store, the Docker
engine (opened on first use), and one service per resource, each given what it needs.
`client.secrets.create(...)` and `client.create_secret(...)` are the same method: the
table at the bottom names, for each operation, the one place it is defined.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from devbox_cli.services.copy import CopyService
from devbox_cli.services.devboxes import DevboxService
from devbox_cli.services.doctor import Doctor
from devbox_cli.services.gateways import GatewayService
from devbox_cli.services.healing import Healer
from devbox_cli.services.image_build import ImageBuilder
from devbox_cli.services.lifecycle import LifecycleService
from devbox_cli.services.policies import PolicyService
from devbox_cli.services.ports import PortForwardService
from devbox_cli.services.proxy_config import ProxyConfigs
from devbox_cli.services.proxy_push import ProxyPusher
from devbox_cli.services.secrets import SecretService
from devbox_cli.services.snapshots import SnapshotService
from devbox_cli.services.volumes import VolumeService
from devbox_cli.store import Store

if TYPE_CHECKING:
    from devbox_cli.engine.docker_backend import DockerBackend
    from devbox_cli.services.watch import Watcher, WatchEvent

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")


class _Via(Generic[S, P, R]):
    """A Client method that is a service's method: `create_secret = _Via("secrets",
    SecretService.create)` makes `client.create_secret` the bound `client.secrets.create`,
    with its signature and docstring."""

    def __init__(self, service: str, method: Callable[Concatenate[S, P], R]) -> None:
        self.service = service
        self.method = method
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, client: None, owner: type) -> Callable[Concatenate[S, P], R]: ...
    @overload
    def __get__(self, client: Client, owner: type) -> Callable[P, R]: ...
    def __get__(self, client: Client | None, owner: type) -> Any:
        if client is None:
            return self.method
        return getattr(getattr(client, self.service), self.method.__name__)


class Client:
    def __init__(self, home: str | None = None, *, passphrase: str | None = None) -> None:
        self.store = Store.open(home, passphrase=passphrase)
        self._engine: DockerBackend | None = None
        self.configs = ProxyConfigs(self.store)
        self.proxies = ProxyPusher(self.engine, self.store, self.configs)
        self.secrets = SecretService(self.store, self.proxies)
        self.gateways = GatewayService(self.store, self.proxies)
        self.policies = PolicyService(self.store, self.proxies)
        self.healer = Healer(self.engine, self.proxies)
        self.devboxes = DevboxService(self.engine, self.configs, self.proxies, self.healer)
        self.doctor = Doctor(self.engine, self.devboxes)
        self.volumes = VolumeService(self.engine, self.store, self.devboxes.delete)
        self.copies = CopyService(self.engine, self.store, self.devboxes.heal)
        self.lifecycle = LifecycleService(self.engine, self.store, self.proxies, self.devboxes)
        self.snapshots = SnapshotService(self.engine, self.store)
        self.ports = PortForwardService(self.engine)
        self.images = ImageBuilder(self.engine)

    def engine(self) -> DockerBackend:
        """The Docker engine, connected on first use: commands on the store alone never
        import docker-py or need a running engine."""
        if self._engine is None:
            from devbox_cli.engine.docker_backend import DockerBackend

            self._engine = DockerBackend()
        return self._engine

    def watcher(self, log: Callable[[WatchEvent], None]) -> Watcher:
        """`devbox watch`: a Watcher that heals this store's proxies on the engine's events
        until its stop(); run() blocks. Unlock the store first (store.unlock())."""
        from devbox_cli.services.watch import Watcher

        return Watcher(self.engine, self.healer, log)

    create_secret = _Via("secrets", SecretService.create)
    update_secret = _Via("secrets", SecretService.update)
    list_secrets = _Via("secrets", SecretService.list)
    get_secret = _Via("secrets", SecretService.get)
    delete_secret = _Via("secrets", SecretService.delete)
    set_passphrase = _Via("secrets", SecretService.set_passphrase)

    create_gateway = _Via("gateways", GatewayService.create)
    update_gateway = _Via("gateways", GatewayService.update)
    list_gateways = _Via("gateways", GatewayService.list)
    get_gateway = _Via("gateways", GatewayService.get)
    delete_gateway = _Via("gateways", GatewayService.delete)

    create_policy = _Via("policies", PolicyService.create)
    update_policy = _Via("policies", PolicyService.update)
    list_policies = _Via("policies", PolicyService.list)
    get_policy = _Via("policies", PolicyService.get)
    delete_policy = _Via("policies", PolicyService.delete)
    check_policy = _Via("policies", PolicyService.check)

    create_devbox = _Via("devboxes", DevboxService.create)
    list_devboxes = _Via("devboxes", DevboxService.list)
    get_devbox = _Via("devboxes", DevboxService.get)
    devbox_logs = _Via("devboxes", DevboxService.logs)
    egress_log = _Via("devboxes", DevboxService.egress_log)
    exec = _Via("devboxes", DevboxService.exec)
    repair_devbox = _Via("devboxes", DevboxService.repair)
    heal_devbox = _Via("devboxes", DevboxService.heal)
    heal_all = _Via("healer", Healer.sweep)

    run_doctor = _Via("doctor", Doctor.run)
    delete_devboxes = _Via("devboxes", DevboxService.delete)

    copy = _Via("copies", CopyService.copy)
    copy_to = _Via("copies", CopyService.copy_to)
    copy_from = _Via("copies", CopyService.copy_from)
    import_tar = _Via("copies", CopyService.import_tar)
    export_tar = _Via("copies", CopyService.export_tar)

    list_volumes = _Via("volumes", VolumeService.list)
    delete_volumes = _Via("volumes", VolumeService.delete)
    stop_devboxes = _Via("lifecycle", LifecycleService.stop)
    start_devboxes = _Via("lifecycle", LifecycleService.start)
    gc = _Via("lifecycle", LifecycleService.gc)

    create_snapshot = _Via("snapshots", SnapshotService.create)
    list_snapshots = _Via("snapshots", SnapshotService.list)
    get_snapshot = _Via("snapshots", SnapshotService.get)
    delete_snapshots = _Via("snapshots", SnapshotService.delete)

    port_forward = _Via("ports", PortForwardService.forward)

    build_images = _Via("images", ImageBuilder.build)
    list_images = _Via("images", ImageBuilder.list)
