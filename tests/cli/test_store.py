"""The sealed local store: home resolution, modes, atomic locked writes, corruption, sealing
and the passphrase. Concurrency is tested with real `devbox` processes."""

from __future__ import annotations

import base64
import contextlib
import json
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from nacl import pwhash
from nacl.public import PrivateKey, SealedBox
from nacl.secret import SecretBox
from nacl.utils import random as nacl_random

from devbox_cli.errors import StoreError
from devbox_cli.store import KEY_FILE, Store, default_home, sealing
from devbox_cli.store.sealing import PassphraseError, SealingError
from tests.cli.support import run


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- home ----------------------------------------------------------------------------------


def test_home_argument_wins_over_environment(tmp_path, devbox_home):
    assert Store.open(tmp_path / "x").home == tmp_path / "x"
    assert Store.open().home == devbox_home


def test_home_defaults_to_xdg_then_local_share(monkeypatch, tmp_path):
    monkeypatch.delenv("DEVBOX_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_home() == tmp_path / "xdg" / "devbox"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert default_home() == tmp_path / "h" / ".local" / "share" / "devbox"


def test_home_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(StoreError, match="not a directory"):
        Store.open(tmp_path / "f")


def test_reading_creates_nothing(tmp_path):
    store = Store.open(tmp_path / "new")
    assert store.read("secrets") == {}
    assert not (tmp_path / "new").exists()


# -- files ---------------------------------------------------------------------------------


def test_modes_dir_0700_files_0600(tmp_path):
    home = tmp_path / "parent" / "home"
    store = Store.open(home)
    store.seal("x")
    with store.transaction("gateways") as records:
        records["g"] = {"name": "g"}
    assert mode(home) == 0o700
    files = sorted(p.name for p in home.iterdir())
    assert files == [".lock", "gateways.json", KEY_FILE]
    for p in home.iterdir():
        assert mode(p) == 0o600, p


def test_loose_home_directory_is_tightened(tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    with Store.open(home).transaction("secrets") as records:
        records["A"] = {"name": "A"}
    assert mode(home) == 0o700


def test_transaction_round_trip_and_envelope(tmp_path):
    store = Store.open(tmp_path)
    with store.transaction("policies") as records:
        records["p"] = {"name": "p", "allow": ["a.com"]}
    assert store.read("policies") == {"p": {"name": "p", "allow": ["a.com"]}}
    raw = json.loads((tmp_path / "policies.json").read_text())
    assert raw == {"format": 1, "records": {"p": {"name": "p", "allow": ["a.com"]}}}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_exception_inside_transaction_writes_nothing(tmp_path):
    store = Store.open(tmp_path)
    with store.transaction("secrets") as records:
        records["A"] = {"name": "A"}
    before = (tmp_path / "secrets.json").read_bytes()
    with pytest.raises(RuntimeError), store.transaction("secrets") as records:
        records["B"] = {"name": "B"}
        raise RuntimeError("boom")
    assert (tmp_path / "secrets.json").read_bytes() == before


def test_nested_transactions_do_not_deadlock(tmp_path):
    store = Store.open(tmp_path)
    with store.transaction("secrets") as secrets, store.transaction("gateways") as gateways:
        secrets["A"] = {"name": "A"}
        gateways["g"] = {"name": "g"}
    assert set(store.read("secrets")) == {"A"}
    assert set(store.read("gateways")) == {"g"}


def test_threads_in_one_process_serialize(tmp_path):
    store = Store.open(tmp_path)

    def add(i: int) -> None:
        with store.transaction("policies") as records:
            records[f"p{i}"] = {"name": f"p{i}"}

    threads = [threading.Thread(target=add, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.read("policies")) == 16


def test_unknown_kind_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError, match="unknown store kind"):
        Store.open(tmp_path).read("devboxes")


def test_twenty_concurrent_cli_writers_all_land(devbox_home):
    names = [f"S{i:02d}" for i in range(20)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "devbox_cli", "secret", "create", name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    # Every process is started and blocked reading its value; closing all stdins at once
    # releases them together, so their transactions really overlap.
    for proc, name in zip(procs, names, strict=True):
        proc.stdin.write(f"value-{name}\n")
        proc.stdin.flush()
    for proc in procs:
        proc.stdin.close()
    for proc in procs:
        proc.wait(timeout=120)
    results = [(proc.stdout.read(), proc.stderr.read()) for proc in procs]
    for proc in procs:
        proc.stdout.close()
        proc.stderr.close()
    assert [p.returncode for p in procs] == [0] * 20, results
    store = Store.open(devbox_home)
    assert sorted(store.read("secrets")) == names
    # one keypair was made, not one per racing process: every value opens
    assert {store.unseal(r["sealed"]) for r in store.read("secrets").values()} == {
        f"value-{n}" for n in names
    }


# -- corruption ----------------------------------------------------------------------------

BROKEN = [
    ("not json", "{ this is not json", "not valid JSON"),
    ("truncated", '{"format": 1, "records": {"A": ', "not valid JSON"),
    ("binary", b"\xff\xfe\x00garbage", "not UTF-8"),
    ("a list", "[]", "top level is not an object"),
    ("null", "null", "top level is not an object"),
    ("no format", '{"records": {}}', '"format": 1'),
    ("records not object", '{"format": 1, "records": []}', '"records" is not an object'),
    ("record not object", '{"format": 1, "records": {"A": 3}}', "record 'A' is not an object"),
    ("name mismatch", '{"format": 1, "records": {"A": {"name": "B"}}}', "different"),
]


@pytest.mark.parametrize(("label", "content", "message"), BROKEN, ids=[b[0] for b in BROKEN])
def test_corrupted_file_is_named_and_never_overwritten(tmp_path, label, content, message):
    path = tmp_path / "secrets.json"
    data = content if isinstance(content, bytes) else content.encode()
    path.write_bytes(data)
    store = Store.open(tmp_path)
    with pytest.raises(StoreError) as err:
        store.read("secrets")
    assert str(path) in err.value.message
    assert message in err.value.message
    assert "will not overwrite" in err.value.hint
    with pytest.raises(StoreError), store.transaction("secrets") as records:
        records["X"] = {"name": "X"}
    assert path.read_bytes() == data


def test_corrupted_file_via_cli_exit_5_and_unchanged(devbox_home):
    path = devbox_home / "secrets.json"
    path.write_text('{"format": 1, "records": {oops}')
    proc = run("secret", "create", "NEW", stdin="value-xyz\n")
    assert proc.returncode == 5
    assert str(path) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert 1 <= len(proc.stderr.strip().splitlines()) <= 2, proc.stderr
    assert path.read_text() == '{"format": 1, "records": {oops}'
    assert run("secret", "list").returncode == 5


def test_debug_mode_shows_the_traceback(devbox_home):
    (devbox_home / "secrets.json").write_text("[")
    proc = run("secret", "list", env={"DEVBOX_DEBUG": "1"})
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr
    assert "StoreError" in proc.stderr


# -- sealing and the key -------------------------------------------------------------------


def test_seal_and_unseal_round_trip(tmp_path):
    store = Store.open(tmp_path)
    sealed = store.seal("sk-round-trip-ü")
    assert "sk-round-trip" not in sealed
    assert store.seal("sk-round-trip-ü") != sealed  # sealed boxes are randomized
    assert Store.open(tmp_path).unseal(sealed) == "sk-round-trip-ü"


def test_value_sealed_in_another_store_does_not_open(tmp_path):
    sealed = Store.open(tmp_path / "a").seal("v")
    other = Store.open(tmp_path / "b")
    other.seal("make a key")
    with pytest.raises(StoreError, match="cannot open a sealed value"):
        other.unseal(sealed)


def test_unseal_without_any_key_says_so(tmp_path):
    with pytest.raises(StoreError, match="no key"):
        Store.open(tmp_path).unseal("AAAA")


def test_key_file_holds_no_plaintext_private_key_when_protected(tmp_path):
    store = Store.open(tmp_path, passphrase="correct horse")
    sealed = store.seal("v")
    key = json.loads((tmp_path / KEY_FILE).read_text())
    assert key["private"]["protected"] is True
    assert key["private"]["kdf"] == "argon2id"
    assert {"salt", "opslimit", "memlimit", "key"} <= set(key["private"])
    assert Store.open(tmp_path, passphrase="correct horse").unseal(sealed) == "v"


def test_passphrase_from_environment_at_key_creation(tmp_path, monkeypatch):
    monkeypatch.setenv("DEVBOX_PASSPHRASE", "from-env")
    sealed = Store.open(tmp_path).seal("v")
    monkeypatch.delenv("DEVBOX_PASSPHRASE")
    assert Store.open(tmp_path).key_protected()
    with pytest.raises(StoreError, match="protected by a passphrase") as err:
        Store.open(tmp_path).unseal(sealed)
    assert "DEVBOX_PASSPHRASE" in err.value.hint
    assert Store.open(tmp_path, passphrase="from-env").unseal(sealed) == "v"


def test_wrong_passphrase_is_a_clear_error(tmp_path):
    sealed = Store.open(tmp_path, passphrase="right").seal("v")
    with pytest.raises(StoreError, match="wrong passphrase") as err:
        Store.open(tmp_path, passphrase="wrong").unseal(sealed)
    assert "right" not in str(err.value)


def test_sealing_needs_no_passphrase(tmp_path):
    Store.open(tmp_path, passphrase="p").seal("first")
    sealed = Store.open(tmp_path).seal("second")  # no passphrase known here
    assert Store.open(tmp_path, passphrase="p").unseal(sealed) == "second"


def test_prompt_is_asked_only_when_needed(tmp_path):
    sealed = Store.open(tmp_path, passphrase="p").seal("v")
    store = Store.open(tmp_path)
    asked = []
    store.prompt = lambda: asked.append(1) or "p"
    store.seal("no prompt for sealing")
    assert asked == []
    assert store.unseal(sealed) == "v"
    assert asked == [1]


def test_set_change_and_remove_passphrase(tmp_path):
    store = Store.open(tmp_path)
    sealed = store.seal("v")
    store.set_passphrase("one")
    assert Store.open(tmp_path).key_protected()
    with pytest.raises(StoreError, match="protected"):
        Store.open(tmp_path).unseal(sealed)
    Store.open(tmp_path, passphrase="one").set_passphrase("two")
    with pytest.raises(StoreError, match="wrong passphrase"):
        Store.open(tmp_path, passphrase="one").unseal(sealed)
    assert Store.open(tmp_path, passphrase="two").unseal(sealed) == "v"
    Store.open(tmp_path, passphrase="two").set_passphrase(None)
    assert not Store.open(tmp_path).key_protected()
    assert Store.open(tmp_path).unseal(sealed) == "v"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not valid JSON"),
        ('{"format": 1, "public": "AAAA", "private": {}}', "public key"),
        ('{"format": 1, "public": 3, "private": {}}', "public key"),
    ],
)
def test_corrupted_key_file_is_refused_and_kept(tmp_path, content, message):
    (tmp_path / KEY_FILE).write_text(content)
    with pytest.raises(StoreError, match=message) as err:
        Store.open(tmp_path).seal("v")
    assert KEY_FILE in str(err.value)
    assert (tmp_path / KEY_FILE).read_text() == content


def test_corrupted_private_key_is_refused(tmp_path):
    store = Store.open(tmp_path)
    sealed = store.seal("v")
    key = json.loads((tmp_path / KEY_FILE).read_text())
    key["private"]["key"] = "not base64 !!"
    (tmp_path / KEY_FILE).write_text(json.dumps(key))
    with pytest.raises(StoreError, match="not a usable devbox key"):
        Store.open(tmp_path).unseal(sealed)


def test_missing_key_with_sealed_secrets_is_not_replaced(tmp_path):
    store = Store.open(tmp_path)
    with store.transaction("secrets") as records:
        records["A"] = {"name": "A", "sealed": store.seal("v")}
    (tmp_path / KEY_FILE).unlink()
    with pytest.raises(StoreError, match="missing"):
        Store.open(tmp_path).seal("w")
    assert not (tmp_path / KEY_FILE).exists()


def test_store_repr_carries_no_passphrase(tmp_path):
    store = Store.open(tmp_path, passphrase="hunter2-passphrase")
    assert "hunter2" not in repr(store)


# -- the sealing module itself (pure: bytes and dicts in and out) -------------------------


@contextlib.contextmanager
def fails_with(kind: type[Exception], message: str) -> Iterator[None]:
    """The error a user is shown, word for word."""
    with pytest.raises(kind) as err:
        yield
    assert str(err.value) == message


def _fast_blob(private: PrivateKey, passphrase: str, **override: object) -> dict:
    """A protected key blob made independently of sealing.py, with the cheapest Argon2id
    limits: a key stored with limits other than today's must still open."""
    salt = nacl_random(pwhash.argon2id.SALTBYTES)
    ops, mem = pwhash.argon2id.OPSLIMIT_MIN, pwhash.argon2id.MEMLIMIT_MIN
    box_key = pwhash.argon2id.kdf(
        SecretBox.KEY_SIZE, passphrase.encode(), salt, opslimit=ops, memlimit=mem
    )
    blob = {
        "format": 1,
        "protected": True,
        "kdf": "argon2id",
        "salt": base64.b64encode(salt).decode(),
        "opslimit": ops,
        "memlimit": mem,
        "key": base64.b64encode(SecretBox(box_key).encrypt(bytes(private))).decode(),
    }
    return {**blob, **override}


def test_base64_fields_are_strict():
    assert sealing.unb64(sealing.b64(b"\x00\xffkey"), "x") == b"\x00\xffkey"
    for bad in (None, 3, b"QUJD"):
        with fails_with(SealingError, "the salt is not a base64 string"):
            sealing.unb64(bad, "the salt")
    for bad in ("QUJD!", "QUJ", "QU JD", "é"):  # junk is refused, not skipped
        with fails_with(SealingError, "the salt is not valid base64"):
            sealing.unb64(bad, "the salt")


def test_public_key_text_is_checked():
    key = PrivateKey.generate().public_key
    text = f"  {base64.b64encode(bytes(key)).decode()}\n"
    assert bytes(sealing.public_key_from_text(text)) == bytes(key)
    with fails_with(SealingError, "the public key has the wrong length"):
        sealing.public_key_from_text("AAAA")
    with fails_with(SealingError, "the public key is not valid base64"):
        sealing.public_key_from_text("not a key")


def test_unseal_names_what_is_wrong_with_a_sealed_value():
    key = PrivateKey.generate()
    assert sealing.unseal(key, sealing.seal(key.public_key, "sk-ü-€")) == "sk-ü-€"
    other = sealing.seal(PrivateKey.generate().public_key, "v")
    with fails_with(SealingError, "a sealed value does not open with this store's private key"):
        sealing.unseal(key, other)
    not_text = base64.b64encode(SealedBox(key.public_key).encrypt(b"\xff\xfe")).decode()
    with fails_with(SealingError, "a sealed value is not UTF-8 text"):
        sealing.unseal(key, not_text)
    with fails_with(SealingError, "a sealed value is not valid base64"):
        sealing.unseal(key, "%%%")


@pytest.mark.parametrize("passphrase", [None, ""])
def test_key_without_passphrase_is_stored_in_the_clear(passphrase):
    key = PrivateKey.generate()
    blob = sealing.dump_private_key(key, passphrase)
    assert blob == {"format": 1, "protected": False, "key": base64.b64encode(bytes(key)).decode()}
    assert not sealing.is_protected(blob)
    assert bytes(sealing.load_private_key(blob, None)) == bytes(key)
    assert bytes(sealing.load_private_key(blob, "ignored")) == bytes(key)


def test_key_under_passphrase_is_encrypted_with_its_parameters_beside_it():
    key = PrivateKey.generate()
    blob = sealing.dump_private_key(key, "pass phrase")
    assert sealing.is_protected(blob)
    assert blob["protected"] is True
    assert blob["kdf"] == "argon2id"
    assert blob["opslimit"] == pwhash.argon2id.OPSLIMIT_INTERACTIVE
    assert blob["memlimit"] == pwhash.argon2id.MEMLIMIT_INTERACTIVE
    assert len(base64.b64decode(blob["salt"])) == pwhash.argon2id.SALTBYTES
    assert base64.b64encode(bytes(key)).decode() not in json.dumps(blob)
    # an independent reading of the blob: Argon2id with the stored salt and limits
    box_key = pwhash.argon2id.kdf(
        SecretBox.KEY_SIZE,
        b"pass phrase",
        base64.b64decode(blob["salt"]),
        opslimit=blob["opslimit"],
        memlimit=blob["memlimit"],
    )
    assert SecretBox(box_key).decrypt(base64.b64decode(blob["key"])) == bytes(key)
    assert bytes(sealing.load_private_key(blob, "pass phrase")) == bytes(key)


def test_key_stored_with_other_limits_opens_with_them():
    key = PrivateKey.generate()
    blob = _fast_blob(key, "p-ü")
    assert sealing.is_protected(blob)
    assert bytes(sealing.load_private_key(blob, "p-ü")) == bytes(key)
    with fails_with(PassphraseError, "wrong passphrase for the private key"):
        sealing.load_private_key(blob, "p-u")
    for missing in (None, ""):
        with fails_with(PassphraseError, "the private key is protected by a passphrase"):
            sealing.load_private_key(blob, missing)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"kdf": "scrypt"}, "unknown key derivation 'scrypt'"),
        ({"kdf": None}, "unknown key derivation None"),
        ({"salt": None}, "the key salt is not a base64 string"),
        ({"salt": "AAAA"}, "the key's Argon2id salt or limits are invalid"),
        ({"opslimit": 0}, "the key's Argon2id salt or limits are invalid"),
        ({"opslimit": "1"}, "the key's Argon2id limits are malformed"),
        ({"memlimit": "8192"}, "the key's Argon2id limits are malformed"),
        ({"memlimit": None}, "the key's Argon2id limits are malformed"),
        ({"key": 7}, "the private key is not a base64 string"),
        ({"format": 2}, "not a format-1 devbox private key"),
        ({"format": None}, "not a format-1 devbox private key"),
    ],
)
def test_malformed_protected_key_is_named_never_a_passphrase_problem(override, message):
    blob = _fast_blob(PrivateKey.generate(), "p", **override)
    with pytest.raises(SealingError) as err:
        sealing.load_private_key(blob, "p")
    assert str(err.value) == message
    assert not isinstance(err.value, PassphraseError)


def test_private_key_of_the_wrong_length_is_refused():
    short = {"format": 1, "protected": False, "key": base64.b64encode(b"\x01" * 31).decode()}
    with fails_with(SealingError, "the private key has the wrong length"):
        sealing.load_private_key(short, None)
    for blob in ("key", ["format", 1], None):
        with fails_with(SealingError, "not a format-1 devbox private key"):
            sealing.load_private_key(blob, None)
