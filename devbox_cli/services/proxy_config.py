"""The one component that opens secrets: it builds a devbox's proxy config (its gateway
bindings with the real credentials, its policy, and its interception CA with the key opened)
from the store.

What it returns holds secrets: ProxyConfig, GatewayBinding and Authority redact them in
their repr; never print, log or return them to a user. It travels only to proxy_push.py.

A host gateway's hosts are intercepted in a devbox only where its CA may vouch for them:
the CA is made at create for the hosts its gateways named then (services/authority.py), so
a host added later to a gateway is not intercepted by devboxes made before. One host goes to
one gateway of a devbox: two bound gateways naming it are refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from devbox_cli.errors import StoreError, UsageError
from devbox_cli.names import check_secret_name
from devbox_cli.services.authority import Authorities, DevboxCA
from devbox_cli.services.gateway_rules import host_name
from devbox_cli.services.gateways import read_gateway
from devbox_cli.services.kinds import ResourceKind
from devbox_cli.services.policies import compile_policy, read_policy
from proxy.config import GatewayBinding, Header, ProxyConfig
from proxy.hosts import in_subtrees

if TYPE_CHECKING:
    from devbox_cli.engine.views import Binding
    from devbox_cli.store import Store
    from proxy.config import PolicySpec

SECRET = ResourceKind.SECRET
_STORED: Any = object()


class ProxyConfigs:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.authorities = Authorities(store)

    def build(
        self,
        devbox: str,
        bindings: Iterable[Binding],
        tokens: Mapping[str, str],
        policy: str | None,
        *,
        ca: DevboxCA | None = _STORED,
    ) -> ProxyConfig:
        """Devbox `devbox`'s proxy config: each binding with its gateway token (`tokens`, by
        prefix) and opened credential, its policy, and the hosts it intercepts with `ca`
        (by default the devbox's CA in the store). Unknown names and a host named by two
        bound gateways raise here."""
        ordered = sorted(bindings, key=lambda b: b.prefix)
        gateways = tuple(self.binding(b, tokens[b.prefix]) for b in ordered)
        _check_hosts(ordered, gateways)
        if ca is _STORED:
            ca = self.authorities.load(devbox) if any(g.hosts for g in gateways) else None
        covered = ca.hosts if ca is not None else ()
        gateways = tuple(
            replace(g, hosts=tuple(h for h in g.hosts if in_subtrees(host_name(h), covered)))
            for g in gateways
        )
        spec = self.policy_spec(policy) if policy else None
        intercepting = ca is not None and any(g.hosts for g in gateways)
        return ProxyConfig(
            devbox=devbox,
            gateways=gateways,
            policy=spec,
            ca=ca.authority if intercepting and ca is not None else None,
        )

    def intercepted_names(self, bindings: Iterable[Binding]) -> tuple[str, ...]:
        """The DNS names the bound gateways intercept: what a new devbox's CA is made for."""
        names = {host_name(h) for b in bindings for h in read_gateway(self.store, b.gateway).hosts}
        return tuple(sorted(names))

    def binding(self, binding: Binding, token: str) -> GatewayBinding:
        """The proxy's view of one binding, with the credential and secret-valued headers
        opened. Holds secrets (its repr redacts them)."""
        gateway = read_gateway(self.store, binding.gateway)
        credential = self.secret_value(binding.secret)
        if gateway.auth.type == "basic" and ":" not in credential:
            raise UsageError(
                f"gateway {binding.gateway} uses basic auth, but secret {binding.secret} is not "
                "of the form user:password",
                f"set it with `devbox secret update {binding.secret}`",
            )
        headers = tuple(
            Header(name=h.name, value=self.secret_value(h.secret), secret=True)
            if h.secret
            else Header(name=h.name, value=h.value or "")
            for h in gateway.headers
        )
        return GatewayBinding(
            prefix=binding.prefix,
            token=token,
            endpoint=gateway.endpoint,
            auth=gateway.auth,
            credential=credential,
            headers=headers,
            ca_cert=gateway.ca_cert,
            hosts=gateway.hosts,
        )

    def policy_spec(self, name: str) -> PolicySpec:
        """The policy as the proxy config carries it; validated, so the proxy accepts it."""
        policy = read_policy(self.store, name)
        compile_policy(policy)
        return policy.spec()

    def secret_value(self, name: str) -> str:
        """The opened value of secret `name`. Never print, log or return it to a user."""
        check_secret_name(name)
        record = self.store.read(SECRET.records).get(name)
        if record is None:
            raise SECRET.not_found(name)
        sealed = record.get("sealed")
        if not isinstance(sealed, str):
            raise StoreError(
                f"secret {name} in {self.store.path(SECRET.records)} has no sealed value",
                f"set it again with `devbox secret update {name}`",
            )
        try:
            return self.store.unseal(sealed)
        except StoreError as exc:
            raise StoreError(f"secret {name}: {exc.message}", exc.hint) from None


def _check_hosts(bindings: list[Binding], gateways: tuple[GatewayBinding, ...]) -> None:
    """One host goes to one gateway of a devbox: whose credential would it get otherwise?"""
    seen: dict[str, Binding] = {}
    for binding, gateway in zip(bindings, gateways, strict=True):
        for host in gateway.hosts:
            other = seen.setdefault(host, binding)
            if other is not binding:
                raise UsageError(
                    f"host {host} is intercepted by both gateway {other.gateway} "
                    f"(prefix {other.prefix}) and gateway {binding.gateway} "
                    f"(prefix {binding.prefix}) of this devbox",
                    f"bind only one of them, or drop the host from one: `devbox gateway "
                    f"update {binding.gateway} --remove-host {host}`",
                )
