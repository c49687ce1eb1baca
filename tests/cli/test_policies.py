"""`devbox policy ...` run as a real subprocess against a per-test DEVBOX_HOME, plus the
PoliciesAPI hooks (push on update, refusal to delete while in use) through the Python API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DEVBOX = Path(sys.executable).with_name("devbox")


def run(*args: str, check_rc: int | None = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(DEVBOX), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
        timeout=60,
        check=False,
    )
    if check_rc is not None:
        assert proc.returncode == check_rc, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    if proc.returncode != 0:  # README: errors are one or two lines
        assert 1 <= len(proc.stderr.strip().splitlines()) <= 2, proc.stderr
    return proc


def run_json(*args: str):  # type: ignore[no-untyped-def]
    return json.loads(run(*args, "-o", "json").stdout)


def create_anthropic_only() -> dict:
    return run_json(
        "policy", "create", "anthropic-only",
        "--allow", "*.anthropic.com", "--allow", "anthropic.com",
        "--description", "Anthropic only",
    )  # fmt: skip


def test_create_list_show_delete_round_trip(devbox_home):
    created = create_anthropic_only()
    assert created["name"] == "anthropic-only"
    assert created["allow"] == ["*.anthropic.com", "anthropic.com"]
    assert created["deny"] == [] and created["allow_cidr"] == []
    assert created["allow_all"] is False
    assert created["description"] == "Anthropic only"
    assert created["created_at"].endswith("Z") and created["updated_at"] == created["created_at"]

    listed = run_json("policy", "list")
    assert isinstance(listed, list) and [p["name"] for p in listed] == ["anthropic-only"]
    assert listed[0] == created
    assert run_json("policy", "show", "anthropic-only") == created

    text = run("policy", "show", "anthropic-only").stdout
    assert "*.anthropic.com" in text and "anthropic.com" in text and "Anthropic only" in text
    assert "anthropic-only" in run("policy", "list").stdout

    stored = json.loads((devbox_home / "policies.json").read_text())
    assert stored["records"]["anthropic-only"]["allow"] == ["*.anthropic.com", "anthropic.com"]
    assert (devbox_home / "policies.json").stat().st_mode & 0o777 == 0o600

    assert run_json("policy", "delete", "anthropic-only") == {
        "name": "anthropic-only",
        "deleted": True,
    }
    assert run_json("policy", "list") == []
    gone = run("policy", "show", "anthropic-only", check_rc=3)
    assert "no policy anthropic-only" in gone.stderr
    assert "devbox policy create" in gone.stderr


def test_rules_are_stored_normalized_and_deduplicated():
    created = run_json(
        "policy", "create", "norm",
        "--allow", "API.Example.COM.", "--allow", "api.example.com",
        "--allow", "bücher.example", "--allow", "*.Example.org:8443",
        "--deny", "127.1", "--deny", "[::ffff:10.0.0.1]:22",
        "--allow-cidr", "10.0.0.5", "--allow-cidr", "::ffff:192.168.0.0/112",
        "--allow-all",
    )  # fmt: skip
    assert created["allow"] == ["api.example.com", "xn--bcher-kva.example", "*.example.org:8443"]
    assert created["deny"] == ["127.0.0.1", "10.0.0.1:22"]
    assert created["allow_cidr"] == ["10.0.0.5/32", "192.168.0.0/16"]
    assert created["allow_all"] is True


def test_empty_policy_warns_that_it_denies_everything():
    proc = run("policy", "create", "locked")
    assert "denies every destination except gateway routes" in proc.stderr
    assert run_json("policy", "check", "locked", "https://example.com")["allowed"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--allow", "*"], "'*' may only be the whole first label"),
        (["--allow", "a*.b.com"], "'*' may only be the whole first label"),
        (["--allow", "api.*.com"], "'*' may only be the whole first label"),
        (["--allow", "*.com"], "wildcard over a top-level domain"),
        (["--allow", "a..b.com"], "empty label"),
        (["--deny", "example.com:0"], "invalid port"),
        (["--deny", "example.com:70000"], "invalid port"),
        (["--allow", "example.com:https"], "invalid port"),
        (["--allow", "https://example.com/v1"], "not a URL"),
        (["--allow", "x" * 64 + ".com"], "over 63 characters"),
        (["--allow", "1.2.3.456"], "not a valid one"),
        (["--allow-cidr", "10.0.0.1/8"], "host bits set: did you mean 10.0.0.0/8?"),
        (["--allow-cidr", "banana"], "not a valid network"),
    ],
)
def test_invalid_rules_are_refused_with_exit_2(args, message):
    proc = run("policy", "create", "bad", *args, check_rc=2)
    assert message in proc.stderr
    assert "invalid --" in proc.stderr
    assert run_json("policy", "list") == []


@pytest.mark.parametrize("name", ["bad name", ".dot", "x" * 64, "a/b", ""])
def test_invalid_names_are_refused(name):
    proc = run("policy", "create", name, check_rc=2)
    assert "invalid policy name" in proc.stderr


def test_create_twice_is_a_conflict():
    create_anthropic_only()
    proc = run("policy", "create", "anthropic-only", "--allow", "x.com", check_rc=4)
    assert "already exists" in proc.stderr and "devbox policy update" in proc.stderr
    assert run_json("policy", "show", "anthropic-only")["allow"] == [
        "*.anthropic.com",
        "anthropic.com",
    ]


def test_update_replaces_adds_and_removes():
    before = create_anthropic_only()
    updated = run_json(
        "policy", "update", "anthropic-only",
        "--add-allow", "PyPI.org", "--add-allow", "anthropic.com",
        "--remove-allow", "*.anthropic.com",
        "--deny", "evil.anthropic.com", "--add-allow-cidr", "10.0.0.0/8",
    )  # fmt: skip
    assert updated["allow"] == ["anthropic.com", "pypi.org"]
    assert updated["deny"] == ["evil.anthropic.com"]
    assert updated["allow_cidr"] == ["10.0.0.0/8"]
    assert updated["description"] == "Anthropic only"
    assert updated["created_at"] == before["created_at"]
    assert updated["applied_to"] == []

    replaced = run_json("policy", "update", "anthropic-only", "--allow", "a.com", "--allow-all")
    assert replaced["allow"] == ["a.com"] and replaced["allow_all"] is True
    assert replaced["deny"] == ["evil.anthropic.com"]
    cleared = run_json(
        "policy", "update", "anthropic-only", "--no-allow-all", "--description", "",
        "--remove-allow-cidr", "10.0.0.0/8",
    )  # fmt: skip
    assert cleared["allow_all"] is False and cleared["description"] is None
    assert cleared["allow_cidr"] == []

    text = run("policy", "update", "anthropic-only", "--add-deny", "b.com")
    assert "updated policy anthropic-only" in text.stderr
    assert "no running devbox uses it" in text.stderr


def test_update_errors_leave_the_policy_alone():
    before = create_anthropic_only()
    proc = run("policy", "update", "anthropic-only", "--remove-allow", "nope.com", check_rc=2)
    assert "no such rule" in proc.stderr
    proc = run("policy", "update", "anthropic-only", "--add-allow", "*.*.com", check_rc=2)
    assert "'*' may only be the whole first label" in proc.stderr
    proc = run("policy", "update", "anthropic-only", check_rc=2)
    assert "nothing to update" in proc.stderr
    assert run_json("policy", "show", "anthropic-only") == before
    proc = run("policy", "update", "missing", "--allow", "x.com", check_rc=3)
    assert "no policy missing" in proc.stderr


def test_check_allowed_and_denied_by_name():
    create_anthropic_only()
    run("policy", "update", "anthropic-only", "--add-deny", "evil.anthropic.com")
    allowed = run_json("policy", "check", "anthropic-only", "https://api.anthropic.com/v1/messages")
    assert allowed["allowed"] is True
    assert allowed["rule"] == "allow:*.anthropic.com"
    assert "*.anthropic.com" in allowed["reason"]
    assert (allowed["host"], allowed["port"]) == ("api.anthropic.com", 443)

    apex = run_json("policy", "check", "anthropic-only", "http://ANTHROPIC.com.:8080/")
    assert (apex["allowed"], apex["rule"], apex["port"]) == (True, "allow:anthropic.com", 8080)

    denied = run_json("policy", "check", "anthropic-only", "https://evil.anthropic.com")
    assert (denied["allowed"], denied["rule"]) == (False, "deny:evil.anthropic.com")

    other = run("policy", "check", "anthropic-only", "evil.example.com:443")  # exit 0 all the same
    assert "denied" in other.stdout and "no-match" in other.stdout


def test_check_ip_literals_in_any_spelling():
    run("policy", "create", "open", "--allow-all")
    for url in ["http://127.0.0.1/", "http://127.1/", "http://0x7f000001/", "http://2130706433/",
                "http://[::ffff:127.0.0.1]/", "127.0.0.1:8080"]:  # fmt: skip
        result = run_json("policy", "check", "open", url)
        assert (result["allowed"], result["rule"]) == (False, "private:127.0.0.0/8"), url
        assert result["host"] == "127.0.0.1" and result["addresses"] == ["127.0.0.1"]
        assert "loopback" in result["reason"]
    metadata = run_json("policy", "check", "open", "http://169.254.169.254/latest/meta-data")
    assert (metadata["allowed"], metadata["rule"]) == (False, "private:169.254.0.0/16")

    run("policy", "create", "lab", "--allow-cidr", "10.0.0.0/8", "--allow", "anthropic.com")
    inside = run_json("policy", "check", "lab", "http://10.1.2.3:5000")
    assert (inside["allowed"], inside["rule"]) == (True, "allow-cidr:10.0.0.0/8")
    # an allow rule for a name does not let an IP literal in
    literal = run_json("policy", "check", "lab", "https://160.79.104.10/")
    assert (literal["allowed"], literal["rule"]) == (False, "no-match")


def test_check_a_name_that_resolves_checks_its_addresses():
    run("policy", "create", "local", "--allow", "localhost")
    refused = run_json("policy", "check", "local", "http://localhost:8080/")
    assert refused["resolved"] is True and "127.0.0.1" in refused["addresses"]
    assert (refused["allowed"], refused["rule"]) == (False, "private:127.0.0.0/8")
    run("policy", "update", "local", "--add-allow-cidr", "127.0.0.0/8", "--add-allow-cidr", "::1")
    allowed = run_json("policy", "check", "local", "http://localhost:8080/")
    assert (allowed["allowed"], allowed["rule"]) == (True, "allow:localhost")


def test_check_an_unresolvable_name_decides_on_the_name_only():
    create_anthropic_only()
    result = run_json("policy", "check", "anthropic-only", "https://nothing.anthropic.invalid")
    assert result["resolved"] is False and result["addresses"] == []
    assert result["allowed"] is False and result["rule"] == "no-match"
    assert "never looks it up" in result["reason"]
    run("policy", "update", "anthropic-only", "--add-allow", "*.anthropic.invalid")
    result = run_json("policy", "check", "anthropic-only", "https://x.y.anthropic.invalid")
    assert (result["allowed"], result["rule"]) == (True, "allow:*.anthropic.invalid")
    assert "decided on the name only" in result["reason"]
    text = run("policy", "check", "anthropic-only", "https://x.y.anthropic.invalid").stdout
    assert "allowed" in text and "does not resolve here" in text


@pytest.mark.parametrize(
    ("url", "rc", "message"),
    [
        ("", 2, "empty"),
        ("https://", 2, "has no host"),
        ("gopher://example.com", 2, "no default port"),
        ("http://example.com:99999", 2, "cannot parse"),
    ],
)
def test_check_bad_urls(url, rc, message):
    create_anthropic_only()
    proc = run("policy", "check", "anthropic-only", url, check_rc=rc)
    assert message in proc.stderr


def test_check_an_invalid_host_is_a_decision_not_a_crash():
    create_anthropic_only()
    result = run_json("policy", "check", "anthropic-only", "http://a..b.com/")
    assert (result["allowed"], result["rule"]) == (False, "invalid-host")


def test_check_unknown_policy():
    proc = run("policy", "check", "nope", "https://example.com", check_rc=3)
    assert "no policy nope" in proc.stderr


def test_corrupted_store_is_a_clear_error(devbox_home):
    (devbox_home / "policies.json").write_text("{not json")
    proc = run("policy", "list", check_rc=5)
    assert "policies.json" in proc.stderr
    assert (devbox_home / "policies.json").read_text() == "{not json"


def test_python_api_pushes_updates_and_refuses_deleting_a_used_policy(monkeypatch):
    from devbox_cli import Client
    from devbox_cli.errors import ConflictError, DockerUnavailableError
    from proxy.config import PolicySpec
    from proxy.policy import Decision, Policy

    client = Client()
    pushed: list[str] = []
    in_use = {"anthropic-only": ["agent"]}
    monkeypatch.setattr(client, "_refresh", lambda kind, name: pushed.append(name) or ["agent"])
    monkeypatch.setattr(client, "_devboxes_using", lambda kind, name: in_use.get(name, []))

    client.create_policy("anthropic-only", allow="*.anthropic.com")
    updated = client.update_policy("anthropic-only", add_allow=["anthropic.com"])
    assert pushed == ["anthropic-only"] and updated.applied_to == ("agent",)
    assert client.get_policy("anthropic-only").allow == ("*.anthropic.com", "anthropic.com")

    spec = client._policy_spec("anthropic-only")
    assert spec == PolicySpec("anthropic-only", allow=("*.anthropic.com", "anthropic.com"))
    assert Policy.compile(spec).decide("anthropic.com", 443).allowed

    check = client.check_policy("anthropic-only", "api.anthropic.com")
    assert isinstance(check, Decision) and check.allowed

    with pytest.raises(ConflictError) as info:
        client.delete_policy("anthropic-only")
    assert "agent" in str(info.value) and "--force" in str(info.value)
    client.delete_policy("anthropic-only", force=True)
    assert client.list_policies() == []

    def broken(kind, name):
        raise DockerUnavailableError("cannot reach Docker", "start it")

    client.create_policy("p", allow=["a.com"])
    monkeypatch.setattr(client, "_refresh", broken)
    with pytest.raises(DockerUnavailableError) as info:
        client.update_policy("p", allow=[])
    assert "was saved" in info.value.message
    assert client.get_policy("p").allow == ()


def test_check_never_looks_up_a_name_only_an_allow_cidr_covers():
    # The proxy admits a name by an allow rule only; an allow-cidr covers its addresses.
    # So `localhost` under an allow-cidr for loopback is refused, unresolved, as the proxy
    # refuses it (it used to resolve it and admit it by its address).
    run("policy", "create", "cidr-only", "--allow-cidr", "127.0.0.0/8", "--allow-cidr", "::1")
    result = run_json("policy", "check", "cidr-only", "http://localhost:8080/")
    assert (result["allowed"], result["rule"]) == (False, "no-match")
    assert result["resolved"] is False and result["addresses"] == []
    assert "never looks it up" in result["reason"]
    text = run("policy", "check", "cidr-only", "http://localhost:8080/").stdout
    assert "(not looked up)" in text
    literal = run_json("policy", "check", "cidr-only", "http://127.0.0.1:8080/")
    assert (literal["allowed"], literal["rule"]) == (True, "allow-cidr:127.0.0.0/8")
    run("policy", "update", "cidr-only", "--add-allow", "localhost")
    named = run_json("policy", "check", "cidr-only", "http://localhost:8080/")
    assert (named["allowed"], named["rule"], named["resolved"]) == (True, "allow:localhost", True)


def test_check_refuses_the_unspecified_address_and_cloud_endpoints():
    run("policy", "create", "wide", "--allow-all", "--allow-cidr", "0.0.0.0/0")
    for url in ("http://0.0.0.0:8080/", "http://0/", "http://[::]/"):
        result = run_json("policy", "check", "wide", url)
        assert (result["allowed"], result["rule"]) == (False, "own-address"), url
    azure = run_json("policy", "check", "wide", "http://168.63.129.16/machine")
    assert (azure["allowed"], azure["rule"]) == (False, "private:168.63.129.16/32")
    assert "Azure" in azure["reason"]
    gcp = run_json("policy", "check", "wide", "http://metadata.google.internal/")
    assert (gcp["allowed"], gcp["rule"]) == (False, "metadata:metadata.google.internal")
