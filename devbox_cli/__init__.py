"""devbox: run AI agents in Docker sandboxes that never hold a real credential.

    from devbox_cli import Client
    client = Client()
    client.create_secret("ANTHROPIC", "sk-...")

Imports are lazy so that `devbox exec` starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Client", "DevboxError", "__version__"]

if TYPE_CHECKING:
    from devbox_cli.client import Client
    from devbox_cli.errors import DevboxError


def __getattr__(name: str) -> Any:
    if name == "Client":
        from devbox_cli.client import Client

        return Client
    if name == "DevboxError":
        from devbox_cli.errors import DevboxError

        return DevboxError
    raise AttributeError(name)
