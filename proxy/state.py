"""A config compiled into the State the handlers read (proxy/context.py), checked whole at
load: the policy's rules, each gateway (endpoint, TLS trust, redactor), and the hosts the
gateways intercept with the devbox's CA. A bad config raises ConfigError, which never shows
a value, and the running State stays as it was.
"""

from __future__ import annotations

import ssl

from proxy import gateway
from proxy.config import ConfigError, GatewayBinding, ProxyConfig
from proxy.context import State
from proxy.hosts import PolicyError, intercept_host_text, parse_intercept_host
from proxy.swap import redactor_for

# the hosts one config may intercept (each has a leaf certificate in the cache)
MAX_INTERCEPTED_HOSTS = 256


def build_state(config: ProxyConfig) -> State:
    """Validate and compile a config into a State; raises ConfigError (never shows a value)."""
    policy = None
    if config.policy is not None:
        from proxy.policy import Policy, PolicyError

        try:
            policy = Policy.compile(config.policy)
        except PolicyError as exc:
            raise ConfigError(f"invalid policy: {exc}") from None
    contexts: dict[str, ssl.SSLContext] = {}
    for binding in config.gateways:
        gateway.check_binding(binding)
        ctx = ssl.create_default_context()
        if binding.ca_cert:
            try:
                ctx.load_verify_locations(cadata=binding.ca_cert)
            except (ssl.SSLError, ValueError):
                raise ConfigError(
                    f"gateway {binding.prefix}: ca_cert is not a PEM certificate"
                ) from None
        contexts[binding.prefix] = ctx
    intercepts = _intercepts(config)
    leaves = None
    if config.ca is not None:
        from proxy.certs import CertError, LeafCache

        try:
            leaves = LeafCache(config.ca, max(1, len(intercepts)))
        except CertError as exc:
            raise ConfigError(f"ca: {exc}") from None
    return State(
        config=config,
        policy=policy,
        gateways={g.prefix: g for g in config.gateways},
        upstream_ssl=contexts,
        redactors={g.prefix: redactor_for(g) for g in config.gateways},
        tokens=tuple(g.token for g in config.gateways),
        intercepts=intercepts,
        leaves=leaves,
    )


def _intercepts(config: ProxyConfig) -> dict[tuple[str, int], GatewayBinding]:
    found: dict[tuple[str, int], GatewayBinding] = {}
    for binding in config.gateways:
        for text in binding.hosts:
            try:
                key = parse_intercept_host(text)
            except PolicyError as exc:
                raise ConfigError(f"gateway {binding.prefix}: {exc}") from None
            other = found.get(key)
            if other is not None:
                raise ConfigError(
                    f"host {intercept_host_text(*key)} is intercepted by both gateway "
                    f"{other.prefix} and gateway {binding.prefix}"
                )
            found[key] = binding
    if found and config.ca is None:
        raise ConfigError("gateways intercept hosts, but the config has no ca")
    if len(found) > MAX_INTERCEPTED_HOSTS:
        raise ConfigError(f"more than {MAX_INTERCEPTED_HOSTS} intercepted hosts")
    return found
