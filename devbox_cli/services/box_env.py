"""What a box is given: its gateway bindings and its environment (the proxy settings, for
each binding its gateway token and URL, and with an interception CA the variables that make
common clients trust its bundle), and the CLI's `--gateway`/`--env` parsers. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from devbox_cli.engine.trust import BUNDLE
from devbox_cli.engine.views import PROXY_HOST, PROXY_URL, Binding
from devbox_cli.errors import UsageError
from devbox_cli.names import is_env_name

PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy")
RESERVED_ENV = (*PROXY_ENV, "DEVBOX_NAME")
# The variables that point OpenSSL, Python's requests, curl, Node, git, pip and the AWS CLI
# at the box's CA bundle (the image's system CAs + the devbox's CA: engine/trust.py).
CA_ENV = (
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "PIP_CERT",
    "AWS_CA_BUNDLE",
)


def parse_gateway_specs(specs: Iterable[str]) -> dict[str, tuple[str, str]]:
    """`PREFIX=GATEWAY:SECRET` specs -> {prefix: (gateway, secret)}, each prefix once."""
    out: dict[str, tuple[str, str]] = {}
    for spec in specs:
        prefix, eq, rest = spec.partition("=")
        gateway, colon, secret = rest.partition(":")
        if not (eq and colon and prefix and gateway and secret):
            raise UsageError(
                f"invalid --gateway {spec!r}",
                "use PREFIX=GATEWAY:SECRET, e.g. ANTHROPIC_API_KEY=anthropic-gateway:ANTHROPIC",
            )
        if prefix in out:
            raise UsageError(f"gateway prefix {prefix} is given twice")
        out[prefix] = (gateway, secret)
    return out


def to_bindings(gateways: Mapping[str, tuple[str, str]]) -> tuple[Binding, ...]:
    """The Python API's {prefix: (gateway, secret)} -> checked Bindings, by prefix."""
    out = []
    for prefix, ref in sorted(gateways.items()):
        if not is_env_name(prefix):
            raise UsageError(
                f"invalid gateway prefix {prefix!r}",
                "a prefix is an environment-variable name, e.g. ANTHROPIC_API_KEY",
            )
        if len(ref) != 2 or not all(isinstance(r, str) and r for r in ref):
            raise UsageError(f"gateway binding {prefix} needs a gateway and a secret name")
        out.append(Binding(prefix, ref[0], ref[1]))
    return tuple(out)


def parse_env_spec(spec: str) -> tuple[str, str]:
    key, eq, value = spec.partition("=")
    if not eq or not is_env_name(key):
        raise UsageError(
            f"invalid --env {spec!r}", "use K=V where K is an environment-variable name"
        )
    return key, value


def box_environment(
    name: str,
    bindings: tuple[Binding, ...],
    env: dict[str, str],
    tokens: Mapping[str, str] | None = None,
    *,
    ca_bundle: bool = False,
) -> dict[str, str]:
    """The box's environment: `env`, the proxy settings, for each binding its gateway token
    (`tokens`, by prefix) and URL, and with `ca_bundle` the CA_ENV variables. Refuses a
    prefix or --env that would shadow another."""
    owned: dict[str, str] = {k: "the proxy settings" for k in RESERVED_ENV}
    if ca_bundle:
        owned.update({k: "the devbox's CA bundle (it binds a host gateway)" for k in CA_ENV})
    for prefix in (b.prefix for b in bindings):
        for var in (prefix, f"{prefix}_URL"):
            if var in owned:
                raise UsageError(
                    f"gateway prefix {prefix} sets {var}, which {owned[var]} also sets",
                    "pick another prefix",
                )
            owned[var] = f"gateway prefix {prefix}"
    for key in env:
        if not is_env_name(key):
            raise UsageError(f"invalid environment variable name {key!r}")
        if key in owned:
            raise UsageError(
                f"--env {key} collides with {owned[key]}",
                f"drop --env {key} or pick another gateway prefix",
            )
    out = dict(env)
    no_proxy = f"{PROXY_HOST},localhost,127.0.0.1,::1"
    out.update(
        HTTP_PROXY=PROXY_URL,
        HTTPS_PROXY=PROXY_URL,
        http_proxy=PROXY_URL,
        https_proxy=PROXY_URL,
        NO_PROXY=no_proxy,
        no_proxy=no_proxy,
        DEVBOX_NAME=name,
    )
    if ca_bundle:
        out.update({k: BUNDLE for k in CA_ENV})
    if tokens is not None:
        for binding in bindings:
            out[binding.prefix] = tokens[binding.prefix]
            out[f"{binding.prefix}_URL"] = binding.url
    return out
