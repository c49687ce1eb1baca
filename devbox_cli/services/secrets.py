"""Sealed secrets: create, update, list, show and delete, by name.

A value goes in and never comes back out through this service: list and show return names
and timestamps only. The one component that opens a value is proxy_config.ProxyConfigs, to
build a proxy config.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from devbox_cli.errors import ConflictError, UsageError
from devbox_cli.names import check_secret_name
from devbox_cli.services.fields import CONTROL
from devbox_cli.services.gateways import gateways_using_secret, read_gateways
from devbox_cli.services.kinds import ResourceKind
from devbox_cli.store import utc_now

if TYPE_CHECKING:
    from devbox_cli.services.kinds import ProxyUpdates
    from devbox_cli.store import Store

MAX_VALUE = 64 * 1024
SECRET = ResourceKind.SECRET


@dataclass(frozen=True)
class SecretInfo:
    """What may be known about a secret: its name and when it was set. Never its value."""

    name: str
    created_at: str
    updated_at: str
    # Set by update_secret only: the running devboxes the new value was pushed to.
    applied_to: tuple[str, ...] = field(default=(), compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "created_at": self.created_at, "updated_at": self.updated_at}


def validate_value(value: str) -> str:
    # Messages here describe the value, never quote it.
    if not isinstance(value, str):
        raise UsageError("a secret's value must be text")
    if not value:
        raise UsageError(
            "a secret's value cannot be empty",
            'pipe it in (`printf %s "$VALUE" | devbox secret create NAME`) or use --from-env VAR',
        )
    if len(value.encode("utf-8")) > MAX_VALUE:
        raise UsageError(f"a secret's value is limited to {MAX_VALUE} bytes")
    if CONTROL.search(value):
        raise UsageError(
            "a secret's value cannot contain newlines or control characters "
            "(it is sent in an HTTP header or query string)",
            "check the input: only one trailing newline is stripped from stdin",
        )
    return value


def _info(record: dict[str, Any]) -> SecretInfo:
    return SecretInfo(
        name=str(record["name"]),
        created_at=str(record.get("created_at", "")),
        updated_at=str(record.get("updated_at", "")),
    )


class SecretService:
    def __init__(self, store: Store, proxies: ProxyUpdates) -> None:
        self.store = store
        self.proxies = proxies

    def create(self, name: str, value: str) -> SecretInfo:
        """Seal `value` under a new name. ConflictError when the name is taken."""
        check_secret_name(name)
        sealed = self.store.seal(validate_value(value))
        with self.store.transaction(SECRET.records) as records:
            if name in records:
                raise SECRET.already_exists(name)
            now = utc_now()
            records[name] = {"name": name, "sealed": sealed, "created_at": now, "updated_at": now}
            return _info(records[name])

    def update(self, name: str, value: str) -> SecretInfo:
        """Replace the value of an existing secret and push it to the proxies of the running
        devboxes that use it (`applied_to` of the result names them): rotation needs no
        restart."""
        check_secret_name(name)
        sealed = self.store.seal(validate_value(value))
        with self.store.transaction(SECRET.records) as records:
            if name not in records:
                raise SECRET.not_found(name)
            records[name] = dict(records[name], sealed=sealed, updated_at=utc_now())
            info = _info(records[name])
        return replace(info, applied_to=self.proxies.push_update(SECRET, name))

    def list(self) -> list[SecretInfo]:
        return [_info(r) for _, r in sorted(self.store.read(SECRET.records).items())]

    def get(self, name: str) -> SecretInfo:
        """A secret's metadata (name and timestamps); the value is never returned."""
        check_secret_name(name)
        record = self.store.read(SECRET.records).get(name)
        if record is None:
            raise SECRET.not_found(name)
        return _info(record)

    def delete(self, name: str, *, force: bool = False) -> None:
        """Delete a secret. Refused while a devbox or a gateway header uses it, unless force."""
        check_secret_name(name)
        devboxes = [] if force else self.proxies.devboxes_using(SECRET, name)
        with self.store.transaction(SECRET.records) as records:
            if name not in records:
                raise SECRET.not_found(name)
            if not force:
                if devboxes:
                    raise SECRET.in_use(name, devboxes)
                gateways = gateways_using_secret(read_gateways(self.store), name)
                if gateways:
                    raise ConflictError(
                        f"secret {name} is used in a header of gateway(s) {', '.join(gateways)}",
                        "change those gateways' headers (`devbox gateway update NAME "
                        "--remove-header HEADER`), or pass --force",
                    )
            del records[name]

    def set_passphrase(self, new: str | None) -> None:
        """Protect the store's private key with a passphrase, change it, or (empty/None)
        remove the protection. The current passphrase, if any, must be available."""
        self.store.set_passphrase(new)
