"""Agent Gateway configs: where a credential goes and how it is sent.

A gateway names an upstream endpoint and an auth mechanism; a devbox binds it to a secret
under a prefix (`_binding`), and the proxy swaps the devbox's worthless token for the real
credential. Everything is validated here, at create/update time, so the proxy never meets a
malformed config. Records hold the CA bundle's PEM text so the store is self-contained.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import ssl
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from devbox_cli.errors import ConflictError, NotFoundError, StoreError, UsageError
from devbox_cli.secrets import not_found as secret_not_found
from devbox_cli.secrets import validate_secret_name
from devbox_cli.store import utc_now
from proxy.config import MAX_CUSTOM_HEADERS, Auth, GatewayBinding, Header

if TYPE_CHECKING:
    from collections.abc import Iterable

    from devbox_cli.store import Store

PRESETS: dict[str, dict[str, str]] = {
    "anthropic": {"endpoint": "https://api.anthropic.com", "auth": "header:x-api-key"},
    "openai": {"endpoint": "https://api.openai.com", "auth": "bearer"},
}
GATEWAY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
HTTP_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # RFC 9110 token
QUERY_PARAM = re.compile(r"[A-Za-z0-9._~-]+\Z")
HOST_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\Z")
URL_PATH = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*\Z")
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
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
MAX_DESCRIPTION = 200
MAX_CA_BYTES = 1024 * 1024
_UNSET: Any = object()


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


# -- validation ----------------------------------------------------------------------------


def validate_gateway_name(name: str) -> str:
    if not isinstance(name, str) or not GATEWAY_NAME.match(name):
        raise UsageError(
            f"invalid gateway name {name!r}: use letters, digits, '_', '.' and '-', "
            "starting with a letter or digit, at most 63 characters",
            "for example: anthropic",
        )
    return name


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
        return GatewayHeader(name=name, secret=validate_secret_name(value[len("secret:") :]))
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
    try:
        ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or "unreadable certificate"
        raise UsageError(f"{where}: a certificate in it does not parse ({reason})") from None
    return pem


def ca_summary(pem: str) -> dict[str, Any]:
    """What `show -o json` says about a CA bundle: how many certificates, their SHA-256."""
    prints = []
    for block in PEM_CERT.findall(pem):
        digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(block)).hexdigest().upper()
        prints.append(":".join(digest[i : i + 2] for i in range(0, len(digest), 2)))
    return {"certificates": len(prints), "sha256": prints}


def _validate_description(text: str | None) -> str | None:
    if text is None or text == "":
        return None
    if not isinstance(text, str) or CONTROL.search(text) or len(text) > MAX_DESCRIPTION:
        raise UsageError(f"invalid --description: one line of at most {MAX_DESCRIPTION} characters")
    return text


def _check_headers(headers: tuple[GatewayHeader, ...], auth: Auth) -> None:
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


def _preset(name: str | None) -> dict[str, str]:
    if name is None:
        return {}
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}", f"choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


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
        defaults = _preset(preset)
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
            description=_validate_description(description),
        )
        _check_headers(gateway.headers, gateway.auth)
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
        defaults = _preset(preset)
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
                changes["description"] = _validate_description(description)
            changes["headers"] = _merge_headers(
                current.headers if headers is _UNSET else tuple(map(parse_header, _iter(headers))),
                [parse_header(h) for h in set_headers],
                remove_headers,
            )
            gateway = replace(current, **changes, updated_at=utc_now())
            _check_headers(gateway.headers, gateway.auth)
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


def _merge_headers(
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
