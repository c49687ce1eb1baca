"""Gateway configs: validation tables, presets, CA bundles, updates, the proxy binding, and
the `devbox gateway` commands run as real processes."""

from __future__ import annotations

import json

import pytest
import trustme

from devbox_cli import Client
from devbox_cli.engine.views import Binding
from devbox_cli.errors import ConflictError, NotFoundError, UsageError
from devbox_cli.services.gateways import Gateway, GatewayHeader
from proxy.config import Auth, GatewayBinding, ProxyConfig
from tests.cli.support import run

VALUE = "sk-gw-PLAINTEXT-93b1e0"


@pytest.fixture(scope="module")
def ca_pem() -> str:
    return trustme.CA().cert_pem.bytes().decode()


# -- endpoint ------------------------------------------------------------------------------

GOOD_ENDPOINTS = [
    ("https://api.anthropic.com", "https://api.anthropic.com"),
    ("https://api.anthropic.com/", "https://api.anthropic.com"),
    ("HTTPS://API.Example.COM/v1/", "https://api.example.com/v1"),
    ("http://llm.internal:8080/openai/v1//", "http://llm.internal:8080/openai/v1"),
    ("https://example.com:443/x", "https://example.com/x"),
    ("http://example.com:80", "http://example.com"),
    ("https://example.com:8443", "https://example.com:8443"),
    ("https://bücher.example/api", "https://xn--bcher-kva.example/api"),
    ("https://example.com./", "https://example.com"),
    ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
    ("http://[::1]:9000/p", "http://[::1]:9000/p"),
    ("https://example.com/a%20b", "https://example.com/a%20b"),
]


@pytest.mark.parametrize(("given", "normalized"), GOOD_ENDPOINTS)
def test_endpoint_normalized(given, normalized):
    assert Client().create_gateway("g", given).endpoint == normalized


BAD_ENDPOINTS = [
    ("", "needs an endpoint"),
    ("   ", "endpoint is empty"),
    ("api.anthropic.com", "https:// or http://"),
    ("ftp://example.com", "https:// or http://"),
    ("file:///etc/passwd", "https:// or http://"),
    ("https://", "no host"),
    ("https:///path", "no host"),
    ("https://user:pw@example.com", "user name or password"),
    ("https://user@example.com", "user name or password"),
    ("https://example.com/#frag", "#fragment"),
    ("https://example.com/v1?key=x", "?query"),
    ("https://example.com:99999", "invalid endpoint"),
    ("https://example.com:abc", "invalid endpoint"),
    ("https://example.com:0", "port 0"),
    ("https://exa mple.com", "whitespace"),
    ("https://example.com/\r\nX-Injected: 1", "control characters"),
    ("https://exa_mple..com", "not a valid host name"),
    ("https://-bad-.com", "not a valid host name"),
    ("https://example.com/a b", "whitespace"),
    ("https://example.com/<script>", "percent-encoded"),
    ("https://[::1", "invalid endpoint"),
]


@pytest.mark.parametrize(("given", "message"), BAD_ENDPOINTS)
def test_endpoint_refused(given, message):
    with pytest.raises(UsageError, match="(?i)" + message.replace("?", r"\?")):
        Client().create_gateway("g", given)
    assert Client().list_gateways() == []


def test_endpoint_credentials_are_not_echoed():
    for url in ("https://user:hunter2pw@example.com", "https://example.com/?key=hunter2pw"):
        proc = run("gateway", "create", "g", "--endpoint", url)
        assert proc.returncode == 2
        assert "hunter2pw" not in proc.stderr + proc.stdout


def test_endpoint_required_without_preset():
    with pytest.raises(UsageError, match="needs an endpoint") as err:
        Client().create_gateway("g")
    assert "--preset" in err.value.hint


# -- auth ----------------------------------------------------------------------------------

GOOD_AUTH = [
    (None, Auth("bearer")),
    ("bearer", Auth("bearer")),
    ("BEARER", Auth("bearer")),
    ("basic", Auth("basic")),
    ("header:x-api-key", Auth("header", "x-api-key")),
    ("header:Authorization", Auth("header", "Authorization")),
    ("query:key", Auth("query", "key")),
    ("query:api_key.v2~x-y", Auth("query", "api_key.v2~x-y")),
]


@pytest.mark.parametrize(("spec", "auth"), GOOD_AUTH)
def test_auth_specs(spec, auth):
    assert Client().create_gateway("g", "https://e.com", auth=spec).auth == auth


BAD_AUTH = [
    ("token", "invalid --auth 'token'"),
    ("bearer:x", "takes no ':' argument"),
    ("basic:user", "takes no ':' argument"),
    ("header:", "not a valid header name"),
    ("header:x api key", "not a valid header name"),
    ("header:x:y", "not a valid header name"),
    ("header:Host", "proxy manages the Host header"),
    ("header:content-length", "proxy manages"),
    ("header:Proxy-Authorization", "proxy manages"),
    ("query:", "query parameter must be"),
    ("query:a&b", "query parameter must be"),
    ("query:a=b", "query parameter must be"),
]


@pytest.mark.parametrize(("spec", "message"), BAD_AUTH)
def test_auth_refused(spec, message):
    with pytest.raises(UsageError) as err:
        Client().create_gateway("g", "https://e.com", auth=spec)
    assert message in err.value.message
    if "proxy manages" in message:
        assert err.value.hint is None  # a header the proxy owns: no list of auth types helps
    else:
        assert err.value.hint is not None and "bearer, basic, header:HEADER" in err.value.hint


# -- headers -------------------------------------------------------------------------------


def test_headers_fixed_and_secret():
    client = Client()
    client.create_secret("ORG_TOKEN", VALUE)
    gw = client.create_gateway(
        "g",
        "https://e.com",
        headers=["x-org=acme corp", "X-Token=secret:ORG_TOKEN", "x-eq=a=b"],
    )
    assert gw.headers == (
        GatewayHeader("x-org", value="acme corp"),
        GatewayHeader("X-Token", secret="ORG_TOKEN"),
        GatewayHeader("x-eq", value="a=b"),
    )
    assert gw.to_json()["headers"] == [
        {"name": "x-org", "value": "acme corp"},
        {"name": "X-Token", "secret": "ORG_TOKEN"},
        {"name": "x-eq", "value": "a=b"},
    ]


BAD_HEADERS = [
    (["novalue"], "no '='"),
    (["=v"], "not a valid header name"),
    (["bad name=v"], "not a valid header name"),
    (["x-ü=v"], "not a valid header name"),
    (["x-a="], "empty value"),
    (["x-a=line\r\nInjected: 1"], "CR, LF"),
    (["x-a=nul\x00"], "CR, LF"),
    (["Host=evil.com"], "proxy manages the Host header"),
    (["content-length=1"], "proxy manages"),
    (["Transfer-Encoding=chunked"], "proxy manages"),
    (["Connection=close"], "proxy manages"),
    (["Upgrade=websocket"], "proxy manages"),
    (["Proxy-Authorization=x"], "proxy manages"),
    (["Authorization=Bearer x"], "bearer auth sets"),
    (["x-a=1", "X-A=2"], "given twice"),
    ([f"x-{i}=v" for i in range(9)], "at most 8"),
    (["x-a=secret:bad-name"], "invalid secret name"),
]


@pytest.mark.parametrize(("headers", "message"), BAD_HEADERS)
def test_headers_refused(headers, message):
    with pytest.raises(UsageError, match=message.replace("?", r"\?")):
        Client().create_gateway("g", "https://e.com", headers=headers)


def test_eight_headers_are_allowed():
    gw = Client().create_gateway("g", "https://e.com", headers=[f"x-{i}=v" for i in range(8)])
    assert len(gw.headers) == 8


def test_header_may_not_be_the_auth_header():
    with pytest.raises(UsageError, match="header auth sets"):
        Client().create_gateway(
            "g", "https://e.com", auth="header:x-api-key", headers=["X-Api-Key=1"]
        )
    with pytest.raises(UsageError, match="basic auth sets"):
        Client().create_gateway("g", "https://e.com", auth="basic", headers=["authorization=1"])
    gw = Client().create_gateway(
        "g", "https://e.com", auth="query:key", headers=["authorization=1"]
    )
    assert gw.headers[0].name == "authorization"


def test_header_secret_must_exist():
    with pytest.raises(NotFoundError, match="header x-a: no secret MISSING") as err:
        Client().create_gateway("g", "https://e.com", headers=["x-a=secret:MISSING"])
    assert "devbox secret create MISSING" in err.value.hint
    assert Client().list_gateways() == []


# -- CA bundle -----------------------------------------------------------------------------


def test_ca_cert_from_file_and_from_text(tmp_path, ca_pem):
    path = tmp_path / "ca.pem"
    key = "-----BEGIN PRIVATE KEY-----\nMIIEvQ\n-----END PRIVATE KEY-----\n"
    path.write_text("corp bundle\n" + ca_pem + key)
    client = Client()
    gw = client.create_gateway("g", "https://e.com", ca_cert=path)
    assert gw.ca_cert is not None
    assert "BEGIN CERTIFICATE" in gw.ca_cert
    assert "PRIVATE KEY" not in gw.ca_cert  # only certificates are kept
    summary = gw.to_json()["ca_cert"]
    assert summary["certificates"] == 1
    assert len(summary["sha256"][0].split(":")) == 32
    assert "BEGIN" not in json.dumps(gw.to_json())
    # the PEM lives in the store, so the file may go away
    path.unlink()
    assert client.get_gateway("g").ca_cert == gw.ca_cert
    assert client.create_gateway("h", "https://e.com", ca_cert=ca_pem).ca_cert == gw.ca_cert


def test_ca_cert_with_two_certificates(ca_pem):
    other = trustme.CA().cert_pem.bytes().decode()
    gw = Client().create_gateway("g", "https://e.com", ca_cert=ca_pem + other)
    assert gw.to_json()["ca_cert"]["certificates"] == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("", "no PEM certificate"),
        ("just text\n", "no PEM certificate"),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "does not parse"),
        (b"\x30\x82\x01\xff\xfe", "not a PEM text file"),
    ],
)
def test_ca_cert_refused(tmp_path, content, message):
    path = tmp_path / "ca.pem"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(UsageError, match=message) as err:
        Client().create_gateway("g", "https://e.com", ca_cert=path)
    assert "ca.pem" in err.value.message


def test_ca_cert_directory_refused(tmp_path):
    with pytest.raises(UsageError, match="is a directory"):
        Client().create_gateway("g", "https://e.com", ca_cert=tmp_path)


# -- names, description, presets -----------------------------------------------------------


@pytest.mark.parametrize("name", ["", "-x", ".x", "a b", "a/b", "x" * 64, "ü"])
def test_invalid_gateway_names(name):
    with pytest.raises(UsageError, match="invalid gateway name"):
        Client().create_gateway(name, "https://e.com")


@pytest.mark.parametrize("text", ["two\nlines", "x" * 201, "bell\x07"])
def test_invalid_description(text):
    with pytest.raises(UsageError, match="description"):
        Client().create_gateway("g", "https://e.com", description=text)


def test_presets_and_overrides():
    client = Client()
    anthropic = client.create_gateway("a", preset="anthropic")
    assert anthropic.endpoint == "https://api.anthropic.com"
    assert anthropic.auth == Auth("header", "x-api-key")
    openai = client.create_gateway("o", preset="openai")
    assert (openai.endpoint, openai.auth) == ("https://api.openai.com", Auth("bearer"))
    custom = client.create_gateway(
        "c", "https://proxy.corp/anthropic", preset="anthropic", auth="bearer"
    )
    assert (custom.endpoint, custom.auth) == ("https://proxy.corp/anthropic", Auth("bearer"))
    with pytest.raises(UsageError, match="unknown preset") as err:
        client.create_gateway("x", preset="gemini")
    assert "anthropic, openai" in err.value.hint


def test_name_taken_and_unknown():
    client = Client()
    client.create_gateway("g", "https://e.com")
    with pytest.raises(ConflictError, match="already exists"):
        client.create_gateway("g", "https://f.com")
    for call in (
        lambda: client.get_gateway("nope"),
        lambda: client.update_gateway("nope", endpoint="https://e.com"),
        lambda: client.delete_gateway("nope"),
    ):
        with pytest.raises(NotFoundError, match="no gateway nope") as err:
            call()
        assert "devbox gateway create nope" in err.value.hint


# -- update and delete ---------------------------------------------------------------------


def test_update_semantics(ca_pem):
    client = Client()
    client.create_secret("S", "v")
    created = client.create_gateway(
        "g", "https://e.com", headers=["x-a=1", "x-b=2"], ca_cert=ca_pem, description="d"
    )
    gw = client.update_gateway("g", set_headers=["X-A=one", "x-c=secret:S"])
    assert [(h.name, h.value, h.secret) for h in gw.headers] == [
        ("x-b", "2", None),
        ("X-A", "one", None),
        ("x-c", None, "S"),
    ]
    assert gw.created_at == created.created_at
    assert gw.ca_cert == created.ca_cert and gw.description == "d"
    gw = client.update_gateway("g", remove_headers=["X-B"], endpoint="https://f.com/v2/")
    assert [h.name for h in gw.headers] == ["X-A", "x-c"]
    assert gw.endpoint == "https://f.com/v2"
    gw = client.update_gateway("g", headers=(), ca_cert=None, description=None)
    assert (gw.headers, gw.ca_cert, gw.description) == ((), None, None)
    gw = client.update_gateway("g", preset="anthropic")
    assert (gw.endpoint, gw.auth.key) == ("https://api.anthropic.com", "x-api-key")
    assert client.get_gateway("g") == gw


def test_update_validates_the_result():
    client = Client()
    client.create_gateway("g", "https://e.com", headers=["x-api-key=1"])
    with pytest.raises(UsageError, match="auth sets"):
        client.update_gateway("g", auth="header:X-API-KEY")
    with pytest.raises(UsageError, match="no header x-nope"):
        client.update_gateway("g", remove_headers=["x-nope"])
    with pytest.raises(UsageError, match="nothing to update"):
        client.update_gateway("g")
    with pytest.raises(NotFoundError, match="no secret GONE"):
        client.update_gateway("g", set_headers=["x-b=secret:GONE"])
    assert client.get_gateway("g").auth == Auth("bearer")
    assert [h.name for h in client.get_gateway("g").headers] == ["x-api-key"]


class InUse(Client):
    def __init__(self) -> None:
        super().__init__()
        self.proxies.devboxes_using = self.devboxes_using

    @staticmethod
    def devboxes_using(kind: str, name: str) -> list[str]:
        return ["agent"] if kind == "gateway" and name == "g" else []


def test_delete_refused_while_in_use_unless_forced():
    client = InUse()
    client.create_gateway("g", "https://e.com")
    with pytest.raises(ConflictError, match=r"used by devbox.* agent") as err:
        client.delete_gateway("g")
    assert "--force" in err.value.hint
    client.delete_gateway("g", force=True)
    assert client.list_gateways() == []


def test_malformed_record_is_a_store_error(devbox_home):
    Client().create_gateway("g", "https://e.com")
    path = devbox_home / "gateways.json"
    raw = json.loads(path.read_text())
    del raw["records"]["g"]["endpoint"]
    path.write_text(json.dumps(raw))
    proc = run("gateway", "list")
    assert proc.returncode == 5
    assert str(path) in proc.stderr


# -- binding for the proxy -----------------------------------------------------------------


def test_binding_opens_the_credential_and_secret_headers(ca_pem):
    client = Client()
    client.create_secret("KEY", VALUE)
    client.create_secret("ORG", "org-" + VALUE)
    client.create_gateway(
        "g", "https://e.com/v1", auth="header:x-api-key",
        headers=["x-org=secret:ORG", "x-fixed=1"], ca_cert=ca_pem,
    )  # fmt: skip
    binding = client.configs.binding(Binding("ANTHROPIC_API_KEY", "g", "KEY"), "gwt_token123")
    assert isinstance(binding, GatewayBinding)
    assert binding.prefix == "ANTHROPIC_API_KEY"
    assert binding.token == "gwt_token123"
    assert binding.endpoint == "https://e.com/v1"
    assert binding.auth == Auth("header", "x-api-key")
    assert binding.credential == VALUE
    assert [(h.name, h.value, h.secret) for h in binding.headers] == [
        ("x-org", "org-" + VALUE, True),
        ("x-fixed", "1", False),
    ]
    assert binding.ca_cert == client.get_gateway("g").ca_cert
    assert VALUE not in repr(binding)
    # the proxy accepts what we build
    config = ProxyConfig(devbox="b", gateways=(binding,))
    assert ProxyConfig.loads(config.dumps()).gateways[0].credential == VALUE


def test_binding_errors():
    client = Client()
    client.create_secret("KEY", "no-colon")
    client.create_gateway("g", "https://e.com")
    client.create_gateway("b", "https://e.com", auth="basic")
    with pytest.raises(NotFoundError, match="no gateway nope"):
        client.configs.binding(Binding("P", "nope", "KEY"), "t")
    with pytest.raises(NotFoundError, match="no secret NOPE"):
        client.configs.binding(Binding("P", "g", "NOPE"), "t")
    with pytest.raises(UsageError, match="user:password") as err:
        client.configs.binding(Binding("P", "b", "KEY"), "t")
    assert "no-colon" not in str(err.value)


def test_gateway_repr_has_no_pem(ca_pem):
    gw = Client().create_gateway("g", "https://e.com", ca_cert=ca_pem)
    assert isinstance(gw, Gateway)
    assert "BEGIN" not in repr(gw)


# -- CLI -----------------------------------------------------------------------------------


def test_cli_create_show_list_json_shapes(tmp_path, ca_pem):
    (tmp_path / "ca.pem").write_text(ca_pem)
    assert run("secret", "create", "ORG", stdin=VALUE).returncode == 0
    created = run(
        "gateway", "create", "corp", "--endpoint", "https://llm.corp/v1/", "--auth",
        "query:key", "--header", "x-org=acme", "--header", "x-tok=secret:ORG",
        "--ca-cert", str(tmp_path / "ca.pem"), "--description", "corp llm", "-o", "json",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    body = json.loads(created.stdout)
    assert set(body) == {
        "name", "endpoint", "hosts", "auth", "headers", "ca_cert", "description",
        "created_at", "updated_at",
    }  # fmt: skip
    assert body["hosts"] == []
    assert body["name"] == "corp"
    assert body["endpoint"] == "https://llm.corp/v1"
    assert body["auth"] == {"type": "query", "key": "key"}
    assert body["headers"] == [
        {"name": "x-org", "value": "acme"},
        {"name": "x-tok", "secret": "ORG"},
    ]
    assert body["ca_cert"]["certificates"] == 1
    assert body["description"] == "corp llm"
    assert run("gateway", "create", "a", "--preset", "anthropic").returncode == 0
    listed = json.loads(run("gateway", "list", "-o", "json").stdout)
    assert [g["name"] for g in listed] == ["a", "corp"]
    assert listed[0]["auth"] == {"type": "header", "key": "x-api-key"}
    assert json.loads(run("gateway", "show", "corp", "-o", "json").stdout) == body
    text = run("gateway", "show", "corp")
    assert "x-tok: <secret ORG>" in text.stdout
    assert "1 certificate(s)" in text.stdout
    everything = "".join(
        p.stdout + p.stderr
        for p in (created, text, run("gateway", "list"), run("gateway", "list", "-o", "json"))
    )
    assert VALUE not in everything
    assert json.loads(run("gateway", "list", "-o", "json").stdout)  # non-empty array


def test_cli_update_flags(tmp_path, ca_pem):
    (tmp_path / "ca.pem").write_text(ca_pem)
    run("gateway", "create", "g", "--endpoint", "https://e.com", "--header", "x-a=1",
        "--header", "x-b=2", "--ca-cert", str(tmp_path / "ca.pem"))  # fmt: skip
    proc = run(
        "gateway", "update", "g", "--remove-header", "x-a", "--header", "x-c=3", "-o", "json"
    )
    assert proc.returncode == 0, proc.stderr
    assert [h["name"] for h in json.loads(proc.stdout)["headers"]] == ["x-b", "x-c"]
    proc = run("gateway", "update", "g", "--clear-headers", "--no-ca-cert", "-o", "json")
    body = json.loads(proc.stdout)
    assert (body["headers"], body["ca_cert"]) == ([], None)
    both = run("gateway", "update", "g", "--no-ca-cert", "--ca-cert", str(tmp_path / "ca.pem"))
    assert both.returncode == 2
    assert run("gateway", "update", "g").returncode == 2


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["create", "x", "--endpoint", "ftp://e.com"], 2, "https:// or http://"),
        (["create", "x", "--endpoint", "https://e.com", "--auth", "token"], 2, "invalid --auth"),
        (["create", "x", "--endpoint", "https://e.com", "--header", "Host=a"], 2, "Host"),
        (["create", "x", "--endpoint", "https://e.com", "--ca-cert", "/nonexistent"], 2, "no such"),
        (["create", "x", "--preset", "nope"], 2, "unknown preset"),
        (["create", "x"], 2, "needs an endpoint"),
        (["create", "x", "--endpoint", "https://e.com", "--header", "a=secret:NOPE"], 3, "NOPE"),
        (["create", "exists", "--endpoint", "https://e.com"], 4, "already exists"),
        (["show", "nope"], 3, "no gateway nope"),
        (["delete", "nope"], 3, "no gateway nope"),
        (["update", "nope", "--endpoint", "https://e.com"], 3, "no gateway nope"),
        (["show", "bad name"], 2, "invalid gateway name"),
        (["list", "--bogus"], 2, "No such option"),
    ],
)
def test_cli_errors_and_exit_codes(args, code, message):
    Client().create_gateway("exists", "https://e.com")
    proc = run("gateway", *args)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert 1 <= len(proc.stderr.strip().splitlines()) <= 2  # README: one or two lines


def test_cli_delete():
    Client().create_gateway("g", "https://e.com")
    proc = run("gateway", "delete", "g", "-o", "json")
    assert json.loads(proc.stdout) == {"name": "g", "deleted": True}
    assert json.loads(run("gateway", "list", "-o", "json").stdout) == []


def test_cli_debug_traceback_only_with_debug():
    quiet = run("gateway", "show", "nope")
    loud = run("gateway", "show", "nope", env={"DEVBOX_DEBUG": "1"})
    assert "Traceback" not in quiet.stderr
    assert "Traceback" in loud.stderr
    assert "NotFoundError" in loud.stderr
