"""The aiohttp the proxy is tested with, and the private parts of it the proxy relies on.

The proxy subclasses aiohttp's RequestHandler (head deadline, head-size cap, connection cap)
and takes connections over for CONNECT tunnels; both reach into attributes aiohttp does not
promise to keep. The package and the proxy image pin aiohttp to AIOHTTP_RANGE, and
`check()` runs when the proxy starts, so an aiohttp that moved them fails loudly at start-up
instead of quietly losing a limit.

cryptography (the interception CA's leaf certificates, proxy/certs.py) is pinned the same
way; its range is checked from the installed metadata, without importing it at start-up.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import re
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

# One definition: pyproject.toml and proxy/requirements.txt carry this exact spec (a test
# holds them to it).
AIOHTTP_RANGE = (3, 14, 5), (3, 15)
AIOHTTP_SPEC = "aiohttp>=3.14.5,<3.15"
CRYPTOGRAPHY_RANGE = (44,), (51,)
CRYPTOGRAPHY_SPEC = "cryptography>=44,<51"

# RequestHandler attributes used by proxy.server.LimitedProtocol, proxy.tunnel and
# proxy.intercept.
HANDLER_ATTRS = (
    "_manager",
    "_loop",
    "_request_count",
    "_messages",
    "_message_tail",
    "_payload_parser",
    "_upgraded",
    "_current_request",
    "_request_in_progress",
)
# web.Server attributes used by proxy.server.LimitedServer to make its own protocol objects.
SERVER_ATTRS = ("_loop", "_kwargs")
# The signature proxy.pinning.PinnedConnector overrides (the gateway's connect-time pin).
CONNECT_PARAMS = ("self", "req", "traces", "timeout")


def _version(text: str) -> tuple[int, ...]:
    """'3.14.5' -> (3, 14, 5); a pre-release counts as its release ('3.15.0a1' -> (3, 15, 0))."""
    return tuple(int(n) for n in re.findall(r"\d+", text)[:3])


def problems(server: web.Server | None = None) -> list[str]:
    """What is missing or out of range in the installed aiohttp; empty when all is well."""
    found: list[str] = []
    low, high = AIOHTTP_RANGE
    version = _version(aiohttp.__version__)
    if not low <= version < high:
        found.append(f"aiohttp {aiohttp.__version__} is outside the tested range {AIOHTTP_SPEC}")
    try:
        crypto = importlib.metadata.version("cryptography")
    except importlib.metadata.PackageNotFoundError:
        found.append(f"cryptography is not installed ({CRYPTOGRAPHY_SPEC})")
    else:
        low, high = CRYPTOGRAPHY_RANGE
        if not low <= _version(crypto) < high:
            found.append(f"cryptography {crypto} is outside the tested range {CRYPTOGRAPHY_SPEC}")
    slots: set[str] = set()
    for klass in RequestHandler.__mro__:
        slots.update(getattr(klass, "__slots__", ()))
    found += [f"RequestHandler.{name}" for name in HANDLER_ATTRS if name not in slots]
    connect = tuple(inspect.signature(aiohttp.TCPConnector.connect).parameters)
    if connect != CONNECT_PARAMS:
        found.append(f"TCPConnector.connect{connect}")
    if server is not None:
        attrs: dict[str, Any] = vars(server)
        found += [f"web.Server.{name}" for name in SERVER_ATTRS if name not in attrs]
    return found


def check(server: web.Server | None = None) -> None:
    """Raise RuntimeError naming every private aiohttp part that is missing."""
    found = problems(server)
    if found:
        raise RuntimeError(
            "this proxy relies on aiohttp internals that changed: "
            + ", ".join(found)
            + f" (install {AIOHTTP_SPEC} {CRYPTOGRAPHY_SPEC})"
        )
