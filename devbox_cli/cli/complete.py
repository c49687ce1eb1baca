"""Shell-completion callbacks for names (Typer's `autocompletion=`): each asks
services/completion.py, imported only when a shell asks for a completion."""

from __future__ import annotations


def _names(kind: str, incomplete: str) -> list[str]:
    from devbox_cli.services.completion import complete

    return complete(kind, incomplete)


def devboxes(incomplete: str) -> list[str]:
    return _names("devbox", incomplete)


def secrets(incomplete: str) -> list[str]:
    return _names("secret", incomplete)


def gateways(incomplete: str) -> list[str]:
    return _names("gateway", incomplete)


def policies(incomplete: str) -> list[str]:
    return _names("policy", incomplete)


def snapshots(incomplete: str) -> list[str]:
    return _names("snapshot", incomplete)


def volumes(incomplete: str) -> list[str]:
    return _names("volume", incomplete)
