"""Sealed secrets: create, update, list, show and delete, by name.

A value goes in and never comes back out through this API: list and show return names and
timestamps only. The one way to open a value is `_secret_value`, which exists for building a
proxy config (gateways.py) and is not part of the public API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from devbox_cli.errors import ConflictError, NotFoundError, StoreError, UsageError
from devbox_cli.store import utc_now

if TYPE_CHECKING:
    from devbox_cli.store import Store

SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
MAX_NAME = 128
MAX_VALUE = 64 * 1024
# Values are credentials sent in HTTP headers or query strings: a control character there
# would split or corrupt the request, so it is refused up front (tab is legal in headers).
_BAD_VALUE_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


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


def validate_secret_name(name: str) -> str:
    if not isinstance(name, str) or not SECRET_NAME.match(name) or len(name) > MAX_NAME:
        raise UsageError(
            f"invalid secret name {name!r}: use an environment-variable name "
            f"([A-Za-z_][A-Za-z0-9_]*, at most {MAX_NAME} characters)",
            "for example: ANTHROPIC_API_KEY",
        )
    return name


def _validate_value(value: str) -> str:
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
    if _BAD_VALUE_CHARS.search(value):
        raise UsageError(
            "a secret's value cannot contain newlines or control characters "
            "(it is sent in an HTTP header or query string)",
            "check the input: only one trailing newline is stripped from stdin",
        )
    return value


def not_found(name: str) -> NotFoundError:
    return NotFoundError(
        f"no secret {name}",
        f"create it with `devbox secret create {name}` (see `devbox secret list`)",
    )


def already_exists(name: str) -> ConflictError:
    return ConflictError(
        f"secret {name} already exists", f"change its value with `devbox secret update {name}`"
    )


def _info(record: dict[str, Any]) -> SecretInfo:
    return SecretInfo(
        name=str(record["name"]),
        created_at=str(record.get("created_at", "")),
        updated_at=str(record.get("updated_at", "")),
    )


class SecretsAPI:
    if TYPE_CHECKING:
        store: Store

        def _devboxes_using(self, kind: str, name: str) -> list[str]: ...

        def _push_update(self, kind: str, name: str) -> tuple[str, ...]: ...

    def create_secret(self, name: str, value: str) -> SecretInfo:
        """Seal `value` under a new name. ConflictError when the name is taken."""
        validate_secret_name(name)
        sealed = self.store.seal(_validate_value(value))
        with self.store.transaction("secrets") as records:
            if name in records:
                raise already_exists(name)
            now = utc_now()
            records[name] = {"name": name, "sealed": sealed, "created_at": now, "updated_at": now}
            return _info(records[name])

    def update_secret(self, name: str, value: str) -> SecretInfo:
        """Replace the value of an existing secret and push it to the proxies of the running
        devboxes that use it (`applied_to` of the result names them): rotation needs no
        restart."""
        validate_secret_name(name)
        sealed = self.store.seal(_validate_value(value))
        with self.store.transaction("secrets") as records:
            if name not in records:
                raise not_found(name)
            records[name] = dict(records[name], sealed=sealed, updated_at=utc_now())
            info = _info(records[name])
        return replace(info, applied_to=self._push_update("secret", name))

    def list_secrets(self) -> list[SecretInfo]:
        return [_info(r) for _, r in sorted(self.store.read("secrets").items())]

    def get_secret(self, name: str) -> SecretInfo:
        """A secret's metadata (name and timestamps); the value is never returned."""
        validate_secret_name(name)
        record = self.store.read("secrets").get(name)
        if record is None:
            raise not_found(name)
        return _info(record)

    def delete_secret(self, name: str, *, force: bool = False) -> None:
        """Delete a secret. Refused while a devbox or a gateway header uses it, unless force."""
        validate_secret_name(name)
        devboxes = [] if force else self._devboxes_using("secret", name)
        with self.store.transaction("secrets") as records:
            if name not in records:
                raise not_found(name)
            if not force:
                if devboxes:
                    raise ConflictError(
                        f"secret {name} is used by devbox(es) {', '.join(sorted(devboxes))}",
                        "delete those devboxes first, or pass --force",
                    )
                gateways = _gateways_referencing(self.store.read("gateways"), name)
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

    def _secret_value(self, name: str) -> str:
        """INTERNAL: the opened value of secret `name`, for building a proxy config only.
        Never print, log or return it to a user."""
        validate_secret_name(name)
        record = self.store.read("secrets").get(name)
        if record is None:
            raise not_found(name)
        sealed = record.get("sealed")
        if not isinstance(sealed, str):
            raise StoreError(
                f"secret {name} in {self.store.path('secrets')} has no sealed value",
                f"set it again with `devbox secret update {name}`",
            )
        try:
            return self.store.unseal(sealed)
        except StoreError as exc:
            raise StoreError(f"secret {name}: {exc.message}", exc.hint) from None


def _gateways_referencing(gateways: dict[str, dict[str, Any]], secret: str) -> list[str]:
    using = []
    for gw_name, record in sorted(gateways.items()):
        headers = record.get("headers") or []
        if any(isinstance(h, dict) and h.get("secret") == secret for h in headers):
            using.append(gw_name)
    return using
