"""The local store under DEVBOX_HOME: one JSON file per kind of record, plus the key.

    home/               0700
      .lock             fcntl lock serializing every write (one lock for the whole store,
                        so a transaction may read another kind consistently)
      secrets.json      {"format": 1, "records": {NAME: {name, sealed, created_at, updated_at}}}
      gateways.json     same envelope, gateway configs
      policies.json     same envelope, network policies
      authorities.json  same envelope, one interception CA per devbox (by devbox name): its
                        certificate, and its private key sealed like a secret
      key.json          {"format": 1, "public": b64, "private": {...}}: the Curve25519 keypair;
                        the private half in the clear or encrypted under a passphrase
      proxies/          the push ledger (devbox_cli/home.py), no secrets: which start of each
                        proxy container took its config

Every file is 0600 and written atomically (temp file in the same directory, fsync, rename,
fsync of the directory). A file that does not parse, or parses to the wrong shape, raises
StoreError naming it and is never overwritten. Readers take no lock: a rename is atomic.

The keypair is made on first use. If a passphrase is known at that moment (the `passphrase`
argument or DEVBOX_PASSPHRASE) the private key is stored encrypted under it; `set_passphrase`
adds, changes or removes the protection later. Sealing needs only the public key.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devbox_cli.errors import StoreError
from devbox_cli.home import home_dir
from devbox_cli.store import sealing

KINDS = ("secrets", "gateways", "policies", "authorities")
FILE_FORMAT = 1
KEY_FILE = "key.json"
LOCK_FILE = ".lock"
PASSPHRASE_ENV = "DEVBOX_PASSPHRASE"  # noqa: S105 (a variable name, not a password)
_MISSING: Any = object()  # a file that does not exist, as opposed to one holding `null`


def default_home() -> Path:
    """$DEVBOX_HOME, else $XDG_DATA_HOME/devbox, else ~/.local/share/devbox."""
    return Path(home_dir())


def utc_now() -> str:
    """An ISO 8601 UTC timestamp, the form every record's created_at/updated_at uses."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Store:
    def __init__(self, home: Path, *, passphrase: str | None = None) -> None:
        self.home = home
        self._passphrase = passphrase or None
        # Called for the passphrase when the key is protected and none was given; the CLI
        # sets it to a hidden prompt when stdin is a terminal. The core never prompts.
        self.prompt: Callable[[], str] | None = None
        self._public: Any = None
        self._private: Any = None
        self._mutex = threading.RLock()
        self._lock_depth = 0
        self._lock_fd: int | None = None

    @classmethod
    def open(
        cls, home: str | os.PathLike[str] | None = None, *, passphrase: str | None = None
    ) -> Store:
        path = Path(home).expanduser() if home else default_home()
        if path.exists() and not path.is_dir():
            raise StoreError(f"{path} is not a directory", "point DEVBOX_HOME at a directory")
        return cls(path.absolute(), passphrase=passphrase)

    def __repr__(self) -> str:
        return f"Store(home={str(self.home)!r})"

    def path(self, kind: str) -> Path:
        if kind not in KINDS:
            raise ValueError(f"unknown store kind {kind!r}; expected one of {KINDS}")
        return self.home / f"{kind}.json"

    # -- records ---------------------------------------------------------------------------

    def read(self, kind: str) -> dict[str, dict[str, Any]]:
        """All records of `kind` by name; {} when the file does not exist yet."""
        path = self.path(kind)
        raw = self._read_json(path)
        if raw is _MISSING:
            return {}
        return _records(raw, path, kind)

    @contextlib.contextmanager
    def transaction(self, kind: str) -> Iterator[dict[str, dict[str, Any]]]:
        """Lock the store, load `kind`, yield the mutable dict, write it back on a clean exit.
        An exception inside the block leaves the file untouched."""
        path = self.path(kind)
        with self.lock():
            records = self.read(kind)
            before = copy.deepcopy(records)
            yield records
            if records != before:
                self._write_json(path, {"format": FILE_FORMAT, "records": records})

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """The store-wide write lock; re-entrant within a process (nested transactions)."""
        with self._mutex:
            if self._lock_depth == 0:
                self._ensure_home()
                fd = os.open(self.home / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
                self._lock_fd = fd
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0 and self._lock_fd is not None:
                    fd, self._lock_fd = self._lock_fd, None
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)

    # -- sealing ---------------------------------------------------------------------------

    def seal(self, plaintext: str) -> str:
        """Seal to the store's public key (made on first use); no passphrase needed."""
        return sealing.seal(self._public_key_in_use(), plaintext)

    def identity(self) -> str:
        """A public fingerprint of this store (of its public key, made on first use). The
        devboxes it makes carry it, so that no other store pushes its credentials to them."""
        return hashlib.sha256(bytes(self._public_key_in_use())).hexdigest()[:16]

    def _public_key_in_use(self) -> Any:
        if self._public is None:
            key = self._read_json(self.home / KEY_FILE)
            if key is _MISSING:
                key = self._create_key()
            self._public = self._public_key(key)
        return self._public

    def unseal(self, sealed: str) -> str:
        """Open a sealed value with the private key; may need the passphrase."""
        private = self._private_key()
        try:
            return sealing.unseal(private, sealed)
        except sealing.SealingError as exc:
            raise StoreError(
                f"cannot open a sealed value: {exc}",
                f"the record was sealed with another key than {self.home / KEY_FILE}; "
                "recreate the secret with `devbox secret update NAME`",
            ) from None

    def unlock(self) -> None:
        """Open the private key now, asking for the passphrase if it is protected, and keep
        it in memory only: a long-running command (`devbox watch`) asks once. A store with
        no key yet has nothing to open."""
        if (self.home / KEY_FILE).exists():
            self._private_key()

    def key_protected(self) -> bool:
        """Whether the private key is stored encrypted under a passphrase."""
        key = self._read_json(self.home / KEY_FILE)
        return key is not _MISSING and sealing.is_protected(self._key_blob(key))

    def set_passphrase(self, new: str | None) -> None:
        """Protect the private key with `new`, or store it in the clear when `new` is empty.
        Unlocking the current key may need the current passphrase."""
        path = self.home / KEY_FILE
        with self.lock():
            key = self._read_json(path)
            if key is _MISSING:
                key = self._create_key(passphrase=new or None)
            else:
                private = self._private_key()
                key = dict(key, private=sealing.dump_private_key(private, new or None))
                self._write_json(path, key)
            self._passphrase = new or None
            self._private = None

    def _create_key(self, passphrase: str | None = None) -> dict[str, Any]:
        path = self.home / KEY_FILE
        with self.lock():
            existing = self._read_json(path)
            if existing is not _MISSING:  # another process made it while we waited for the lock
                return existing
            if self.read("secrets"):
                raise StoreError(
                    f"{path} is missing but secrets.json holds sealed secrets",
                    f"restore {path} from a backup; without it those secrets cannot be opened",
                )
            private = sealing.new_private_key()
            phrase = passphrase or self._passphrase or os.environ.get(PASSPHRASE_ENV) or None
            key = {
                "format": sealing.KEY_FORMAT,
                "public": sealing.b64(bytes(private.public_key)),
                "private": sealing.dump_private_key(private, phrase),
            }
            self._write_json(path, key)
            return key

    def _public_key(self, key: dict[str, Any]) -> Any:
        try:
            return sealing.public_key_from_text(key.get("public"))
        except (sealing.SealingError, AttributeError) as exc:
            raise self._bad_key(f"its public key is unusable ({exc})") from None

    def _key_blob(self, key: Any) -> dict[str, Any]:
        blob = key.get("private") if isinstance(key, dict) else None
        if not isinstance(blob, dict):
            raise self._bad_key("it has no private key")
        return blob

    def _private_key(self) -> Any:
        if self._private is not None:
            return self._private
        path = self.home / KEY_FILE
        key = self._read_json(path)
        if key is _MISSING:
            raise StoreError(
                f"no key at {path}: nothing has been sealed in this store",
                "create a secret first with `devbox secret create NAME`",
            )
        blob = self._key_blob(key)
        phrase = self._passphrase or os.environ.get(PASSPHRASE_ENV) or None
        if phrase is None and sealing.is_protected(blob) and self.prompt is not None:
            phrase = self.prompt() or None
        try:
            self._private = sealing.load_private_key(blob, phrase)
        except sealing.PassphraseError as exc:
            hint = (
                f"set {PASSPHRASE_ENV}, or run the command on a terminal to be asked for it"
                if phrase is None
                else f"check {PASSPHRASE_ENV} (or what you typed) and try again"
            )
            raise StoreError(f"{exc} ({path})", hint) from None
        except sealing.SealingError as exc:
            raise self._bad_key(str(exc)) from None
        return self._private

    def _bad_key(self, why: str) -> StoreError:
        path = self.home / KEY_FILE
        return StoreError(
            f"{path} is not a usable devbox key: {why}",
            f"restore {path} from a backup; devbox will not overwrite it",
        )

    # -- files -----------------------------------------------------------------------------

    def _ensure_home(self) -> None:
        try:
            self.home.parent.mkdir(parents=True, exist_ok=True)
            self.home.mkdir(mode=0o700, exist_ok=True)
            if self.home.stat().st_mode & 0o077:
                self.home.chmod(0o700)
        except OSError as exc:
            raise StoreError(
                f"cannot create the store directory {self.home}: {exc.strerror}",
                "point DEVBOX_HOME at a writable directory",
            ) from None

    def _read_json(self, path: Path) -> Any:
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            return _MISSING
        except OSError as exc:
            raise StoreError(
                f"cannot read {path}: {exc.strerror}", "check the file's owner and mode"
            ) from None
        try:
            return json.loads(text.decode("utf-8"))
        except UnicodeDecodeError:
            problem = "it is not UTF-8 text"
        except json.JSONDecodeError as exc:
            problem = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        raise StoreError(f"{path} is not valid JSON: {problem}", _fix_hint(path))

    def _write_json(self, path: Path, data: Any) -> None:
        self._ensure_home()
        body = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")
        fd, tmp = tempfile.mkstemp(dir=self.home, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.home, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _records(raw: Any, path: Path, kind: str) -> dict[str, dict[str, Any]]:
    def bad(why: str) -> StoreError:
        return StoreError(f"{path} is not a devbox {kind} file: {why}", _fix_hint(path))

    if not isinstance(raw, dict):
        raise bad("the top level is not an object")
    if raw.get("format") != FILE_FORMAT:
        raise bad(f'expected "format": {FILE_FORMAT}')
    records = raw.get("records")
    if not isinstance(records, dict):
        raise bad('"records" is not an object')
    for name, record in records.items():
        if not isinstance(record, dict):
            raise bad(f"record {name!r} is not an object")
        if record.get("name") != name:
            raise bad(f'record {name!r} has a different "name" field')
    return records


def _fix_hint(path: Path) -> str:
    return (
        f"fix it by hand or restore it from a backup (or move it aside: mv {path} {path}.bad); "
        "devbox will not overwrite it"
    )
