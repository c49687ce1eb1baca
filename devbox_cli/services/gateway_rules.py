"""Gateway validation and parsing: endpoints, intercepted hosts, auth specs, custom headers,
CA bundles and presets. Pure apart from reading a CA file; everything raises UsageError at
create/update time so the proxy never meets a malformed gateway.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devbox_cli.errors import UsageError
from devbox_cli.names import check_secret_name
from devbox_cli.services.fields import CONTROL
from proxy.config import MAX_CUSTOM_HEADERS, Auth
from proxy.hosts import PolicyError, intercept_host_text, parse_intercept_host

PRESETS: dict[str, dict[str, str]] = {
    "anthropic": {"endpoint": "https://api.anthropic.com", "auth": "header:x-api-key"},
    "openai": {"endpoint": "https://api.openai.com", "auth": "bearer"},
}
HTTP_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # RFC 9110 token
QUERY_PARAM = re.compile(r"[A-Za-z0-9._~-]+\Z")
HOST_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\Z")
URL_PATH = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*\Z")
PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----\s.*?-----END CERTIFICATE-----", re.DOTALL)
# Headers the proxy owns: hop-by-hop and framing headers, and the proxy's own auth.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
    }
)
MAX_CA_BYTES = 1024 * 1024
MAX_HOSTS = 16  # hosts one gateway intercepts


@dataclass(frozen=True)
class GatewayHeader:
    """A custom header: a fixed `value`, or the value of the secret named `secret`."""

    name: str
    value: str | None = None
    secret: str | None = None

    def to_json(self) -> dict[str, str]:
        if self.secret is not None:
            return {"name": self.name, "secret": self.secret}
        return {"name": self.name, "value": self.value or ""}


def normalize_endpoint(url: str) -> str:
    """An http(s) URL with a host and an optional path prefix; no userinfo, query or
    fragment. Returns it normalized: lower-case scheme and host, IDNA host, no default
    port, no trailing slash."""
    if not isinstance(url, str) or not url.strip():
        raise UsageError("the endpoint is empty", "give --endpoint https://HOST[/PATH]")
    if CONTROL.search(url) or any(c.isspace() for c in url):
        raise UsageError("the endpoint contains whitespace or control characters")
    # The URL is not echoed whole: its userinfo or query may hold a credential.
    bad = "invalid endpoint"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"{bad}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UsageError(f"{bad}: it must start with https:// or http://")
    if "@" in parts.netloc:
        raise UsageError(
            f"{bad}: it must not carry a user name or password",
            "store the credential as a secret and bind it with the gateway's --auth",
        )
    if "?" in url:
        raise UsageError(
            f"{bad}: it must not have a ?query",
            "a path prefix is allowed; a credential in the query goes in --auth query:PARAM",
        )
    if "#" in url:
        raise UsageError(f"{bad}: it must not have a #fragment")
    host = _normalize_host(parts.hostname or "", bad)
    if port == 0:
        raise UsageError(f"{bad}: port 0 is not a valid port")
    path = parts.path.rstrip("/")
    if not URL_PATH.match(path):
        raise UsageError(f"{bad}: the path has characters that must be percent-encoded")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        netloc += f":{port}"
    return f"{scheme}://{netloc}{path}"


def _normalize_host(host: str, bad: str) -> str:
    if not host:
        raise UsageError(f"{bad}: it has no host")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        ascii_host = host.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise UsageError(f"{bad}: {host!r} is not a valid host name") from None
    labels = ascii_host.split(".")
    if len(ascii_host) > 253 or not all(HOST_LABEL.match(label) for label in labels):
        raise UsageError(f"{bad}: {host!r} is not a valid host name")
    return ascii_host


def normalize_hosts(hosts: Any) -> tuple[str, ...]:
    """`HOST` or `HOST:PORT` names of a host gateway -> normalized (lower case, IDNA, port
    only when not 443), each once, in the order given. DNS names only."""
    if isinstance(hosts, str):
        hosts = [hosts]
    out: list[str] = []
    for text in hosts:
        if not isinstance(text, str) or CONTROL.search(text) or any(c.isspace() for c in text):
            raise UsageError(
                f"invalid --host {_quote_name(text)}: whitespace or control characters"
            )
        try:
            host = intercept_host_text(*parse_intercept_host(text))
        except PolicyError as exc:
            raise UsageError(f"invalid --host: {exc}", "give --host HOST or HOST:PORT") from None
        if host not in out:
            out.append(host)
    if len(out) > MAX_HOSTS:
        raise UsageError(f"at most {MAX_HOSTS} hosts per gateway")
    return tuple(out)


def host_name(host: str) -> str:
    """The DNS name of a normalized host (`git.corp:8443` -> `git.corp`)."""
    return host.rsplit(":", 1)[0] if ":" in host else host


def parse_auth(spec: str | Auth) -> Auth:
    """`bearer`, `basic`, `header:HEADER` or `query:PARAM` (or an Auth) -> a checked Auth."""
    if isinstance(spec, Auth):
        spec = spec.type if spec.key is None else f"{spec.type}:{spec.key}"
    forms = "use bearer, basic, header:HEADER (e.g. header:x-api-key) or query:PARAM"
    if not isinstance(spec, str):
        raise UsageError("invalid --auth", forms)
    kind, sep, key = spec.partition(":")
    kind = kind.strip().lower()
    if kind in ("bearer", "basic"):
        if sep:
            raise UsageError(f"invalid --auth {spec!r}: {kind} takes no ':' argument", forms)
        return Auth(type=kind)  # type: ignore[arg-type]
    if kind == "header":
        if not HTTP_TOKEN.match(key):
            raise UsageError(f"invalid --auth {spec!r}: {key!r} is not a valid header name", forms)
        if key.lower() in RESERVED_HEADERS:
            raise UsageError(f"invalid --auth {spec!r}: the proxy manages the {key} header")
        return Auth(type="header", key=key)
    if kind == "query":
        if not QUERY_PARAM.match(key):
            raise UsageError(
                f"invalid --auth {spec!r}: the query parameter must be letters, digits, "
                "'.', '_', '~' or '-'",
                forms,
            )
        return Auth(type="query", key=key)
    raise UsageError(f"invalid --auth {spec!r}", forms)


def parse_header(spec: str | GatewayHeader) -> GatewayHeader:
    """`NAME=VALUE` or `NAME=secret:SECRET` (or a GatewayHeader) -> a checked GatewayHeader."""
    if isinstance(spec, GatewayHeader):
        spec = f"{spec.name}=secret:{spec.secret}" if spec.secret else f"{spec.name}={spec.value}"
    forms = "use --header NAME=VALUE or --header NAME=secret:SECRET"
    if not isinstance(spec, str) or "=" not in spec:
        raise UsageError(f"invalid --header {_quote_name(spec)}: no '='", forms)
    name, _, value = spec.partition("=")
    if not HTTP_TOKEN.match(name):
        raise UsageError(f"invalid --header: {name!r} is not a valid header name", forms)
    if name.lower() in RESERVED_HEADERS:
        raise UsageError(f"invalid --header: the proxy manages the {name} header")
    if value.startswith("secret:"):
        return GatewayHeader(name=name, secret=check_secret_name(value[len("secret:") :]))
    if not value:
        raise UsageError(f"invalid --header: {name} has an empty value", forms)
    if CONTROL.search(value):
        raise UsageError(f"invalid --header: the value of {name} contains CR, LF or controls")
    return GatewayHeader(name=name, value=value)


def _quote_name(spec: Any) -> str:
    return repr(spec) if isinstance(spec, str) else "(not text)"


def load_ca_cert(source: str | os.PathLike[str]) -> str:
    """A CA bundle from a file path or PEM text -> its certificate blocks as PEM text.
    Anything else in the file (a private key, comments) is dropped."""
    if isinstance(source, str) and "-----BEGIN" in source:
        text, where = source, "the CA bundle"
    else:
        path = Path(source).expanduser()
        where = f"--ca-cert {path}"
        try:
            if path.stat().st_size > MAX_CA_BYTES:
                raise UsageError(f"{where}: larger than {MAX_CA_BYTES} bytes")
            text = path.read_text("utf-8")
        except FileNotFoundError:
            raise UsageError(f"{where}: no such file") from None
        except IsADirectoryError:
            raise UsageError(f"{where}: is a directory, not a PEM file") from None
        except OSError as exc:
            raise UsageError(f"{where}: cannot read it: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(
                f"{where}: not a PEM text file (DER? convert it with openssl)"
            ) from None
    blocks = PEM_CERT.findall(text)
    if not blocks:
        raise UsageError(f"{where}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it")
    pem = "\n".join(blocks) + "\n"
    import ssl  # here: most commands never parse a certificate

    try:
        ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or "unreadable certificate"
        raise UsageError(f"{where}: a certificate in it does not parse ({reason})") from None
    return pem


def ca_summary(pem: str) -> dict[str, Any]:
    """What `show -o json` says about a CA bundle: how many certificates, their SHA-256."""
    import ssl

    prints = []
    for block in PEM_CERT.findall(pem):
        digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(block)).hexdigest().upper()
        prints.append(":".join(digest[i : i + 2] for i in range(0, len(digest), 2)))
    return {"certificates": len(prints), "sha256": prints}


def check_headers(headers: tuple[GatewayHeader, ...], auth: Auth) -> None:
    if len(headers) > MAX_CUSTOM_HEADERS:
        raise UsageError(f"at most {MAX_CUSTOM_HEADERS} custom headers per gateway")
    seen: set[str] = set()
    auth_header = {"bearer": "authorization", "basic": "authorization"}.get(
        auth.type, (auth.key or "").lower() if auth.type == "header" else ""
    )
    for h in headers:
        low = h.name.lower()
        if low in seen:
            raise UsageError(f"header {h.name} is given twice")
        if low == auth_header:
            raise UsageError(
                f"header {h.name} is the one the gateway's {auth.type} auth sets",
                "drop the --header, or choose another --auth",
            )
        seen.add(low)


def preset_defaults(name: str | None) -> dict[str, str]:
    if name is None:
        return {}
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}", f"choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def merge_headers(
    base: tuple[GatewayHeader, ...], add: list[GatewayHeader], remove: list[str]
) -> tuple[GatewayHeader, ...]:
    headers = list(base)
    for name in remove:
        kept = [h for h in headers if h.name.lower() != str(name).lower()]
        if len(kept) == len(headers):
            raise UsageError(f"the gateway has no header {name} to remove")
        headers = kept
    for new in add:
        headers = [h for h in headers if h.name.lower() != new.name.lower()]
        headers.append(new)
    return tuple(headers)
