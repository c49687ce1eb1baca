"""A devbox's interception CA: made at `devbox create` when a gateway it binds intercepts
hosts, kept in the store (authorities.json, by devbox name; the private key sealed like a
secret, the certificate in the clear) and removed with the devbox.

The CA is name-constrained to the hosts its devbox's gateways named when it was made
(proxy/certs.py), so its key can impersonate nothing else, and only to that devbox, which
alone trusts it. Its key reaches the proxy inside the config and nothing else: never the
box, a label, an environment variable or a log. The X.509 itself is proxy/certs.py's, one
implementation for the CA here and the leaves the proxy mints with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from devbox_cli.engine.views import CAView
from devbox_cli.errors import StoreError
from devbox_cli.store import utc_now
from proxy.config import Authority

if TYPE_CHECKING:
    from devbox_cli.store import Store

RECORDS = "authorities"


@dataclass(frozen=True)
class DevboxCA:
    """A devbox's CA: the `hosts` (DNS names) it may vouch for, and its PEM pair (the key
    is hazmat: never print or return it to a user)."""

    devbox: str
    hosts: tuple[str, ...]
    authority: Authority = field(repr=False)
    created_at: str = ""

    def view(self) -> CAView:
        """What `devbox show` says of it: its fingerprint and hosts, never the key."""
        from proxy.certs import fingerprint  # ssl: only for a devbox that has a CA

        return CAView(fingerprint(self.authority.cert), self.hosts)


def new_ca(devbox: str, hosts: Iterable[str]) -> DevboxCA:
    """A fresh CA for `devbox`, constrained to `hosts` (DNS names)."""
    from proxy.certs import new_authority  # cryptography: only when a CA is made

    names = tuple(sorted(set(hosts)))
    return DevboxCA(devbox, names, new_authority(f"devbox {devbox} interception CA", names))


class Authorities:
    def __init__(self, store: Store) -> None:
        self.store = store

    def save(self, ca: DevboxCA) -> DevboxCA:
        """Keep `ca` for its devbox (a devbox made again under the name gets a new one)."""
        sealed = self.store.seal(ca.authority.key)
        now = utc_now()
        with self.store.transaction(RECORDS) as records:
            records[ca.devbox] = {
                "name": ca.devbox,
                "hosts": list(ca.hosts),
                "cert": ca.authority.cert,
                "sealed_key": sealed,
                "created_at": now,
                "updated_at": now,
            }
        return DevboxCA(ca.devbox, ca.hosts, ca.authority, now)

    def summary(self, devbox: str) -> DevboxCA | None:
        """The devbox's CA without its key (for `show`), or None."""
        record = self.store.read(RECORDS).get(devbox)
        if record is None:
            return None
        hosts, cert = self._fields(devbox, record)
        return DevboxCA(devbox, hosts, Authority(cert, ""), str(record.get("created_at", "")))

    def load(self, devbox: str) -> DevboxCA | None:
        """The devbox's CA with its key opened, or None when it has none."""
        record = self.store.read(RECORDS).get(devbox)
        if record is None:
            return None
        hosts, cert = self._fields(devbox, record)
        sealed = record.get("sealed_key")
        if not isinstance(sealed, str):
            raise self._malformed(devbox)
        try:
            key = self.store.unseal(sealed)
        except StoreError as exc:
            raise StoreError(f"the CA of devbox {devbox}: {exc.message}", exc.hint) from None
        return DevboxCA(devbox, hosts, Authority(cert, key), str(record.get("created_at", "")))

    def discard(self, ca: DevboxCA) -> None:
        """Remove `ca` after a create that failed, unless the record is another's by now
        (a concurrent create of the same name that won)."""
        with self.store.transaction(RECORDS) as records:
            record = records.get(ca.devbox)
            if record is not None and record.get("cert") == ca.authority.cert:
                del records[ca.devbox]

    def delete(self, devboxes: Iterable[str]) -> None:
        names = list(devboxes)
        if not names or not any(n in self.store.read(RECORDS) for n in names):
            return
        with self.store.transaction(RECORDS) as records:
            for name in names:
                records.pop(name, None)

    def _fields(self, devbox: str, record: dict[str, Any]) -> tuple[tuple[str, ...], str]:
        hosts, cert = record.get("hosts"), record.get("cert")
        if not isinstance(hosts, list) or not isinstance(cert, str):
            raise self._malformed(devbox)
        return tuple(str(h) for h in hosts), cert

    def _malformed(self, devbox: str) -> StoreError:
        return StoreError(
            f"{self.store.path(RECORDS)}: the CA of devbox {devbox} is malformed",
            f"recreate the devbox: `devbox delete {devbox}` then `devbox create`",
        )
