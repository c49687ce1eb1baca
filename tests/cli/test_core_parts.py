"""Pure parts of the core without Docker: the name rules (names.py), the box's bindings and
environment (services/box_env.py), the rollback of a half-made devbox and what a create
plan shows of itself (engine/topology.py, services/create.py)."""

from __future__ import annotations

import threading

import pytest

from devbox_cli import names
from devbox_cli.engine.limits import BoxLimits
from devbox_cli.engine.topology import Rollback
from devbox_cli.engine.views import Binding
from devbox_cli.errors import DevboxRuntimeError, UsageError
from devbox_cli.services.box_env import box_environment, parse_gateway_specs, to_bindings
from devbox_cli.services.create import CreatePlan
from devbox_cli.services.kinds import ResourceKind
from proxy.config import Auth, GatewayBinding, ProxyConfig

SECRET = "sk-live-do-not-show-0123456789"


@pytest.mark.parametrize("name", ["a", "A-1", "x.y_z", "9" * 63])
def test_one_name_rule_for_devboxes_gateways_and_policies(name):
    assert names.is_name(name)
    assert names.check_devbox_name(name) == names.check_gateway_name(name) == name
    assert names.check_policy_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", ".a", "_a", "a b", "a/b", "ü", "x" * 64, "a\n", 7])
def test_names_the_rule_refuses(name):
    assert not names.is_name(name)
    for check in (names.check_devbox_name, names.check_gateway_name, names.check_policy_name):
        with pytest.raises(UsageError, match=r"invalid (devbox|gateway|policy) name"):
            check(name)


@pytest.mark.parametrize(
    ("name", "ok"),
    [("A", True), ("_x1", True), ("a_B_9", True), ("1A", False), ("A-B", False), ("", False)],
)
def test_env_names(name, ok):
    assert names.is_env_name(name) is ok


def test_the_docker_names_of_a_devbox():
    assert (names.box_container("b"), names.proxy_container("b"), names.box_network("b")) == (
        "devbox-b",
        "devbox-b-proxy",
        "devbox-b-net",
    )


def test_a_gateway_prefix_given_twice_is_refused_by_the_library():
    assert parse_gateway_specs(["A=g:S", "B=h:T"]) == {"A": ("g", "S"), "B": ("h", "T")}
    with pytest.raises(UsageError, match="prefix A is given twice"):
        parse_gateway_specs(["A=g:S", "A=h:T"])


def test_bindings_are_typed_and_sorted_by_prefix():
    bindings = to_bindings({"B": ("gb", "SB"), "A": ("ga", "SA")})
    assert bindings == (Binding("A", "ga", "SA"), Binding("B", "gb", "SB"))
    assert bindings[0].url == "http://proxy:3128/gw/A"
    with pytest.raises(UsageError, match="needs a gateway and a secret"):
        to_bindings({"A": ("ga",)})  # type: ignore[dict-item]


def test_the_box_environment_carries_tokens_and_urls_only_when_given():
    bindings = to_bindings({"API": ("g", "S")})
    checked = box_environment("b", bindings, {"K": "v"})
    assert "API" not in checked and checked["K"] == "v" and checked["DEVBOX_NAME"] == "b"
    env = box_environment("b", bindings, {}, {"API": "gwt_token"})
    assert env["API"] == "gwt_token"
    assert env["API_URL"] == bindings[0].url == "http://proxy:3128/gw/API"


def test_resource_kinds_name_their_store_file_and_their_errors():
    assert [k.records for k in ResourceKind] == ["secrets", "gateways", "policies"]
    err = ResourceKind.GATEWAY.not_found("g")
    assert (err.message, err.exit_code) == ("no gateway g", 3)
    assert "devbox gateway create g" in (err.hint or "")
    assert (
        ResourceKind.POLICY.in_use("p", ["b", "a"]).message == "policy p is used by devbox(es) a, b"
    )


class Engine:
    """Records what a rollback removes; a removal of `broken` fails as Docker would."""

    def __init__(self, broken: str = "") -> None:
        self.removed: list[str] = []
        self.broken = broken

    def remove_container(self, ident: str) -> bool:
        return self._remove(f"container {ident}")

    def remove_network(self, ident: str) -> bool:
        return self._remove(f"network {ident}")

    def remove_volume(self, ident: str) -> bool:
        return self._remove(f"volume {ident}")

    def _remove(self, what: str) -> bool:
        if what.endswith(self.broken or "\0"):
            raise DevboxRuntimeError(f"removing {what} failed")
        self.removed.append(what)
        return True


def test_a_failed_create_is_rolled_back_newest_first_and_the_error_kept():
    engine = Engine(broken="proxy")
    with pytest.raises(UsageError, match="late failure"), Rollback(engine) as made:  # type: ignore[arg-type]
        made.network("net")
        made.volume("vol")
        worker = threading.Thread(target=made.container, args=("box",))
        worker.start()
        worker.join()
        made.container("proxy")
        raise UsageError("late failure")
    # the proxy's removal failed
    assert engine.removed == ["container box", "volume vol", "network net"]


def test_a_clean_create_is_not_rolled_back():
    engine = Engine()
    with Rollback(engine) as made:  # type: ignore[arg-type]
        made.network("net")
        made.container("box")
    assert engine.removed == []


def test_an_interrupted_create_is_rolled_back_too():
    engine = Engine()
    with pytest.raises(KeyboardInterrupt), Rollback(engine) as made:  # type: ignore[arg-type]
        made.container("box")
        raise KeyboardInterrupt
    assert engine.removed == ["container box"]


def test_a_create_plan_never_shows_a_credential_or_a_token():
    binding = Binding("API", "g", "S")
    token = "gwt_" + "t" * 40
    plan = CreatePlan(
        name="b",
        store="0123456789abcdef",
        image="i",
        proxy_image="p",
        bindings=(binding,),
        policy=None,
        environment=box_environment("b", (binding,), {}, {"API": token}),
        config=ProxyConfig(
            devbox="b",
            gateways=(
                GatewayBinding(
                    prefix="API",
                    token=token,
                    endpoint="https://e.com",
                    auth=Auth("bearer"),
                    credential=SECRET,
                ),
            ),
        ),
        limits=BoxLimits(),
        host_config={},
        egress="devbox-egress",
    )
    assert SECRET not in repr(plan) and token not in repr(plan)
