"""Agent Gateway configs: where a credential goes and how it is sent.

A gateway names an upstream endpoint (its route, `$PREFIX_URL`), hosts the proxy intercepts
(HTTPS to them from the box, TLS terminated by the proxy), or both, and an auth mechanism; a
devbox binds it to a secret under a prefix, and the proxy swaps the devbox's worthless token
for the real credential (proxy_config.py opens it). Every field is validated at
create/update time (gateway_rules.py), so the proxy never meets a malformed config. Records
hold the CA bundle's PEM text so the store is self-contained.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from devbox_cli.errors import NotFoundError, StoreError, UsageError
from devbox_cli.names import check_gateway_name
from devbox_cli.services.fields import validate_description
from devbox_cli.services.gateway_rules import (
    PRESETS,
    GatewayHeader,
    ca_summary,
    check_headers,
    load_ca_cert,
    merge_headers,
    normalize_endpoint,
    normalize_hosts,
    parse_auth,
    parse_header,
    preset_defaults,
)
from devbox_cli.services.kinds import ResourceKind
from devbox_cli.store import utc_now
from proxy.config import Auth

if TYPE_CHECKING:
    from devbox_cli.services.kinds import ProxyUpdates
    from devbox_cli.store import Store

GATEWAY = ResourceKind.GATEWAY
_UNSET: Any = object()


@dataclass(frozen=True)
class Gateway:
    name: str
    endpoint: str | None  # None: a host gateway only
    auth: Auth
    headers: tuple[GatewayHeader, ...] = ()
    ca_cert: str | None = field(default=None, repr=False)  # PEM bundle text
    description: str | None = None
    created_at: str = ""
    updated_at: str = ""
    hosts: tuple[str, ...] = ()  # intercepted: `host` or `host:port`, normalized
    # Set by update_gateway only: the running devboxes the change was pushed to.
    applied_to: tuple[str, ...] = field(default=(), compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "endpoint": self.endpoint,
            "hosts": list(self.hosts),
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


def read_gateway(store: Store, name: str) -> Gateway:
    check_gateway_name(name)
    record = store.read(GATEWAY.records).get(name)
    if record is None:
        raise GATEWAY.not_found(name)
    return _from_record(record, store)


def read_gateways(store: Store) -> list[Gateway]:
    records = store.read(GATEWAY.records)
    return [_from_record(r, store) for _, r in sorted(records.items())]


def gateways_using_secret(gateways: Iterable[Gateway], secret: str) -> list[str]:
    """The gateways with a custom header that carries `secret`."""
    return [g.name for g in gateways if any(h.secret == secret for h in g.headers)]


class GatewayService:
    def __init__(self, store: Store, proxies: ProxyUpdates) -> None:
        self.store = store
        self.proxies = proxies

    def create(
        self,
        name: str,
        endpoint: str | None = None,
        *,
        auth: str | Auth | None = None,
        headers: Iterable[str | GatewayHeader] = (),
        ca_cert: str | os.PathLike[str] | None = None,
        description: str | None = None,
        preset: str | None = None,
        hosts: Iterable[str] = (),
    ) -> Gateway:
        """Create a gateway. `preset` (anthropic, openai) fills endpoint and auth; explicit
        arguments override it. `hosts` are intercepted (HTTPS from the box to them gets the
        credential), beside or instead of the endpoint's route. `ca_cert` is a path to a PEM
        bundle, or PEM text: trusted for the endpoint and the hosts."""
        check_gateway_name(name)
        defaults = preset_defaults(preset)
        endpoint = endpoint or defaults.get("endpoint")
        hosts = normalize_hosts(_iter(hosts))
        if not endpoint and not hosts:
            raise UsageError(
                f"gateway {name} needs an endpoint or hosts",
                f"give --endpoint URL, --host HOST or --preset ({', '.join(PRESETS)})",
            )
        gateway = Gateway(
            name=name,
            endpoint=normalize_endpoint(endpoint) if endpoint else None,
            hosts=hosts,
            auth=parse_auth(auth or defaults.get("auth") or "bearer"),
            headers=tuple(parse_header(h) for h in _iter(headers)),
            ca_cert=None if ca_cert is None else load_ca_cert(ca_cert),
            description=validate_description(description),
        )
        check_headers(gateway.headers, gateway.auth)
        with self.store.transaction(GATEWAY.records) as records:
            if name in records:
                raise GATEWAY.already_exists(name)
            self._check_secret_refs(gateway)
            now = utc_now()
            gateway = replace(gateway, created_at=now, updated_at=now)
            records[name] = gateway._record()
        return gateway

    def update(
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
        hosts: Iterable[str] = _UNSET,
        add_hosts: Iterable[str] = (),
        remove_hosts: Iterable[str] = (),
    ) -> Gateway:
        """Change a gateway. `headers` replaces the whole list; then `remove_headers` drops
        headers by name and `set_headers` adds or replaces them by name; `hosts`,
        `remove_hosts` and `add_hosts` do the same for the intercepted hosts.
        `endpoint=None` removes the endpoint (the gateway must keep hosts); `ca_cert=None`
        removes the CA bundle; `description=None` clears it. The change is pushed to the
        proxies of running devboxes that use the gateway (`applied_to` names them); a host
        added is intercepted only in devboxes created after (a devbox's CA covers the hosts
        its gateways had when it was made)."""
        check_gateway_name(name)
        set_headers, remove_headers = _iter(set_headers), _iter(remove_headers)
        add_hosts, remove_hosts = normalize_hosts(_iter(add_hosts)), _iter(remove_hosts)
        defaults = preset_defaults(preset)
        given = [endpoint, auth, headers, ca_cert, description, hosts]
        edits = set_headers or remove_headers or add_hosts or remove_hosts or preset
        if all(v is _UNSET for v in given) and not edits:
            raise UsageError(
                f"nothing to update for gateway {name}", "see `devbox gateway update -h`"
            )
        if endpoint is _UNSET and "endpoint" in defaults:
            endpoint = defaults["endpoint"]
        if auth is _UNSET and "auth" in defaults:
            auth = defaults["auth"]
        new_ca = _UNSET if ca_cert is _UNSET or ca_cert is None else load_ca_cert(ca_cert)
        with self.store.transaction(GATEWAY.records) as records:
            if name not in records:
                raise GATEWAY.not_found(name)
            current = _from_record(records[name], self.store)
            changes: dict[str, Any] = {}
            if endpoint is not _UNSET:
                changes["endpoint"] = None if endpoint is None else normalize_endpoint(endpoint)
            changes["hosts"] = _merge_hosts(
                current.hosts if hosts is _UNSET else normalize_hosts(_iter(hosts)),
                add_hosts,
                remove_hosts,
            )
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
            if gateway.endpoint is None and not gateway.hosts:
                raise UsageError(
                    f"gateway {name} would have neither an endpoint nor hosts",
                    "keep one of them, or delete the gateway",
                )
            check_headers(gateway.headers, gateway.auth)
            self._check_secret_refs(gateway)
            added = tuple(h for h in gateway.hosts if h not in current.hosts)
            if added:
                # before it is saved: a push that fails on it would leave devboxes stale
                self.proxies.check_hosts(name, added)
            records[name] = gateway._record()
        return replace(gateway, applied_to=self.proxies.push_update(GATEWAY, name))

    def get(self, name: str) -> Gateway:
        return read_gateway(self.store, name)

    def list(self) -> list[Gateway]:
        return read_gateways(self.store)

    def delete(self, name: str, *, force: bool = False) -> None:
        """Delete a gateway. Refused while a devbox uses it, unless force."""
        check_gateway_name(name)
        devboxes = [] if force else self.proxies.devboxes_using(GATEWAY, name)
        with self.store.transaction(GATEWAY.records) as records:
            if name not in records:
                raise GATEWAY.not_found(name)
            if devboxes:
                raise GATEWAY.in_use(name, devboxes)
            del records[name]

    def _check_secret_refs(self, gateway: Gateway) -> None:
        secrets = self.store.read(ResourceKind.SECRET.records)
        for h in gateway.headers:
            if h.secret is not None and h.secret not in secrets:
                err = ResourceKind.SECRET.not_found(h.secret)
                raise NotFoundError(f"header {h.name}: {err.message}", err.hint)


def _merge_hosts(base: tuple[str, ...], add: tuple[str, ...], remove: list[str]) -> tuple[str, ...]:
    hosts = list(base)
    for host in normalize_hosts(remove) if remove else ():
        if host not in hosts:
            raise UsageError(f"the gateway has no host {host} to remove")
        hosts.remove(host)
    hosts += [h for h in add if h not in hosts]
    return normalize_hosts(hosts)


def _iter(items: Any) -> list[Any]:
    if isinstance(items, str):  # one spec, not an iterable of characters
        return [items]
    return list(items or ())


def _from_record(record: dict[str, Any], store: Store) -> Gateway:
    try:
        auth = record.get("auth") or {"type": "bearer"}
        hosts = tuple(str(h) for h in record.get("hosts") or ())
        endpoint = record.get("endpoint")
        if not isinstance(endpoint, str | None) or (endpoint is None and not hosts):
            raise TypeError("a gateway is an endpoint, hosts, or both")
        return Gateway(
            name=record["name"],
            endpoint=endpoint,
            hosts=hosts,
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
        path = store.path(GATEWAY.records)
        raise StoreError(
            f"{path}: gateway {record.get('name')!r} is malformed",
            f"fix it by hand, or delete and recreate it with `devbox gateway delete "
            f"{record.get('name')}`",
        ) from None
