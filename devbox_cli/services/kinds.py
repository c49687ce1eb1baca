"""The kinds of stored resource a devbox uses, and what every service says about them.

Services that change a resource tell running proxies through `ProxyUpdates`, which
proxy_push.ProxyPusher implements; they receive it, they never import it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from devbox_cli.errors import ConflictError, NotFoundError

_CREATE_HINT = {
    "secret": "`devbox secret create {name}`",
    "gateway": "`devbox gateway create {name} --endpoint URL`",
    "policy": "`devbox policy create {name} --allow HOST`",
}
_CHANGE_HINT = {
    "secret": "change its value with `devbox secret update {name}`",
    "gateway": "change it with `devbox gateway update {name} ...`",
    "policy": "change it with `devbox policy update {name} ...`",
}


class ResourceKind(StrEnum):
    SECRET = "secret"  # noqa: S105 (a kind of resource, not a password)
    GATEWAY = "gateway"
    POLICY = "policy"

    @property
    def records(self) -> str:
        """The store file holding this kind."""
        return {"secret": "secrets", "gateway": "gateways", "policy": "policies"}[self.value]

    def not_found(self, name: str) -> NotFoundError:
        create = _CREATE_HINT[self.value].format(name=name)
        return NotFoundError(
            f"no {self.value} {name}", f"create it with {create} (see `devbox {self.value} list`)"
        )

    def already_exists(self, name: str) -> ConflictError:
        return ConflictError(
            f"{self.value} {name} already exists", _CHANGE_HINT[self.value].format(name=name)
        )

    def in_use(self, name: str, devboxes: list[str]) -> ConflictError:
        return ConflictError(
            f"{self.value} {name} is used by devbox(es) {', '.join(sorted(devboxes))}",
            "delete those devboxes first, or pass --force",
        )


class ProxyUpdates(Protocol):
    """What a service needs from the running proxies."""

    def devboxes_using(self, kind: ResourceKind, name: str) -> list[str]:
        """Existing devboxes that use the resource; a delete is refused while there are any."""
        ...

    def push_update(self, kind: ResourceKind, name: str) -> tuple[str, ...]:
        """After the resource was saved: push it to the running devboxes that use it."""
        ...

    def check_hosts(self, gateway: str, hosts: tuple[str, ...]) -> None:
        """Refuse (UsageError) `hosts` for `gateway` when a devbox binding it also binds
        another gateway that intercepts one of them (one host, one gateway per devbox)."""
        ...
