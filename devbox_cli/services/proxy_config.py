"""The one component that opens secrets: it builds a devbox's proxy config (its gateway
bindings with the real credentials, and its policy) from the store.

What it returns holds secrets: ProxyConfig and GatewayBinding redact them in their repr;
never print, log or return them to a user. It travels only to proxy_push.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from devbox_cli.errors import StoreError, UsageError
from devbox_cli.names import check_secret_name
from devbox_cli.services.gateways import read_gateway
from devbox_cli.services.kinds import ResourceKind
from devbox_cli.services.policies import compile_policy, read_policy
from proxy.config import GatewayBinding, Header, ProxyConfig

if TYPE_CHECKING:
    from devbox_cli.engine.views import Binding
    from devbox_cli.store import Store
    from proxy.config import PolicySpec

SECRET = ResourceKind.SECRET


class ProxyConfigs:
    def __init__(self, store: Store) -> None:
        self.store = store

    def build(
        self,
        devbox: str,
        bindings: Iterable[Binding],
        tokens: Mapping[str, str],
        policy: str | None,
    ) -> ProxyConfig:
        """Devbox `devbox`'s proxy config: each binding with its gateway token (`tokens`, by
        prefix) and opened credential, and its policy. Unknown names raise here."""
        gateways = tuple(
            self.binding(b, tokens[b.prefix]) for b in sorted(bindings, key=lambda b: b.prefix)
        )
        spec = self.policy_spec(policy) if policy else None
        return ProxyConfig(devbox=devbox, gateways=gateways, policy=spec)

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
