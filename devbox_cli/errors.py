"""The small exception tree every entry point catches in one place.

A DevboxError carries a message naming the problem and a hint naming the next step.
Neither may ever contain a secret's value.
"""

from __future__ import annotations


class DevboxError(Exception):
    """A failure the user can act on. `exit_code` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"


class UsageError(DevboxError):
    """Bad input: an invalid name, URL, pattern or flag combination."""

    exit_code = 2


class NotFoundError(DevboxError):
    """A named secret, gateway, policy, devbox or image does not exist."""

    exit_code = 3


class ImageMissingError(NotFoundError):
    """An image a devbox needs is not in the engine; `ref` names it."""

    def __init__(self, message: str, hint: str | None = None, *, ref: str) -> None:
        super().__init__(message, hint)
        self.ref = ref


class ConflictError(DevboxError):
    """A name is taken, or the thing is still in use."""

    exit_code = 4


class StoreError(DevboxError):
    """The local store is unreadable, corrupted or locked by a wrong passphrase."""

    exit_code = 5


class DockerUnavailableError(DevboxError):
    """The Docker engine cannot be reached."""

    exit_code = 6


class DevboxRuntimeError(DevboxError):
    """Docker or the proxy failed while doing what was asked."""

    exit_code = 7
