"""The config push's failure paths (devbox_cli/services/proxy_push.py), without Docker.

A proxy that takes its config is covered by the Docker-backed tests; what a real proxy never
does (echo a credential back, fail for one devbox of two) needs an engine that misbehaves on
cue. `Engine` below stands in for DockerBackend with the four methods the push uses; the
Client, its store and the config it builds are the real ones."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devbox_cli import Client
from devbox_cli.engine.views import (
    LABEL_GATEWAYS,
    LABEL_NAME,
    LABEL_POLICY,
    LABEL_ROLE,
    LABEL_STORE,
    Binding,
)
from devbox_cli.errors import DevboxRuntimeError
from devbox_cli.services.proxy_push import LOAD_CMD, push_config

SECRET = "sk-ant-real-value-0123456789abcdef"
ROTATED = "sk-ant-rotated-value-fedcba9876543210"
TOKEN = "gwt_tokentokentokentokentokentoken00"


class Engine:
    """Running devboxes that use gateway g with secret ANTHROPIC under prefix KEY; each
    proxy's `proxy.admin load` answers what `answers[proxy]` says (default: ok)."""

    def __init__(self, *boxes: str) -> None:
        self.boxes = boxes
        self.answers: dict[str, list[tuple[int, str]]] = {}
        self.proxy_state = "running"
        self.store = ""  # the devbox.store label of every box: set it to the client's store
        self.loads: list[tuple[str, list[str], bytes]] = []

    def containers(self, *labels: str) -> list[dict[str, Any]]:
        """The boxes whose labels match every filter (`key` or `key=value`), as Docker does."""

        def matches(have: dict[str, str], wanted: str) -> bool:
            key, _, value = wanted.partition("=")
            return key in have and (not value or have[key] == value)

        return [
            {"Labels": self._labels(b), "State": "running"}
            for b in self.boxes
            if all(matches(self._labels(b), wanted) for wanted in labels)
        ]

    def container(self, name: str) -> dict[str, Any] | None:
        """By name (devbox-B, devbox-B-proxy) or by a proxy's id (proxy-B)."""
        is_proxy = name.endswith("-proxy") or name.startswith("proxy-")
        box = name.removeprefix("devbox-").removesuffix("-proxy").removeprefix("proxy-")
        if box not in self.boxes:
            return None
        if is_proxy:
            return {"Id": f"proxy-{box}", "State": {"Status": self.proxy_state}}
        env = [f"KEY={TOKEN}", "KEY_URL=http://proxy:3128/gw/KEY"]
        return {"Id": box, "Config": {"Labels": self._labels(box), "Env": env}}

    def exec_with_stdin(self, proxy: str, cmd: list[str], data: bytes) -> tuple[int, str]:
        self.loads.append((proxy, cmd, data))
        queue = self.answers.get(proxy) or [(0, "ok\n")]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def _labels(self, box: str) -> dict[str, str]:
        gateways = json.dumps({"KEY": {"gateway": "g", "secret": "ANTHROPIC"}})
        return {
            LABEL_NAME: box,
            LABEL_ROLE: "box",
            LABEL_GATEWAYS: gateways,
            LABEL_POLICY: "",
            LABEL_STORE: self.store,
        }


@pytest.fixture
def client() -> Client:
    client = Client()
    client.create_secret("ANTHROPIC", SECRET)
    client.create_gateway("g", "https://api.anthropic.com", auth="bearer")
    return client


def config_for(client: Client, box: str = "b1"):
    return client.configs.build(box, [Binding("KEY", "g", "ANTHROPIC")], {"KEY": TOKEN}, None)


def test_an_answer_that_echoes_the_secret_is_shown_masked(client):
    engine = Engine("b1")
    engine.answers["proxy-b1"] = [(1, f"loading\nrejected: Bearer {SECRET} for {TOKEN}\n")]
    with pytest.raises(DevboxRuntimeError) as info:
        push_config(engine, "b1", "proxy-b1", config_for(client))  # type: ignore[arg-type]
    err = info.value
    assert err.exit_code == 7
    assert (
        err.message
        == "the proxy of devbox b1 did not take its config: rejected: Bearer *** for ***"
    )
    assert err.hint == "see `docker logs devbox-b1-proxy`"
    # the value travelled on stdin, never in the command line
    ((_, cmd, data),) = engine.loads
    assert cmd == LOAD_CMD and SECRET not in " ".join(cmd) and SECRET.encode() in data


def test_a_proxy_still_starting_is_retried_until_it_takes_the_config(client):
    engine = Engine("b1")
    engine.answers["proxy-b1"] = [(2, "not up yet"), (2, "not up yet"), (0, "ok")]
    push_config(engine, "b1", "proxy-b1", config_for(client))  # type: ignore[arg-type]
    assert len(engine.loads) == 3


def test_a_proxy_that_stopped_is_not_waited_for(client):
    engine = Engine("b1")
    engine.answers["proxy-b1"] = [(2, "admin socket gone")]
    engine.proxy_state = "exited"
    with pytest.raises(DevboxRuntimeError, match="admin socket gone"):
        push_config(engine, "b1", "proxy-b1", config_for(client))  # type: ignore[arg-type]
    assert len(engine.loads) == 1


def test_a_partial_update_is_saved_names_repair_and_exits_7(client):
    engine = Engine("b1", "b2")
    engine.answers["proxy-b2"] = [(1, f"error: refused {ROTATED}")]
    client._engine = engine  # type: ignore[assignment]
    engine.store = client.store.identity()
    with pytest.raises(DevboxRuntimeError) as info:
        client.update_secret("ANTHROPIC", ROTATED)
    err = info.value
    assert err.exit_code == 7
    assert err.message == (
        "secret ANTHROPIC was saved, but pushing it to running devboxes failed: could not "
        "update devbox(es) b2 (the proxy of devbox b2 did not take its config: "
        "error: refused ***)"
    )
    assert err.hint == "run `devbox repair b2` to hand it over"  # only the one that failed
    assert ROTATED not in str(err)
    # saved, and the devbox that could take it has it
    assert client.configs.secret_value("ANTHROPIC") == ROTATED
    pushed = {proxy: data for proxy, _, data in engine.loads}
    assert ROTATED.encode() in pushed["proxy-b1"] and SECRET.encode() not in pushed["proxy-b1"]


def test_an_update_that_reaches_every_devbox_names_them(client):
    engine = Engine("b1", "b2")
    client._engine = engine  # type: ignore[assignment]
    engine.store = client.store.identity()
    assert client.update_secret("ANTHROPIC", ROTATED).applied_to == ("b1", "b2")
    assert sorted(p for p, _, _ in engine.loads) == ["proxy-b1", "proxy-b2"]
