"""Network policies: create, update, list, show, delete and a dry-run check, by name.

The rules themselves live in proxy/policy.py, the one implementation the proxy enforces;
this module validates every rule through it at create/update time (so the proxy never sees an
invalid one), stores the normalized form, and pushes updates to running devboxes.
"""

from __future__ import annotations

import dataclasses
import re
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from devbox_cli.errors import ConflictError, NotFoundError, UsageError
from devbox_cli.store import utc_now
from proxy.policy import (
    Decision,
    IPAddress,
    Policy,
    PolicyError,
    normalize_host,
    parse_ip_literal,
    validate_cidr,
    validate_host_pattern,
)

if TYPE_CHECKING:
    from devbox_cli.store import Store
    from proxy.config import PolicySpec

POLICY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
MAX_RULES = 1000  # per list; a policy is pushed whole on every update
MAX_DESCRIPTION = 500
RESOLVE_TIMEOUT = 5.0
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21, "ssh": 22, "git": 9418}


@dataclass(frozen=True)
class NetworkPolicy:
    name: str
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    allow_cidr: tuple[str, ...] = ()
    allow_all: bool = False
    description: str | None = None
    created_at: str = ""
    updated_at: str = ""
    # Set by update_policy only: the running devboxes the change was pushed to.
    applied_to: tuple[str, ...] = field(default=(), compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "allow": list(self.allow),
            "deny": list(self.deny),
            "allow_cidr": list(self.allow_cidr),
            "allow_all": self.allow_all,
            "description": self.description,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    def spec(self) -> PolicySpec:
        from proxy.config import PolicySpec

        return PolicySpec(
            name=self.name,
            allow=self.allow,
            deny=self.deny,
            allow_cidr=self.allow_cidr,
            allow_all=self.allow_all,
        )

    @property
    def denies_everything(self) -> bool:
        return not (self.allow or self.allow_cidr or self.allow_all)


@dataclass(frozen=True)
class PolicyCheck(Decision):
    """A Decision plus what it was made on: the host and port taken from the URL, and the
    addresses the name resolved to (`resolved` False: decided on the name alone)."""

    host: str = ""
    port: int = 0
    addresses: tuple[str, ...] = ()
    resolved: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            **super().to_json(),
            "host": self.host,
            "port": self.port,
            "addresses": list(self.addresses),
            "resolved": self.resolved,
        }


def validate_policy_name(name: str) -> str:
    if not isinstance(name, str) or not POLICY_NAME.match(name):
        raise UsageError(
            f"invalid policy name {name!r}: use letters, digits, '_', '.' and '-', starting "
            "with a letter or digit, at most 63 characters",
            "for example: anthropic-only",
        )
    return name


def not_found(name: str) -> NotFoundError:
    return NotFoundError(
        f"no policy {name}",
        f"create it with `devbox policy create {name} --allow HOST` (see `devbox policy list`)",
    )


def _items(value: Iterable[str] | str | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _normalized(flag: str, values: Iterable[str], validate: Any) -> tuple[str, ...]:
    hint = (
        "a CIDR is ADDRESS/PREFIX, e.g. 10.0.0.0/8 or 10.1.2.3 (one address)"
        if flag.endswith("cidr")
        else "a HOST is a name or IP, or *.example.com, with an optional :PORT (no scheme/path)"
    )
    out: list[str] = []
    for value in values:
        try:
            normal = validate(value)
        except PolicyError as exc:
            raise UsageError(f"invalid {flag} rule: {exc}", hint) from None
        if normal not in out:
            out.append(normal)
    if len(out) > MAX_RULES:
        raise UsageError(f"too many {flag} rules: at most {MAX_RULES}")
    return tuple(out)


def _hosts(flag: str, values: Iterable[str]) -> tuple[str, ...]:
    return _normalized(flag, values, validate_host_pattern)


def _cidrs(values: Iterable[str]) -> tuple[str, ...]:
    return _normalized("--allow-cidr", values, validate_cidr)


def _description(text: str | None) -> str | None:
    if text is None or text == "":
        return None
    if len(text) > MAX_DESCRIPTION or any(ord(c) < 32 for c in text):
        raise UsageError(
            f"invalid description: at most {MAX_DESCRIPTION} characters on one line, "
            "no control characters"
        )
    return text


def _from_record(record: dict[str, Any]) -> NetworkPolicy:
    def strings(key: str) -> tuple[str, ...]:
        value = record.get(key) or []
        return tuple(str(v) for v in value) if isinstance(value, list) else ()

    return NetworkPolicy(
        name=str(record["name"]),
        allow=strings("allow"),
        deny=strings("deny"),
        allow_cidr=strings("allow_cidr"),
        allow_all=bool(record.get("allow_all", False)),
        description=record.get("description") or None,
        created_at=str(record.get("created_at", "")),
        updated_at=str(record.get("updated_at", "")),
    )


def _compiled(policy: NetworkPolicy) -> Policy:
    try:
        return Policy.compile(policy.spec())
    except PolicyError as exc:  # only reachable for a hand-edited store file
        raise UsageError(
            f"policy {policy.name} is invalid: {exc}",
            f"fix it with `devbox policy update {policy.name} ...`",
        ) from None


_FLAGS = {"allow": "--allow", "deny": "--deny", "allow_cidr": "--allow-cidr"}


def _check(key: str, values: Iterable[str] | str | None) -> tuple[str, ...]:
    if key == "allow_cidr":
        return _cidrs(_items(values))
    return _hosts(_FLAGS[key], _items(values))


def _edit(
    key: str,
    current: tuple[str, ...],
    replace: Iterable[str] | None,
    add: Iterable[str],
    remove: Iterable[str],
) -> tuple[str, ...]:
    """`current`, or `replace` when given, plus `add`, minus `remove` (each normalized)."""
    items = list(current if replace is None else _check(key, replace))
    items += [a for a in _check(key, add) if a not in items]
    for r in _check(key, remove):
        if r not in items:
            shown = ", ".join(items) or "none"
            raise UsageError(
                f"cannot remove {_FLAGS[key]} {r!r}: the policy has no such rule (it has: {shown})"
            )
        items.remove(r)
    if len(items) > MAX_RULES:
        raise UsageError(f"too many {_FLAGS[key]} rules: at most {MAX_RULES}")
    return tuple(items)


def parse_target(url: str) -> tuple[str, int]:
    """(host, port) from a URL or host[:port]. The port defaults from the scheme; with no
    scheme and no port, 443 (what an HTTPS client's CONNECT would ask for)."""
    text = url.strip() if isinstance(url, str) else ""
    if not text:
        raise UsageError("the URL is empty", "for example: https://api.anthropic.com/v1/messages")
    if "://" not in text:
        text = "//" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"cannot parse {url!r} as a URL or HOST[:PORT]: {exc}") from None
    host = parts.hostname
    if not host:
        raise UsageError(f"{url!r} has no host", "for example: https://api.anthropic.com")
    scheme = parts.scheme.lower()
    if port is None:
        if scheme and scheme not in DEFAULT_PORTS:
            raise UsageError(
                f"no default port for scheme {scheme!r}", f"give one: {scheme}://{host}:PORT"
            )
        port = DEFAULT_PORTS.get(scheme, 443)
    if not 1 <= port <= 65535:
        raise UsageError(f"port {port} in {url!r} is out of range 1-65535")
    return host, port


def resolve(host: str, port: int, timeout: float = RESOLVE_TIMEOUT) -> list[IPAddress] | None:
    """Every address `host` resolves to, or None when it does not resolve (in time)."""
    result: list[Any] = []

    def lookup() -> None:
        try:
            result.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError):
            result.append(None)

    # getaddrinfo has no timeout of its own; a daemon thread keeps a dead resolver from
    # hanging `devbox policy check`.
    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(timeout)
    infos = result[0] if result else None
    if not infos:
        return None
    out: list[IPAddress] = []
    for *_, sockaddr in infos:
        ip = parse_ip_literal(str(sockaddr[0]))
        if ip is not None and ip not in out:
            out.append(ip)
    return out or None


class PoliciesAPI:
    if TYPE_CHECKING:
        store: Store

        def _devboxes_using(self, kind: str, name: str) -> list[str]: ...

        def _push_update(self, kind: str, name: str) -> tuple[str, ...]: ...

    def create_policy(
        self,
        name: str,
        *,
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        allow_cidr: Iterable[str] = (),
        allow_all: bool = False,
        description: str | None = None,
    ) -> NetworkPolicy:
        """Create a policy. Rules are validated and stored normalized; with no allow rule,
        no allow-cidr and no allow_all it denies everything but gateway routes."""
        validate_policy_name(name)
        policy = NetworkPolicy(
            name=name,
            allow=_hosts("--allow", _items(allow)),
            deny=_hosts("--deny", _items(deny)),
            allow_cidr=_cidrs(_items(allow_cidr)),
            allow_all=bool(allow_all),
            description=_description(description),
        )
        _compiled(policy)
        with self.store.transaction("policies") as records:
            if name in records:
                raise ConflictError(
                    f"policy {name} already exists",
                    f"change it with `devbox policy update {name} ...`",
                )
            now = utc_now()
            records[name] = _record(policy, created_at=now, updated_at=now)
            return _from_record(records[name])

    def update_policy(
        self,
        name: str,
        *,
        allow: Iterable[str] | None = None,
        deny: Iterable[str] | None = None,
        allow_cidr: Iterable[str] | None = None,
        allow_all: bool | None = None,
        description: str | None = None,
        add_allow: Iterable[str] = (),
        remove_allow: Iterable[str] = (),
        add_deny: Iterable[str] = (),
        remove_deny: Iterable[str] = (),
        add_allow_cidr: Iterable[str] = (),
        remove_allow_cidr: Iterable[str] = (),
    ) -> NetworkPolicy:
        """Change a policy and push it to every running devbox that uses it. A list given
        replaces the stored one (an empty list clears it); add_*/remove_* edit it in place.
        `applied_to` of the result names the devboxes that took the change live."""
        validate_policy_name(name)
        edits = {
            "allow": (allow, add_allow, remove_allow),
            "deny": (deny, add_deny, remove_deny),
            "allow_cidr": (allow_cidr, add_allow_cidr, remove_allow_cidr),
        }
        for key, (replace, add, remove) in edits.items():  # validate before taking the lock
            _check(key, replace)
            _check(key, add)
            _check(key, remove)
        new_description = None if description is None else _description(description)
        with self.store.transaction("policies") as records:
            if name not in records:
                raise not_found(name)
            current = _from_record(records[name])
            updated = NetworkPolicy(
                name=name,
                allow=_edit("allow", current.allow, *edits["allow"]),
                deny=_edit("deny", current.deny, *edits["deny"]),
                allow_cidr=_edit("allow_cidr", current.allow_cidr, *edits["allow_cidr"]),
                allow_all=current.allow_all if allow_all is None else bool(allow_all),
                description=current.description if description is None else new_description,
            )
            _compiled(updated)
            records[name] = _record(updated, created_at=current.created_at, updated_at=utc_now())
            saved = _from_record(records[name])
        return dataclasses.replace(saved, applied_to=self._push_update("policy", name))

    def get_policy(self, name: str) -> NetworkPolicy:
        validate_policy_name(name)
        record = self.store.read("policies").get(name)
        if record is None:
            raise not_found(name)
        return _from_record(record)

    def list_policies(self) -> list[NetworkPolicy]:
        return [_from_record(r) for _, r in sorted(self.store.read("policies").items())]

    def delete_policy(self, name: str, *, force: bool = False) -> None:
        """Delete a policy. Refused while a devbox uses it, unless force."""
        validate_policy_name(name)
        self.get_policy(name)
        devboxes = [] if force else self._devboxes_using("policy", name)
        if devboxes:
            raise ConflictError(
                f"policy {name} is used by devbox(es) {', '.join(sorted(devboxes))}",
                "delete those devboxes first, or pass --force",
            )
        with self.store.transaction("policies") as records:
            if name not in records:
                raise not_found(name)
            del records[name]

    def check_policy(self, name: str, url: str) -> PolicyCheck:
        """Dry run: would the proxy let this devbox reach `url` (or HOST[:PORT])? Decides on
        the name and, when the name is admitted and resolves here, on every address; a name
        refused on the name is not looked up, as the proxy never looks it up. The proxy's
        own addresses are not known here, so they are not checked."""
        policy = _compiled(self.get_policy(name))
        host, port = parse_target(url)
        try:
            shown = normalize_host(host)
        except PolicyError:
            shown = host
        literal = parse_ip_literal(shown)
        # As the proxy does: a name refused on the name alone is never looked up (an
        # allow-cidr admits only the addresses of names an allow rule admits).
        decision = policy.decide(host, port)
        looked_up = literal is None and decision.allowed
        addresses = (resolve(shown, port) or []) if looked_up else []
        if addresses:
            decision = policy.decide(host, port, addresses)
        reason = decision.reason
        resolved = literal is not None or bool(addresses)
        if looked_up and not resolved:
            reason += f" (decided on the name only: {shown} does not resolve here)"
        elif literal is None and decision.rule != "invalid-host" and not looked_up:
            reason += " (refused on the name: the proxy never looks it up)"
        return PolicyCheck(
            allowed=decision.allowed,
            reason=reason,
            rule=decision.rule,
            host=shown,
            port=port,
            addresses=tuple(str(a) for a in ([literal] if literal else addresses)),
            resolved=resolved,
        )

    def _policy_spec(self, name: str) -> PolicySpec:
        """The policy as the proxy config carries it; validated, so the proxy accepts it."""
        policy = self.get_policy(name)
        _compiled(policy)
        return policy.spec()


def _record(policy: NetworkPolicy, *, created_at: str, updated_at: str) -> dict[str, Any]:
    record = policy.to_json()
    record.update(created_at=created_at, updated_at=updated_at)
    return record
