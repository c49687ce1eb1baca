"""The Python API: every operation the CLI offers, as methods on one Client.

    from devbox_cli import Client
    client = Client()                      # DEVBOX_HOME or the platform data dir
    client.create_secret("ANTHROPIC", value)
    client.create_gateway("anthropic", preset="anthropic")
    box = client.create_devbox("agent", gateways={"ANTHROPIC_API_KEY": ("anthropic", "ANTHROPIC")})
    result = client.exec(box.name, ["echo", "hi"])

Each group of operations lives in its own module; Client composes them.
"""

from __future__ import annotations

from devbox_cli.devboxes import DevboxesAPI
from devbox_cli.gateways import GatewaysAPI
from devbox_cli.policies import PoliciesAPI
from devbox_cli.secrets import SecretsAPI
from devbox_cli.store import Store


class Client(SecretsAPI, GatewaysAPI, PoliciesAPI, DevboxesAPI):
    def __init__(self, home: str | None = None, *, passphrase: str | None = None) -> None:
        self.store = Store.open(home, passphrase=passphrase)
