"""What the workspace, stop/start, snapshot, gc and working-day tests share: a store with a
gateway bound to a secret, a gateway call's proof of the credential the upstream got, the
store's identity and its snapshot images, and the hunts for a secret's bytes (in a host
tree, in a stream, in every part of `docker save`)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
from collections.abc import Iterable
from pathlib import Path

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


def grep_tree(root: Path, needle: bytes) -> list[str]:
    """Every regular file under `root` holding `needle` (symlinks are not followed)."""
    hits = []
    for top, _dirs, files in os.walk(root):
        for f in files:
            path = Path(top) / f
            if not path.is_symlink() and needle in path.read_bytes():
                hits.append(str(path))
    return hits


def found_in_stream(chunks: Iterable[bytes], needles: list[str]) -> tuple[set[str], int]:
    """The needles whose bytes occur in a stream read chunk by chunk (with an overlap, so a
    needle split across two chunks is found), and how many bytes it had."""
    wanted = [n.encode() for n in needles]
    longest = max(len(n) for n in wanted)
    hits: set[str] = set()
    tail, seen = b"", 0
    for chunk in chunks:
        window = tail + chunk
        hits |= {n.decode() for n in wanted if n in window}
        tail, seen = window[-longest:], seen + len(chunk)
    return hits, seen


def found_in_save(image: str, needles: list[str]) -> list[tuple[str, str]]:
    """Every (archive member, needle) where a needle's bytes occur in `docker save IMAGE`:
    layer tars, the image config, the manifest. Streamed, with an overlap across chunks."""
    hits = []
    proc = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
        for member in archive:
            stream = archive.extractfile(member) if member.isfile() else None
            if stream is None:
                continue
            found, _ = found_in_stream(iter(lambda s=stream: s.read(1 << 20), b""), needles)
            hits += [(member.name, n) for n in found]
    assert proc.wait(timeout=120) == 0
    return sorted(set(hits))
