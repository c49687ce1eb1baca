"""Every name rule of devbox, and the Docker names of a devbox, defined once.

`devbox exec` imports this module, so it uses the standard library only and no regex:
compiling one costs start-up time.
"""

from __future__ import annotations

from devbox_cli.errors import UsageError

BOX_PREFIX = "devbox-"
VOLUME_PREFIX = "devbox-vol-"
MAX_NAME = 63
MAX_SECRET_NAME = 128
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ALNUM = frozenset(_LETTERS + "0123456789")
_NAME_CHARS = _ALNUM | frozenset("_.-")
_ENV_FIRST = frozenset(_LETTERS + "_")
_ENV_REST = _ENV_FIRST | frozenset("0123456789")


def is_name(text: object) -> bool:
    """`[A-Za-z0-9][A-Za-z0-9_.-]{0,62}`: the name of a devbox, a gateway or a policy. Safe in a
    Docker object name and an Engine API path."""
    return (
        isinstance(text, str)
        and 0 < len(text) <= MAX_NAME
        and text[0] in _ALNUM
        and _NAME_CHARS.issuperset(text)
    )


def is_env_name(text: object) -> bool:
    """`[A-Za-z_][A-Za-z0-9_]*`: an environment variable (gateway prefixes, secret names)."""
    return (
        isinstance(text, str)
        and bool(text)
        and text[0] in _ENV_FIRST
        and _ENV_REST.issuperset(text)
    )


def check_devbox_name(name: str) -> str:
    if not is_name(name):
        raise UsageError(
            f"invalid devbox name {name!r}",
            "use 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit",
        )
    return name


def check_snapshot_name(name: str) -> str:
    return _check_name("snapshot", name, "before-refactor")


def check_gateway_name(name: str) -> str:
    return _check_name("gateway", name, "anthropic")


def check_policy_name(name: str) -> str:
    return _check_name("policy", name, "anthropic-only")


def _check_name(kind: str, name: str, example: str) -> str:
    if not is_name(name):
        raise UsageError(
            f"invalid {kind} name {name!r}: use letters, digits, '_', '.' and '-', "
            "starting with a letter or digit, at most 63 characters",
            f"for example: {example}",
        )
    return name


def check_secret_name(name: str) -> str:
    if not is_env_name(name) or len(name) > MAX_SECRET_NAME:
        raise UsageError(
            f"invalid secret name {name!r}: use an environment-variable name "
            f"([A-Za-z_][A-Za-z0-9_]*, at most {MAX_SECRET_NAME} characters)",
            "for example: ANTHROPIC_API_KEY",
        )
    return name


# The Docker objects of devbox NAME (docs/architecture.md); nothing else spells these names.


def box_container(name: str) -> str:
    return f"{BOX_PREFIX}{name}"


def proxy_container(name: str) -> str:
    return f"{BOX_PREFIX}{name}-proxy"


def box_network(name: str) -> str:
    return f"{BOX_PREFIX}{name}-net"


def check_volume_name(name: str) -> str:
    return _check_name("volume", name, "cache")


def volume_name(name: str) -> str:
    """The Docker volume behind devbox volume NAME: the prefix keeps a devbox volume apart
    from the engine's other volumes (a compose project's, say), so neither is mounted or
    deleted for the other."""
    return f"{VOLUME_PREFIX}{name}"


SNAPSHOT_REPO = "devbox-snapshot"


def snapshot_image(store: str, name: str) -> str:
    """The image of snapshot `name` of the store with identity `store`: each store has a
    namespace of its own (a repository path is lower-case hex, the name fits a tag)."""
    return f"{SNAPSHOT_REPO}/{store}:{name}"
