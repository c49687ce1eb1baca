"""The config contract's host gateways and CA (proxy/config.py, proxy/state.py): what loads,
what is refused at load (so never met on a request), and that no key shows."""

from __future__ import annotations

import dataclasses
import json

import pytest

from proxy.certs import new_authority
from proxy.config import Authority, ConfigError, ProxyConfig
from proxy.state import MAX_INTERCEPTED_HOSTS, build_state
from tests.proxy.conftest import TOKEN_A, TOKEN_B, binding, make_config

CA = new_authority("devbox t interception CA", ["github.com", "localhost"])


def host_config(*hosts: str, ca: Authority | None = CA, **kw) -> ProxyConfig:
    b = dataclasses.replace(binding(None, prefix="GH", **kw), hosts=hosts)
    return dataclasses.replace(make_config(b), ca=ca)


def test_hosts_and_the_ca_travel_through_json():
    config = host_config("github.com", "GitHub.com.:8443")
    back = ProxyConfig.loads(config.dumps())
    assert back == config
    raw = json.loads(config.dumps())
    assert raw["ca"] == {"cert": CA.cert, "key": CA.key}
    assert raw["gateways"][0]["endpoint"] is None
    assert raw["gateways"][0]["hosts"] == ["github.com", "GitHub.com.:8443"]


def test_a_config_from_before_host_gateways_still_loads():
    raw = json.loads(make_config(binding("https://api.example")).dumps())
    for key in ("ca",):
        del raw[key]
    del raw["gateways"][0]["hosts"]
    config = ProxyConfig.from_json(raw)
    assert config.ca is None and config.gateways[0].hosts == ()


def test_intercepted_hosts_are_normalized_and_keyed_by_host_and_port():
    state = build_state(host_config("GitHub.com.", "localhost:8443"))
    assert set(state.intercepts) == {("github.com", 443), ("localhost", 8443)}
    assert state.leaves is not None and len(state.leaves) == 0  # minted on first use
    assert state.tokens == (TOKEN_A,)


def test_reprs_never_show_the_key_the_token_or_the_credential():
    config = host_config("github.com")
    shown = repr(config)
    assert CA.key.splitlines()[1] not in shown
    assert TOKEN_A not in shown and config.gateways[0].credential not in shown


@pytest.mark.parametrize(
    ("hosts", "ca", "message"),
    [
        (("github.com",), None, "no ca"),
        (("1.2.3.4",), CA, "IP address"),
        (("*.github.com",), CA, "wildcards"),
        (("https://github.com/x",), CA, "not a URL"),
        (("github.com:0",), CA, "invalid port"),
    ],
)
def test_bad_hosts_are_refused_at_load(hosts, ca, message):
    with pytest.raises(ConfigError, match=message):
        build_state(host_config(*hosts, ca=ca))


def test_one_host_goes_to_one_gateway():
    one = dataclasses.replace(binding(None, prefix="ONE", token=TOKEN_A), hosts=("github.com",))
    two = dataclasses.replace(binding(None, prefix="TWO", token=TOKEN_B), hosts=("GITHUB.COM:443",))
    config = dataclasses.replace(make_config(one, two), ca=CA)
    with pytest.raises(ConfigError, match=r"github\.com is intercepted by both gateway ONE and"):
        build_state(config)


def test_a_broken_ca_is_refused_without_showing_it():
    bad = Authority(CA.cert, new_authority("other", ["x.test"]).key)
    with pytest.raises(ConfigError) as refused:
        build_state(host_config("github.com", ca=bad))
    assert str(refused.value).startswith("ca: ")
    assert bad.key.splitlines()[1] not in str(refused.value)


def test_the_number_of_intercepted_hosts_is_bounded():
    hosts = tuple(f"h{i}.github.com" for i in range(MAX_INTERCEPTED_HOSTS + 1))
    with pytest.raises(ConfigError, match="more than"):
        build_state(host_config(*hosts))


def test_a_gateway_with_neither_endpoint_nor_hosts_loads_and_does_nothing():
    state = build_state(host_config(ca=None))
    assert state.intercepts == {} and state.leaves is None
