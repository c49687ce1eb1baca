"""What the stop/start, snapshot and gc tests share: a store with a gateway bound to a
secret, a gateway call's proof of the credential the upstream got, the store's identity
and its snapshot images."""

from __future__ import annotations

import hashlib
import json

from tests.docker.conftest import Cli, docker


def with_gateway(cli: Cli, secret: str) -> Cli:
    """Gateway gw (the stand-in upstream) and secret KEY: bind them with P=gw:KEY."""
    cli("gateway", "create", "gw", "--endpoint", "https://api.anthropic.com",
        "--ca-cert", str(cli.infra.ca_pem))  # fmt: skip
    cli("secret", "create", "KEY", input=secret)
    return cli


def gateway_auth(cli: Cli, name: str) -> str:
    """The SHA-256 of the Authorization header the upstream got from a call to $P_URL."""
    proc = cli.sh(name, 'curl -sS -X POST "$P_URL/v1/messages" -H "Authorization: Bearer $P"')
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["auth_sha256"]


def bearer(secret: str) -> str:
    return hashlib.sha256(f"Bearer {secret}".encode()).hexdigest()


def store_id(cli: Cli) -> str:
    from devbox_cli.store import Store

    return Store.open(str(cli.home)).identity()


def snapshot_images(cli: Cli) -> list[str]:
    filters = ["--filter", "label=devbox.role=snapshot", "--filter",
               f"label=devbox.store={store_id(cli)}"]  # fmt: skip
    return docker("images", "-q", *filters).stdout.split()


def leftovers(cli: Cli, *names: str) -> list[str]:
    """Everything left of devboxes `names` (containers, networks, labelled volumes, the
    intermediate commit of a snapshot) and every snapshot image of the store."""
    found = [f"{kind} {ident}" for name in names for kind, ident in _of(name)]
    return found + [f"snapshot {ident}" for ident in snapshot_images(cli)]


def _of(name: str) -> list[tuple[str, str]]:
    from tests.docker.conftest import residue

    label = f"label=devbox.name={name}"
    out = [("container or network", ident) for ident in residue(name)]
    out += [("volume", v) for v in docker("volume", "ls", "-q", "--filter", label).stdout.split()]
    out += [("image", i) for i in docker("images", "-aq", "--filter", label).stdout.split()]
    return out
