"""Sealed boxes and the private key's passphrase protection, with PyNaCl.

Values are sealed to a Curve25519 public key (nacl.public.SealedBox), so adding a secret
needs only the public key and opening one needs the private key. The private key may be
kept encrypted under a passphrase: a SecretBox key derived with Argon2id (nacl.pwhash),
whose salt and limits are stored beside the ciphertext so they can change later.

This module is pure: bytes and dicts in, bytes and dicts out. files.py owns the files.
"""

from __future__ import annotations

import base64
from typing import Any

from nacl import pwhash, utils
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.secret import SecretBox

KEY_FORMAT = 1
# Moderate limits: unlocking should take well under a second, on every `devbox create`.
OPSLIMIT = pwhash.argon2id.OPSLIMIT_INTERACTIVE
MEMLIMIT = pwhash.argon2id.MEMLIMIT_INTERACTIVE


class SealingError(Exception):
    """Sealed data or a key blob is malformed, or the passphrase does not open it.
    The message never contains key material or a plaintext."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise SealingError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise SealingError(f"{what} is not valid base64") from None


def new_private_key() -> PrivateKey:
    return PrivateKey.generate()


def public_key_from_text(text: str) -> PublicKey:
    raw = unb64(text.strip(), "the public key")
    if len(raw) != PublicKey.SIZE:
        raise SealingError("the public key has the wrong length")
    return PublicKey(raw)


def seal(public_key: PublicKey, plaintext: str) -> str:
    return b64(SealedBox(public_key).encrypt(plaintext.encode("utf-8")))


def unseal(private_key: PrivateKey, sealed: str) -> str:
    box = unb64(sealed, "a sealed value")
    try:
        return SealedBox(private_key).decrypt(box).decode("utf-8")
    except CryptoError:
        raise SealingError("a sealed value does not open with this store's private key") from None
    except UnicodeDecodeError:
        raise SealingError("a sealed value is not UTF-8 text") from None


def dump_private_key(key: PrivateKey, passphrase: str | None) -> dict[str, Any]:
    """The private key file's JSON: in the clear, or encrypted under `passphrase`."""
    raw = bytes(key)
    if not passphrase:
        return {"format": KEY_FORMAT, "protected": False, "key": b64(raw)}
    salt = utils.random(pwhash.argon2id.SALTBYTES)
    box = SecretBox(_derive(passphrase, salt, OPSLIMIT, MEMLIMIT))
    return {
        "format": KEY_FORMAT,
        "protected": True,
        "kdf": "argon2id",
        "salt": b64(salt),
        "opslimit": OPSLIMIT,
        "memlimit": MEMLIMIT,
        "key": b64(box.encrypt(raw)),
    }


def is_protected(blob: dict[str, Any]) -> bool:
    return bool(blob.get("protected"))


def load_private_key(blob: Any, passphrase: str | None) -> PrivateKey:
    """Raises SealingError on a malformed blob; PassphraseError on a missing/wrong passphrase."""
    if not isinstance(blob, dict) or blob.get("format") != KEY_FORMAT:
        raise SealingError(f"not a format-{KEY_FORMAT} devbox private key")
    data = unb64(blob.get("key"), "the private key")
    if is_protected(blob):
        if blob.get("kdf") != "argon2id":
            raise SealingError(f"unknown key derivation {blob.get('kdf')!r}")
        if not passphrase:
            raise PassphraseError("the private key is protected by a passphrase")
        salt = unb64(blob.get("salt"), "the key salt")
        ops, mem = blob.get("opslimit"), blob.get("memlimit")
        if not isinstance(ops, int) or not isinstance(mem, int):
            raise SealingError("the key's Argon2id limits are malformed")
        try:
            data = SecretBox(_derive(passphrase, salt, ops, mem)).decrypt(data)
        except CryptoError:
            raise PassphraseError("wrong passphrase for the private key") from None
    if len(data) != PrivateKey.SIZE:
        raise SealingError("the private key has the wrong length")
    return PrivateKey(data)


class PassphraseError(SealingError):
    """The private key is protected and the passphrase is missing or wrong."""


def _derive(passphrase: str, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    try:
        return pwhash.argon2id.kdf(
            SecretBox.KEY_SIZE,
            passphrase.encode("utf-8"),
            salt,
            opslimit=opslimit,
            memlimit=memlimit,
        )
    except (ValueError, TypeError, CryptoError):
        # a salt of the wrong size or limits outside libsodium's range: a hand-edited file
        raise SealingError("the key's Argon2id salt or limits are invalid") from None
