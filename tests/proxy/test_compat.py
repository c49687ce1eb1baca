"""The proxy's aiohttp pin and the private aiohttp parts it relies on (proxy/compat.py)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from proxy import compat
from proxy.app import ProxyApp

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("spec", [compat.AIOHTTP_SPEC, compat.CRYPTOGRAPHY_SPEC])
def test_the_package_and_the_proxy_image_pin_the_same(spec):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert spec in project["dependencies"]
    image_reqs = (ROOT / "proxy" / "requirements.txt").read_text().split()
    assert spec in image_reqs


@pytest.mark.parametrize(
    ("name", "spec", "bounds"),
    [
        ("aiohttp", compat.AIOHTTP_SPEC, compat.AIOHTTP_RANGE),
        ("cryptography", compat.CRYPTOGRAPHY_SPEC, compat.CRYPTOGRAPHY_RANGE),
    ],
)
def test_the_spec_and_the_range_say_the_same(name, spec, bounds):
    (low, high) = bounds
    assert f"{name}>={'.'.join(map(str, low))},<{'.'.join(map(str, high))}" == spec


def test_the_installed_aiohttp_has_everything_the_proxy_reaches_into():
    assert compat.problems() == []


@pytest.mark.parametrize(
    ("text", "version"),
    [("3.14.5", (3, 14, 5)), ("3.15.0a1", (3, 15, 0)), ("4.0.0.dev0", (4, 0, 0))],
)
def test_version_parsing(text, version):
    assert compat._version(text) == version


def test_an_aiohttp_out_of_range_is_named(monkeypatch):
    monkeypatch.setattr(compat.aiohttp, "__version__", "3.15.0")
    assert compat.problems() == [
        f"aiohttp 3.15.0 is outside the tested range {compat.AIOHTTP_SPEC}"
    ]


def test_a_cryptography_out_of_range_or_missing_is_named(monkeypatch):
    real = compat.importlib.metadata.version

    def version(name):
        return "51.0.0" if name == "cryptography" else real(name)

    monkeypatch.setattr(compat.importlib.metadata, "version", version)
    assert compat.problems() == [
        f"cryptography 51.0.0 is outside the tested range {compat.CRYPTOGRAPHY_SPEC}"
    ]

    def missing(name):
        raise compat.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(compat.importlib.metadata, "version", missing)
    assert compat.problems() == [f"cryptography is not installed ({compat.CRYPTOGRAPHY_SPEC})"]


def test_a_moved_handler_attribute_is_named(monkeypatch):
    monkeypatch.setattr(compat, "HANDLER_ATTRS", (*compat.HANDLER_ATTRS, "_gone_in_4"))
    assert compat.problems() == ["RequestHandler._gone_in_4"]


def test_a_changed_connect_signature_is_named(monkeypatch):
    monkeypatch.setattr(compat, "CONNECT_PARAMS", ("self", "req"))
    assert compat.problems() == ["TCPConnector.connect('self', 'req', 'traces', 'timeout')"]


async def test_the_proxy_refuses_to_start_on_changed_internals(monkeypatch):
    monkeypatch.setattr(compat, "SERVER_ATTRS", (*compat.SERVER_ATTRS, "_gone_in_4"))
    app = ProxyApp()
    try:
        with pytest.raises(RuntimeError, match=r"web\.Server\._gone_in_4 .*aiohttp>="):
            await app.start()
    finally:
        await app.close()


async def test_the_proxy_starts_and_reports_its_address():
    app = ProxyApp()
    try:
        await app.start()
        assert app.host == "127.0.0.1"
        assert isinstance(app.port, int)
        assert app.port > 0
    finally:
        await app.close()
