"""Agent Gateway configs: where a credential goes and how it is sent.

A gateway names an upstream endpoint and an auth mechanism; a devbox binds it to a secret
under a prefix (`_binding`), and the proxy swaps the devbox's worthless token for the real
credential. Every field is validated at create/update time (gateway_rules.py), so the proxy
never meets a malformed config. Records hold the CA bundle's PEM text so the store is
self-contained.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from devbox_cli.errors import ConflictError, NotFoundError, StoreError, UsageError
from devbox_cli.gateway_rules import (
    PRESETS,
    GatewayHeader,
    ca_summary,
    check_headers,
    load_ca_cert,
    merge_headers,
    normalize_endpoint,
    parse_auth,
    parse_header,
    preset_defaults,
    validate_description,
    validate_gateway_name,
)
from devbox_cli.secrets import not_found as secret_not_found
from devbox_cli.store import utc_now
from proxy.config import Auth, GatewayBinding, Header

if TYPE_CHECKING:
    from collections.abc import Iterable

    from devbox_cli.store import Store

# Callers import GatewayHeader and ca_summary from here, beside Gateway.
__all__ = ["Gateway", "GatewayHeader", "GatewaysAPI", "ca_summary", "not_found"]

_UNSET: Any = object()


@dataclass(frozen=True)
class Gateway:
    name: str
    endpoint: str
    auth: Auth
    headers: tuple[GatewayHeader, ...] = ()
    ca_cert: str | None = field(default=None, repr=False)  # PEM bundle text
    description: str | None = None
    created_at: str = ""
    updated_at: str = ""
    # Set by update_gateway only: the running devboxes the change was pushed to.
    applied_to: tuple[str, ...] = field(default=(), compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "endpoint": self.endpoint,
            "auth": self.auth.to_json(),
            "headers": [h.to_json() for h in self.headers],
            "ca_cert": ca_summary(self.ca_cert) if self.ca_cert else None,
            "description": self.description,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    def auth_spec(self) -> str:
        """The auth as the CLI spells it: bearer, basic, header:NAME, query:PARAM."""
        return self.auth.type if self.auth.key is None else f"{self.auth.type}:{self.auth.key}"

    def _record(self) -> dict[str, Any]:
        return dict(self.to_json(), ca_cert=self.ca_cert)


def not_found(name: str) -> NotFoundError:
    return NotFoundError(
        f"no gateway {name}",
        f"create it with `devbox gateway create {name} --endpoint URL` (see `devbox gateway list`)",
    )


# -- the API -------------------------------------------------------------------------------


class GatewaysAPI:
    if TYPE_CHECKING:
        store: Store

        def _devboxes_using(self, kind: str, name: str) -> list[str]: ...
        def _push_update(self, kind: str, name: str) -> tuple[str, ...]: ...
        def _secret_value(self, name: str) -> str: ...

    def create_gateway(
        self,
        name: str,
        endpoint: str | None = None,
        *,
        auth: str | Auth | None = None,
        headers: Iterable[str | GatewayHeader] = (),
        ca_cert: str | os.PathLike[str] | None = None,
        description: str | None = None,
        preset: str | None = None,
    ) -> Gateway:
        """Create a gateway. `preset` (anthropic, openai) fills endpoint and auth; explicit
        arguments override it. `ca_cert` is a path to a PEM bundle, or PEM text."""
        validate_gateway_name(name)
        defaults = preset_defaults(preset)
        endpoint = endpoint or defaults.get("endpoint")
        if not endpoint:
            raise UsageError(
                f"gateway {name} needs an endpoint",
                f"give --endpoint URL or --preset ({', '.join(PRESETS)})",
            )
        gateway = Gateway(
            name=name,
            endpoint=normalize_endpoint(endpoint),
            auth=parse_auth(auth or defaults.get("auth") or "bearer"),
            headers=tuple(parse_header(h) for h in _iter(headers)),
            ca_cert=None if ca_cert is None else load_ca_cert(ca_cert),
            description=validate_description(description),
        )
        check_headers(gateway.headers, gateway.auth)
        with self.store.transaction("gateways") as records:
            if name in records:
                raise ConflictError(
                    f"gateway {name} already exists",
                    f"change it with `devbox gateway update {name} ...`",
                )
            self._check_secret_refs(gateway)
            now = utc_now()
            gateway = replace(gateway, created_at=now, updated_at=now)
            records[name] = gateway._record()
        return gateway

    def update_gateway(
        self,
        name: str,
        *,
        endpoint: str = _UNSET,
        auth: str | Auth = _UNSET,
        headers: Iterable[str | GatewayHeader] = _UNSET,
        set_headers: Iterable[str | GatewayHeader] = (),
        remove_headers: Iterable[str] = (),
        ca_cert: str | os.PathLike[str] | None = _UNSET,
        description: str | None = _UNSET,
        preset: str | None = None,
    ) -> Gateway:
        """Change a gateway. `headers` replaces the whole list; then `remove_headers` drops
        headers by name and `set_headers` adds or replaces them by name. `ca_cert=None`
        removes the CA bundle; `description=None` clears it. The change is pushed to the
        proxies of running devboxes that use the gateway (`applied_to` names them)."""
        validate_gateway_name(name)
        set_headers, remove_headers = _iter(set_headers), _iter(remove_headers)
        defaults = preset_defaults(preset)
        given = [endpoint, auth, headers, ca_cert, description]
        if all(v is _UNSET for v in given) and not (set_headers or remove_headers or preset):
            raise UsageError(
                f"nothing to update for gateway {name}", "see `devbox gateway update -h`"
            )
        if endpoint is _UNSET and "endpoint" in defaults:
            endpoint = defaults["endpoint"]
        if auth is _UNSET and "auth" in defaults:
            auth = defaults["auth"]
        new_ca = _UNSET if ca_cert is _UNSET or ca_cert is None else load_ca_cert(ca_cert)
        with self.store.transaction("gateways") as records:
            if name not in records:
                raise not_found(name)
            current = _from_record(records[name], self.store)
            changes: dict[str, Any] = {}
            if endpoint is not _UNSET:
                changes["endpoint"] = normalize_endpoint(endpoint)
            if auth is not _UNSET:
                changes["auth"] = parse_auth(auth)
            if ca_cert is not _UNSET:
                changes["ca_cert"] = None if ca_cert is None else new_ca
            if description is not _UNSET:
                changes["description"] = validate_description(description)
            changes["headers"] = merge_headers(
                current.headers if headers is _UNSET else tuple(map(parse_header, _iter(headers))),
                [parse_header(h) for h in set_headers],
                remove_headers,
            )
            gateway = replace(current, **changes, updated_at=utc_now())
            check_headers(gateway.headers, gateway.auth)
            self._check_secret_refs(gateway)
            records[name] = gateway._record()
        return replace(gateway, applied_to=self._push_update("gateway", name))

    def get_gateway(self, name: str) -> Gateway:
        validate_gateway_name(name)
        record = self.store.read("gateways").get(name)
        if record is None:
            raise not_found(name)
        return _from_record(record, self.store)

    def list_gateways(self) -> list[Gateway]:
        records = self.store.read("gateways")
        return [_from_record(r, self.store) for _, r in sorted(records.items())]

    def delete_gateway(self, name: str, *, force: bool = False) -> None:
        """Delete a gateway. Refused while a devbox uses it, unless force."""
        validate_gateway_name(name)
        devboxes = [] if force else self._devboxes_using("gateway", name)
        with self.store.transaction("gateways") as records:
            if name not in records:
                raise not_found(name)
            if devboxes:
                raise ConflictError(
                    f"gateway {name} is used by devbox(es) {', '.join(sorted(devboxes))}",
                    "delete those devboxes first, or pass --force",
                )
            del records[name]

    def _binding(
        self, prefix: str, gateway_name: str, secret_name: str, token: str
    ) -> GatewayBinding:
        """INTERNAL: the proxy's view of gateway `gateway_name` bound to secret `secret_name`,
        with the credential and secret-valued headers opened. Holds secrets: never print it
        (its repr redacts them)."""
        gateway = self.get_gateway(gateway_name)
        credential = self._secret_value(secret_name)
        if gateway.auth.type == "basic" and ":" not in credential:
            raise UsageError(
                f"gateway {gateway_name} uses basic auth, but secret {secret_name} is not "
                "of the form user:password",
                f"set it with `devbox secret update {secret_name}`",
            )
        headers = tuple(
            Header(name=h.name, value=self._secret_value(h.secret), secret=True)
            if h.secret
            else Header(name=h.name, value=h.value or "")
            for h in gateway.headers
        )
        return GatewayBinding(
            prefix=prefix,
            token=token,
            endpoint=gateway.endpoint,
            auth=gateway.auth,
            credential=credential,
            headers=headers,
            ca_cert=gateway.ca_cert,
        )

    def _check_secret_refs(self, gateway: Gateway) -> None:
        secrets = self.store.read("secrets")
        for h in gateway.headers:
            if h.secret is not None and h.secret not in secrets:
                err = secret_not_found(h.secret)
                raise NotFoundError(f"header {h.name}: {err.message}", err.hint)


def _iter(items: Any) -> list[Any]:
    if isinstance(items, str):  # one spec, not an iterable of characters
        return [items]
    return list(items or ())


def _from_record(record: dict[str, Any], store: Store) -> Gateway:
    try:
        auth = record.get("auth") or {"type": "bearer"}
        return Gateway(
            name=record["name"],
            endpoint=str(record["endpoint"]),
            auth=Auth(type=auth["type"], key=auth.get("key")),
            headers=tuple(
                GatewayHeader(name=h["name"], value=h.get("value"), secret=h.get("secret"))
                for h in record.get("headers") or ()
            ),
            ca_cert=record.get("ca_cert"),
            description=record.get("description"),
            created_at=str(record.get("created_at", "")),
            updated_at=str(record.get("updated_at", "")),
        )
    except (KeyError, TypeError, AttributeError):
        path = store.path("gateways")
        raise StoreError(
            f"{path}: gateway {record.get('name')!r} is malformed",
            f"fix it by hand, or delete and recreate it with `devbox gateway delete "
            f"{record.get('name')}`",
        ) from None
