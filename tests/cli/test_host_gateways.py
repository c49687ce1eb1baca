"""Host gateways on the CLI side: `--host` on gateway create/update/show/list, the devbox CA
in the store (sealed), the proxy config a devbox gets (one host to one gateway, only hosts
its CA covers), and the box's trust variables."""

from __future__ import annotations

import json
import re

import pytest

from devbox_cli import Client
from devbox_cli.engine.views import Binding
from devbox_cli.errors import StoreError, UsageError
from devbox_cli.services.authority import RECORDS, new_ca
from devbox_cli.services.box_env import CA_ENV, box_environment
from devbox_cli.services.gateway_rules import MAX_HOSTS
from tests.cli.support import run

VALUE = "user:sk-host-PLAINTEXT-77c1"


@pytest.fixture
def client() -> Client:
    c = Client()
    c.create_secret("GH", VALUE)
    return c


# -- hosts on a gateway --------------------------------------------------------------------


def test_hosts_are_normalized_once_each_and_need_no_endpoint(client):
    gw = client.create_gateway(
        "gh", hosts=["GitHub.com.", "github.com", "git.corp:8443", "api.github.com:443"]
    )
    assert gw.hosts == ("github.com", "git.corp:8443", "api.github.com")
    assert gw.endpoint is None
    assert client.get_gateway("gh") == gw
    both = client.create_gateway("both", "https://api.example.com", hosts=["example.com"])
    assert (both.endpoint, both.hosts) == ("https://api.example.com", ("example.com",))


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ([], "needs an endpoint or hosts"),
        (["1.2.3.4"], "IP address"),
        (["[::1]"], "IP address"),
        (["*.github.com"], "wildcards"),
        (["https://github.com"], "not a URL"),
        (["github.com/path"], "not a URL"),
        (["user@github.com"], "not a URL"),
        (["github.com:99999"], "invalid port"),
        (["git hub.com"], "whitespace"),
        (["github.com\n"], "whitespace"),
        ([f"h{i}.example.com" for i in range(MAX_HOSTS + 1)], f"at most {MAX_HOSTS} hosts"),
    ],
)
def test_bad_hosts_are_usage_errors(client, hosts, message):
    with pytest.raises(UsageError, match=message):
        client.create_gateway("gh", hosts=hosts)


def test_update_edits_the_hosts_and_may_drop_the_endpoint(client):
    client.create_gateway("gh", "https://api.github.com", hosts=["github.com"])
    gw = client.update_gateway("gh", add_hosts=["gist.github.com"], remove_hosts=["GITHUB.COM"])
    assert gw.hosts == ("gist.github.com",)
    gw = client.update_gateway("gh", hosts=["a.example.com", "b.example.com"])
    assert gw.hosts == ("a.example.com", "b.example.com")
    gw = client.update_gateway("gh", endpoint=None)
    assert gw.endpoint is None
    with pytest.raises(UsageError, match=r"no host c\.example\.com to remove"):
        client.update_gateway("gh", remove_hosts=["c.example.com"])
    with pytest.raises(UsageError, match="neither an endpoint nor hosts"):
        client.update_gateway("gh", hosts=[])
    assert client.get_gateway("gh").hosts == ("a.example.com", "b.example.com")


def test_a_stored_gateway_with_neither_is_malformed(client, devbox_home):
    client.create_gateway("gh", hosts=["github.com"])
    path = devbox_home / "gateways.json"
    raw = json.loads(path.read_text())
    raw["records"]["gh"]["hosts"] = []
    path.write_text(json.dumps(raw))
    with pytest.raises(StoreError, match="malformed"):
        client.get_gateway("gh")


def test_the_cli_create_update_show_and_list(client):
    created = run("gateway", "create", "gh", "--host", "GitHub.com", "--auth", "basic",
                  "-o", "json")  # fmt: skip
    assert created.returncode == 0, created.stderr
    body = json.loads(created.stdout)
    assert (body["endpoint"], body["hosts"]) == (None, ["github.com"])
    updated = run("gateway", "update", "gh", "--add-host", "api.github.com", "-o", "json")
    assert json.loads(updated.stdout)["hosts"] == ["github.com", "api.github.com"]
    shown = run("gateway", "show", "gh").stdout
    assert "github.com" in shown and "api.github.com" in shown and "a host gateway" in shown
    assert "github.com, api.github.com" in run("gateway", "list").stdout
    assert run("gateway", "create", "x").returncode == 2
    both = run("gateway", "update", "gh", "--endpoint", "https://a.example", "--no-endpoint")
    assert both.returncode == 2 and "contradict" in both.stderr
    bad = run("gateway", "create", "y", "--host", "10.0.0.1")
    assert bad.returncode == 2 and "IP address" in bad.stderr


# -- the devbox CA -------------------------------------------------------------------------


def test_the_ca_is_kept_sealed_and_removed_with_its_devbox(client, devbox_home):
    authorities = client.configs.authorities
    saved = authorities.save(new_ca("box1", ["github.com"]))
    stored = (devbox_home / f"{RECORDS}.json").read_text()
    key_line = saved.authority.key.splitlines()[1]
    assert key_line not in stored  # sealed
    assert saved.authority.cert.splitlines()[1] in stored  # the certificate is public
    loaded = authorities.load("box1")
    assert loaded is not None and loaded.authority == saved.authority
    assert loaded.hosts == ("github.com",)
    summary = authorities.summary("box1")
    assert summary is not None and summary.authority.key == ""
    assert summary.view().to_json()["hosts"] == ["github.com"]
    assert len(summary.view().sha256.split(":")) == 32
    assert key_line not in repr(loaded) and key_line not in json.dumps(loaded.view().to_json())
    authorities.delete(["box1", "never-had-one"])
    assert authorities.load("box1") is None


def test_a_failed_create_discards_only_its_own_ca(client):
    authorities = client.configs.authorities
    mine = authorities.save(new_ca("box1", ["github.com"]))
    theirs = authorities.save(new_ca("box1", ["github.com"]))  # a concurrent create won
    authorities.discard(mine)
    kept = authorities.summary("box1")
    assert kept is not None and kept.authority.cert == theirs.authority.cert
    authorities.discard(theirs)
    assert authorities.summary("box1") is None


def test_a_malformed_ca_record_is_a_store_error(client, devbox_home):
    client.configs.authorities.save(new_ca("box1", ["github.com"]))
    path = devbox_home / f"{RECORDS}.json"
    raw = json.loads(path.read_text())
    del raw["records"]["box1"]["sealed_key"]
    path.write_text(json.dumps(raw))
    with pytest.raises(StoreError, match="the CA of devbox box1 is malformed"):
        client.configs.authorities.load("box1")


# -- the proxy config ----------------------------------------------------------------------

TOKENS = {"A": "gwt_" + "a" * 40, "B": "gwt_" + "b" * 40}


def test_one_host_to_one_gateway_of_a_devbox(client):
    client.create_gateway("one", hosts=["github.com"])
    client.create_gateway("two", "https://api.example.com", hosts=["GITHUB.com"])
    bindings = (Binding("A", "one", "GH"), Binding("B", "two", "GH"))
    with pytest.raises(UsageError, match=r"github\.com is intercepted by both gateway one"):
        client.configs.build("box1", bindings, TOKENS, None, ca=new_ca("box1", ["github.com"]))


def test_only_hosts_the_devboxs_ca_covers_are_intercepted(client):
    client.create_gateway("gh", hosts=["github.com", "api.github.com", "git.corp:8443"])
    bindings = (Binding("A", "gh", "GH"),)
    assert client.configs.intercepted_names(bindings) == (
        "api.github.com", "git.corp", "github.com",
    )  # fmt: skip
    ca = new_ca("box1", ["github.com"])  # made before the other hosts were added
    config = client.configs.build("box1", bindings, TOKENS, None, ca=ca)
    assert config.gateways[0].hosts == ("github.com", "api.github.com")  # a subdomain too
    assert config.ca == ca.authority
    # the devbox's CA from the store; none there: nothing intercepted, no key sent
    assert client.configs.build("box1", bindings, TOKENS, None).ca is None
    client.configs.authorities.save(ca)
    from_store = client.configs.build("box1", bindings, TOKENS, None)
    assert from_store.ca == ca.authority and from_store.gateways[0].hosts
    # a devbox whose gateways intercept nothing gets no CA key, even if it has a CA
    client.create_gateway("plain", "https://api.example.com")
    plain = client.configs.build("box1", (Binding("A", "plain", "GH"),), TOKENS, None)
    assert plain.ca is None


def test_the_box_trusts_the_bundle_through_every_variable():
    env = box_environment("box1", (), {}, {}, ca_bundle=True)
    assert {k: env[k] for k in CA_ENV} == dict.fromkeys(CA_ENV, "/etc/devbox/ca-bundle.pem")
    assert not set(CA_ENV) & set(box_environment("box1", (), {}, {}))
    with pytest.raises(UsageError, match="--env SSL_CERT_FILE collides with the devbox's CA"):
        box_environment("box1", (), {"SSL_CERT_FILE": "/x"}, {}, ca_bundle=True)
    # without a host gateway the variables are the user's own
    assert box_environment("box1", (), {"SSL_CERT_FILE": "/x"}, {})["SSL_CERT_FILE"] == "/x"


class Engine:
    """Just enough of an engine for the in-use checks: this store's running boxes."""

    def __init__(self, store_id: str, boxes: dict[str, tuple[Binding, ...]]) -> None:
        from devbox_cli.engine.views import gateways_label

        self.listed = [
            {
                "Labels": {
                    "devbox.name": name,
                    "devbox.role": "box",
                    "devbox.store": store_id,
                    "devbox.gateways": gateways_label(bindings),
                },
                "State": "running",
            }
            for name, bindings in boxes.items()
        ]

    def containers(self, *labels: str) -> list[dict]:
        return self.listed


@pytest.mark.parametrize(
    ("bindings", "clash"),
    [
        ((Binding("A", "one", "GH"), Binding("B", "two", "GH")), "gateway two (prefix B)"),
        ((Binding("A", "one", "GH"), Binding("B", "one", "GH")), "gateway one again"),
    ],
)
def test_an_update_adding_a_host_another_bound_gateway_has_is_refused_unsaved(
    client, bindings, clash
):
    client.create_gateway("one", hosts=["a.example.com"])
    client.create_gateway("two", hosts=["b.example.com"])
    engine = Engine(client.store.identity(), {"agent": bindings})
    client.proxies.engine = lambda: engine
    message = re.escape(f"twice in devbox agent: it binds gateway one and {clash}")
    with pytest.raises(UsageError, match=message):
        client.update_gateway("one", add_hosts=["b.example.com", "c.example.com"])
    assert client.get_gateway("one").hosts == ("a.example.com",)
    # a host nobody else intercepts is fine (and a devbox not binding it is no concern)
    client.proxies.engine = lambda: Engine(client.store.identity(), {"other": bindings[1:]})
    client.proxies.push_update = lambda kind, name: ()
    assert client.update_gateway("one", add_hosts=["b.example.com"]).hosts[-1] == "b.example.com"
