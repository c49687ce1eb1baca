"""Two devbox stores on one engine (two DEVBOX_HOMEs: two users, or two projects): one never
lists, updates, repairs or deletes (--all) a devbox the other made, so its credentials never
reach the other's proxy."""

from __future__ import annotations

import pytest

from tests.docker.conftest import RUN, Cli

pytestmark = pytest.mark.docker


def configure(cli: Cli, secret: str) -> None:
    cli("gateway", "create", "shared-gw", "--endpoint", "https://api.anthropic.com")
    cli("secret", "create", "SHARED", input=secret)
    cli("policy", "create", "shared-policy", "--allow", "api.anthropic.com")


def test_a_store_never_touches_another_stores_devbox(infra, tmp_path_factory):
    mine = Cli(tmp_path_factory.mktemp("home-mine"), infra)
    theirs = Cli(tmp_path_factory.mktemp("home-theirs"), infra)
    configure(mine, "sk-mine-0123456789")
    configure(theirs, "sk-theirs-0123456789")
    name = f"{RUN}-stores"
    mine("create", name, "--gateway", "SHARED_KEY=shared-gw:SHARED", "--network-policy",
         "shared-policy")  # fmt: skip
    try:
        # the same names in the other store: its updates reach none of my devboxes
        out = theirs.json("secret", "update", "SHARED", input="sk-theirs-rotated-0123456789")
        assert out["applied_to"] == []
        out = theirs.json("policy", "update", "shared-policy", "--add-allow", "example.org")
        assert out["applied_to"] == []
        assert name not in [d["name"] for d in theirs.json("list")]
        refused = theirs("repair", name, check=False)
        assert refused.returncode == 4
        assert "another devbox store" in refused.stderr
        theirs("delete", "--all")
        # mine is untouched, and my own updates still reach it
        assert [d["status"] for d in mine.json("list") if d["name"] == name] == ["running"]
        out = mine.json("secret", "update", "SHARED", input="sk-mine-rotated-0123456789")
        assert out["applied_to"] == [name]
        # in-use checks are per store too: theirs can delete its policy, mine cannot
        assert mine("policy", "delete", "shared-policy", check=False).returncode == 4
        theirs("policy", "delete", "shared-policy")
    finally:
        mine("delete", name, check=False)
