"""Network policies: create, update, list, show, delete and a dry-run check, by name.

The rules themselves live in proxy/policy.py, the one implementation the proxy enforces;
this module validates every rule through it at create/update time (so the proxy never sees an
invalid one), stores the normalized form, and pushes updates to running devboxes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from devbox_cli.errors import UsageError
from devbox_cli.names import check_policy_name
from devbox_cli.services.fields import validate_description
from devbox_cli.services.kinds import ResourceKind
from devbox_cli.services.policy_check import PolicyCheck, check_url
from devbox_cli.store import utc_now
from proxy.policy import Policy, PolicyError, validate_cidr, validate_host_pattern

if TYPE_CHECKING:
    from devbox_cli.services.kinds import ProxyUpdates
    from devbox_cli.store import Store
    from proxy.config import PolicySpec

POLICY = ResourceKind.POLICY
MAX_RULES = 1000  # per list; a policy is pushed whole on every update


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


def read_policy(store: Store, name: str) -> NetworkPolicy:
    check_policy_name(name)
    record = store.read(POLICY.records).get(name)
    if record is None:
        raise POLICY.not_found(name)
    return _from_record(record)


def compile_policy(policy: NetworkPolicy) -> Policy:
    """The policy as the proxy enforces it; a stored policy always compiles, unless the
    store file was edited by hand."""
    try:
        return Policy.compile(policy.spec())
    except PolicyError as exc:
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


class PolicyService:
    def __init__(self, store: Store, proxies: ProxyUpdates) -> None:
        self.store = store
        self.proxies = proxies

    def create(
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
        check_policy_name(name)
        policy = NetworkPolicy(
            name=name,
            allow=_hosts("--allow", _items(allow)),
            deny=_hosts("--deny", _items(deny)),
            allow_cidr=_cidrs(_items(allow_cidr)),
            allow_all=bool(allow_all),
            description=validate_description(description),
        )
        compile_policy(policy)
        with self.store.transaction(POLICY.records) as records:
            if name in records:
                raise POLICY.already_exists(name)
            now = utc_now()
            records[name] = _record(policy, created_at=now, updated_at=now)
            return _from_record(records[name])

    def update(
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
        check_policy_name(name)
        edits = {
            "allow": (allow, add_allow, remove_allow),
            "deny": (deny, add_deny, remove_deny),
            "allow_cidr": (allow_cidr, add_allow_cidr, remove_allow_cidr),
        }
        for key, (replace, add, remove) in edits.items():  # validate before taking the lock
            _check(key, replace)
            _check(key, add)
            _check(key, remove)
        new_description = None if description is None else validate_description(description)
        with self.store.transaction(POLICY.records) as records:
            if name not in records:
                raise POLICY.not_found(name)
            current = _from_record(records[name])
            updated = NetworkPolicy(
                name=name,
                allow=_edit("allow", current.allow, *edits["allow"]),
                deny=_edit("deny", current.deny, *edits["deny"]),
                allow_cidr=_edit("allow_cidr", current.allow_cidr, *edits["allow_cidr"]),
                allow_all=current.allow_all if allow_all is None else bool(allow_all),
                description=current.description if description is None else new_description,
            )
            compile_policy(updated)
            records[name] = _record(updated, created_at=current.created_at, updated_at=utc_now())
            saved = _from_record(records[name])
        return dataclasses.replace(saved, applied_to=self.proxies.push_update(POLICY, name))

    def get(self, name: str) -> NetworkPolicy:
        return read_policy(self.store, name)

    def list(self) -> list[NetworkPolicy]:
        return [_from_record(r) for _, r in sorted(self.store.read(POLICY.records).items())]

    def delete(self, name: str, *, force: bool = False) -> None:
        """Delete a policy. Refused while a devbox uses it, unless force."""
        self.get(name)
        devboxes = [] if force else self.proxies.devboxes_using(POLICY, name)
        if devboxes:
            raise POLICY.in_use(name, devboxes)
        with self.store.transaction(POLICY.records) as records:
            if name not in records:
                raise POLICY.not_found(name)
            del records[name]

    def check(self, name: str, url: str) -> PolicyCheck:
        """Dry run: would the proxy let this devbox reach `url` (or HOST[:PORT])? Decides on
        the name and, when the name is admitted and resolves here, on every address; a name
        refused on the name is not looked up, as the proxy never looks it up. The proxy's
        own addresses are not known here, so they are not checked."""
        return check_url(compile_policy(self.get(name)), url)


def _record(policy: NetworkPolicy, *, created_at: str, updated_at: str) -> dict[str, Any]:
    record = policy.to_json()
    record.update(created_at=created_at, updated_at=updated_at)
    return record
