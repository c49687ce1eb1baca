"""Intercepted CONNECTs (host gateways), connection by connection: real TLS from the client to
the proxy (a leaf from the devbox CA) and from the proxy to a real aiohttp upstream (a
certificate from the test CA), and every way a hostile box can open, speak or abuse such a
connection. Each test runs on asyncio's loop and on uvloop (conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl

import aiohttp
import pytest

from proxy.certs import new_authority
from tests.proxy.conftest import SECRET_A, TOKEN_A, TOKEN_B, make_config
from tests.proxy.forward_support import (
    LOOPBACK_CIDR,
    connect_request,
    loopback_resolver,
    read_response,
)
from tests.proxy.intercept.conftest import host_binding
from tests.proxy.intercept.support import (
    connection_record,
    exchange,
    request,
    tls_inside,
    trusting,
)
from tests.proxy.tls_hello import real_client_hello

BEARER = f"Authorization: Bearer {TOKEN_A}"


def authority_of(proxy) -> str:
    return f"localhost:{proxy.upstream.port}"


def upstream_saw_no_token(proxy) -> bool:
    return all(TOKEN_A not in repr(r) and TOKEN_B not in repr(r) for r in proxy.upstream.requests)


async def test_a_client_through_https_proxy_gets_the_credential_swapped_in(
    intercept_proxy, devbox_ca
):
    proxy = intercept_proxy
    url = f"https://{authority_of(proxy)}/v1/x?q=1"
    async with (
        aiohttp.ClientSession(trust_env=False) as session,
        session.get(
            url, proxy=proxy.url, ssl=trusting(devbox_ca), headers={"x-api-key": TOKEN_A}
        ) as resp,
    ):
        assert resp.status == 200
        echoed = await resp.json()
    seen = proxy.upstream.requests[0]
    assert seen["headers"]["Authorization"] == f"Bearer {SECRET_A}"
    assert "x-api-key" not in {k.lower() for k in seen["headers"]}
    assert (seen["path"], seen["query"]) == ("/v1/x", "q=1")
    assert seen["headers"]["Host"] == authority_of(proxy)
    assert upstream_saw_no_token(proxy)
    # the credential the upstream echoed is redacted on the way back
    assert SECRET_A not in repr(echoed) and "[REDACTED]" in repr(echoed)


async def test_keep_alive_requests_share_one_connection_and_one_connect_record(
    intercept_proxy, devbox_ca
):
    proxy = intercept_proxy
    host = authority_of(proxy)
    async with tls_inside(proxy, host, devbox_ca) as (reader, writer):
        for i in range(3):
            (answer,) = await exchange(
                reader, writer, request(f"/n{i}", authority_of(proxy), BEARER)
            )
            assert answer.status == 200
    record = await connection_record(proxy)
    assert (record["status"], record["decision"], record["rule"]) == (200, "allow", "intercept")
    assert record["prefix"] == "GH_TOKEN"
    requests = [r for r in proxy.audit_records if r["kind"] == "intercept"]
    assert [r["path"] for r in requests] == ["/n0", "/n1", "/n2"]
    assert all(r["credential"] is True and r["rule"] == "gateway" for r in requests)


async def test_pipelined_requests_are_answered_in_order_each_with_the_credential(
    intercept_proxy, devbox_ca
):
    proxy = intercept_proxy
    host = authority_of(proxy)
    pipelined = request("/a", host, BEARER) + request("/b", host) + request("/c", host, BEARER)
    async with tls_inside(proxy, host, devbox_ca) as (reader, writer):
        answers = await exchange(reader, writer, pipelined, answers=3)
    assert [a.status for a in answers] == [200, 200, 200]
    seen = proxy.upstream.requests
    assert [r["path"] for r in seen] == ["/a", "/b", "/c"]
    assert [r["headers"].get("Authorization") for r in seen] == [
        f"Bearer {SECRET_A}", None, f"Bearer {SECRET_A}",
    ]  # fmt: skip


async def test_http_1_0_without_host_is_served_for_the_connections_host(intercept_proxy, devbox_ca):
    proxy = intercept_proxy
    async with tls_inside(proxy, authority_of(proxy), devbox_ca) as (reader, writer):
        (answer,) = await exchange(reader, writer, request("/old", None, BEARER, version="1.0"))
    assert answer.status == 200
    assert proxy.upstream.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET_A}"


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("localhost:1", 421),  # the same name, another port
        ("other.example:{port}", 421),
        ("example.com", 421),
        ("localhost:{port}@evil", 400),
        (None, 400),  # HTTP/1.1 needs one
    ],
)
async def test_a_host_header_naming_another_host_never_gets_a_credential(
    intercept_proxy, devbox_ca, host, status
):
    proxy = intercept_proxy
    value = host.format(port=proxy.upstream.port) if host else None
    async with tls_inside(proxy, authority_of(proxy), devbox_ca) as (reader, writer):
        (answer,) = await exchange(reader, writer, request("/x", value, BEARER))
    assert answer.status == status
    assert proxy.upstream.requests == []


async def test_two_host_headers_are_refused(intercept_proxy, devbox_ca):
    proxy = intercept_proxy
    host = authority_of(proxy)
    async with tls_inside(proxy, host, devbox_ca) as (reader, writer):
        (answer,) = await exchange(reader, writer, request("/x", host, f"Host: {host}", BEARER))
    assert answer.status == 400
    assert proxy.upstream.requests == []


async def test_a_host_of_another_gateway_is_421_not_that_gateways_credential(
    start_proxy, upstream, ca, devbox_ca
):
    # two host gateways, two upstreams: a connection to the first that names the second
    first, second = await upstream(tls=True), await upstream(tls=True)
    config = make_config(
        host_binding(first, ca, prefix="ONE", token=TOKEN_A),
        host_binding(second, ca, prefix="TWO", token=TOKEN_B, credential="sk-second-credential"),
    )
    proxy = await start_proxy(dataclasses.replace(config, ca=devbox_ca))
    async with tls_inside(proxy, f"localhost:{first.port}", devbox_ca) as (reader, writer):
        (answer,) = await exchange(
            reader,
            writer,
            request("/x", f"localhost:{second.port}", f"Authorization: Bearer {TOKEN_B}"),
        )
        assert answer.status == 421
    assert first.requests == [] and second.requests == []
    # and the second gateway's token sent to the first host is no credential there
    async with tls_inside(proxy, f"localhost:{first.port}", devbox_ca) as (reader, writer):
        host = f"localhost:{first.port}"
        (answer,) = await exchange(
            reader, writer, request("/x", host, f"Authorization: Bearer {TOKEN_B}")
        )
    assert answer.status == 200
    assert "Authorization" not in first.requests[0]["headers"]
    assert TOKEN_B not in repr(first.requests)


async def test_a_server_name_that_is_not_the_connect_host_fails_the_handshake(
    intercept_proxy, devbox_ca
):
    proxy = intercept_proxy
    with pytest.raises((ssl.SSLError, ConnectionError)) as refused:
        async with tls_inside(proxy, authority_of(proxy), devbox_ca, sni="evil.example"):
            pass
    if isinstance(refused.value, ssl.SSLError):  # the alert arrived before the close
        assert "UNRECOGNIZED_NAME" in str(refused.value).upper()
    record = await connection_record(proxy)
    assert (record["decision"], record["rule"]) == ("deny", "intercept:tls-sni-mismatch")
    assert proxy.upstream.requests == []


async def test_a_hello_without_a_server_name_is_refused_before_any_request(
    intercept_proxy, devbox_ca
):
    proxy = intercept_proxy
    # the proxy cuts the connection when its handshake is done: the client may be reset
    # while it still finishes its own, or when it sends its request
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        async with tls_inside(proxy, authority_of(proxy), devbox_ca, sni=None) as (r, w):
            w.write(request("/x", authority_of(proxy), BEARER))
            await w.drain()
            assert await r.read() == b""
    record = await connection_record(proxy)
    assert (record["decision"], record["rule"]) == ("deny", "intercept:tls-sni-missing")
    assert proxy.upstream.requests == []


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",  # plain HTTP where TLS was due
        b"\x16\x03\x01\x00\x05hello",  # a record that is no ClientHello
        bytes(range(256)) * 4,
    ],
    ids=["plain-http", "bad-record", "noise"],
)
async def test_garbage_instead_of_tls_closes_the_connection(intercept_proxy, garbage):
    proxy = intercept_proxy
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(connect_request(authority_of(proxy)))
    await writer.drain()
    assert (await read_response(reader)).status == 200
    writer.write(garbage)
    await writer.drain()
    async with asyncio.timeout(10):
        rest = await reader.read()
    writer.close()
    assert b"HTTP/1." not in rest  # no HTTP answer, at most a TLS alert
    record = await connection_record(proxy)
    assert (record["decision"], record["rule"]) == ("deny", "intercept:tls-handshake")
    assert proxy.upstream.requests == []


async def test_a_client_that_never_finishes_the_handshake_is_cut(
    start_proxy, https_upstream, ca, devbox_ca
):
    from proxy.context import Settings

    config = dataclasses.replace(make_config(host_binding(https_upstream, ca)), ca=devbox_ca)
    proxy = await start_proxy(config, Settings(header_timeout=0.5))
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(connect_request(f"localhost:{https_upstream.port}"))
    await writer.drain()
    assert (await read_response(reader)).status == 200
    writer.write(real_client_hello("localhost")[:20])  # and then nothing
    await writer.drain()
    async with asyncio.timeout(10):
        assert b"HTTP/" not in await reader.read()
    writer.close()
    record = await connection_record(proxy)
    assert record["decision"] == "deny"
    assert record["rule"] in ("intercept:tls-timeout", "intercept:tls-handshake")


async def test_garbage_inside_tls_is_400_and_reaches_nobody(intercept_proxy, devbox_ca):
    proxy = intercept_proxy
    async with tls_inside(proxy, authority_of(proxy), devbox_ca) as (reader, writer):
        (answer,) = await exchange(reader, writer, b"\x00\x01 not http at all\r\n\r\n")
    assert answer.status == 400
    assert proxy.upstream.requests == []


async def test_a_hello_sent_before_the_200_is_refused(intercept_proxy):
    proxy = intercept_proxy
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(connect_request(authority_of(proxy)) + real_client_hello("localhost"))
    await writer.drain()
    answer = await read_response(reader)
    writer.close()
    assert answer.status == 400
    record = await connection_record(proxy)
    assert (record["status"], record["rule"]) == (400, "intercept:early-data")


@pytest.mark.parametrize(
    "smuggled",
    [
        # CL and TE together: which one frames the body decides where the next request starts
        "POST /a HTTP/1.1\r\nHost: {h}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n"
        "\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: {h}\r\n\r\n",
        "POST /a HTTP/1.1\r\nHost: {h}\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd",
        "POST /a HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
        "GET /smuggled HTTP/1.1\r\nHost: {h}\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: {h}\r\n Obs: fold\r\n\r\n",
        "GET /a HTTP/1.1\nHost: {h}\n\n",
    ],
    ids=["cl-te", "two-cl", "te-gzip", "obs-fold", "bare-lf"],
)
async def test_request_smuggling_attempts_are_refused(intercept_proxy, devbox_ca, smuggled):
    proxy = intercept_proxy
    data = smuggled.format(h=authority_of(proxy)).encode()
    async with tls_inside(proxy, authority_of(proxy), devbox_ca) as (reader, writer):
        (answer,) = await exchange(reader, writer, data)
        assert await reader.read() == b""  # and the connection is closed behind it
    assert answer.status == (501 if "gzip" in smuggled else 400)
    assert "/smuggled" not in [r["path"] for r in proxy.upstream.requests]
    assert proxy.upstream.requests == []


async def test_a_huge_header_is_431(intercept_proxy, devbox_ca):
    proxy = intercept_proxy
    big = "x-big: " + "a" * 40_000
    async with tls_inside(proxy, authority_of(proxy), devbox_ca) as (reader, writer):
        (answer,) = await exchange(reader, writer, request("/x", authority_of(proxy), big))
    assert answer.status == 431
    assert proxy.upstream.requests == []


@pytest.mark.parametrize(
    ("line", "status"),
    [
        ("GET https://example.com/x HTTP/1.1", 400),  # absolute-form: it could name anything
        ("CONNECT example.com:443 HTTP/1.1", 405),
        ("TRACE /x HTTP/1.1", 405),
    ],
)
async def test_targets_that_could_leave_the_host_are_refused(
    intercept_proxy, devbox_ca, line, status
):
    proxy = intercept_proxy
    data = f"{line}\r\nHost: {authority_of(proxy)}\r\n{BEARER}\r\n\r\n".encode()
    async with tls_inside(proxy, authority_of(proxy), devbox_ca) as (reader, writer):
        (answer,) = await exchange(reader, writer, data)
    assert answer.status == status
    assert proxy.upstream.requests == []


async def test_an_upstream_with_an_untrusted_certificate_is_a_clear_502(
    start_proxy, https_upstream, devbox_ca
):
    import trustme

    stranger = trustme.CA()  # the gateway trusts this CA, not the one the upstream uses
    binding = host_binding(https_upstream, stranger)
    proxy = await start_proxy(dataclasses.replace(make_config(binding), ca=devbox_ca))
    host = f"localhost:{https_upstream.port}"
    async with tls_inside(proxy, host, devbox_ca) as (reader, writer):
        (answer,) = await exchange(reader, writer, request("/x", host, BEARER))
    assert answer.status == 502
    assert answer.body == b"upstream TLS verification failed\n"
    assert https_upstream.requests == []


async def test_a_host_no_gateway_names_is_still_a_tunnel_to_its_own_certificate(
    start_proxy, https_upstream, upstream, ca, devbox_ca
):
    other = await upstream(tls=True)  # not intercepted: same name, another port
    config = dataclasses.replace(
        make_config(host_binding(https_upstream, ca), policy=LOOPBACK_CIDR), ca=devbox_ca
    )
    proxy = await start_proxy(config, resolver=loopback_resolver("localhost"))
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(connect_request(f"localhost:{other.port}"))
    await writer.drain()
    assert (await read_response(reader)).status == 200
    test_ca = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
    await writer.start_tls(test_ca, server_hostname="localhost")  # the upstream's own cert
    writer.write(request("/t", f"localhost:{other.port}", BEARER))
    await writer.drain()
    answer = await read_response(reader)
    writer.close()
    assert answer.status == 200
    assert other.requests[0]["headers"]["Authorization"] == f"Bearer {TOKEN_A}"  # untouched


async def test_a_live_update_dropping_the_host_ends_its_interception(intercept_proxy, devbox_ca):
    proxy = intercept_proxy
    host = authority_of(proxy)
    async with tls_inside(proxy, host, devbox_ca) as (reader, writer):
        (answer,) = await exchange(reader, writer, request("/before", host, BEARER))
        assert answer.status == 200
        state = proxy.ctx.state
        binding = dataclasses.replace(state.config.gateways[0], hosts=())
        proxy.reload(dataclasses.replace(state.config, gateways=(binding,), ca=None))
        (answer,) = await exchange(reader, writer, request("/after", host, BEARER))
        assert answer.status == 421
        assert await reader.read() == b""  # closed: the next CONNECT decides anew
    assert [r["path"] for r in proxy.upstream.requests] == ["/before"]


async def test_a_rotated_credential_applies_to_an_open_connection(intercept_proxy, devbox_ca):
    proxy = intercept_proxy
    host = authority_of(proxy)
    async with tls_inside(proxy, host, devbox_ca) as (reader, writer):
        await exchange(reader, writer, request("/one", host, BEARER))
        state = proxy.ctx.state
        binding = dataclasses.replace(state.config.gateways[0], credential="sk-rotated-credential")
        proxy.reload(dataclasses.replace(state.config, gateways=(binding,)))
        await exchange(reader, writer, request("/two", host, BEARER))
    auths = [r["headers"]["Authorization"] for r in proxy.upstream.requests]
    assert auths == [f"Bearer {SECRET_A}", "Bearer sk-rotated-credential"]


async def test_expect_100_continue_is_answered_by_the_proxy(intercept_proxy, devbox_ca):
    proxy = intercept_proxy
    host = authority_of(proxy)
    head = request("/up", host, BEARER, "Content-Length: 5", "Expect: 100-continue", method="POST")
    async with tls_inside(proxy, host, devbox_ca) as (reader, writer):
        (interim,) = await exchange(reader, writer, head)
        assert interim.status == 100
        (answer,) = await exchange(reader, writer, b"hello")
    assert answer.status == 200
    seen = proxy.upstream.requests[0]
    assert "expect" not in {k.lower() for k in seen["headers"]}


async def test_leaves_are_minted_once_per_host(intercept_proxy, devbox_ca):
    proxy = intercept_proxy
    for _ in range(3):
        async with tls_inside(proxy, authority_of(proxy), devbox_ca) as (reader, writer):
            await exchange(reader, writer, request("/x", authority_of(proxy), BEARER))
    assert proxy.ctx.state.leaves.minted == 1


async def test_a_box_that_trusts_another_ca_cannot_be_fooled_by_it(intercept_proxy):
    proxy = intercept_proxy
    other = new_authority("not this devbox", ["localhost"])
    with pytest.raises(ssl.SSLCertVerificationError):
        async with tls_inside(proxy, authority_of(proxy), other):
            pass


async def test_a_request_head_that_never_ends_inside_tls_is_cut(
    start_proxy, https_upstream, ca, devbox_ca
):
    from proxy.context import Settings

    config = dataclasses.replace(make_config(host_binding(https_upstream, ca)), ca=devbox_ca)
    proxy = await start_proxy(config, Settings(header_timeout=0.5))
    host = f"localhost:{https_upstream.port}"
    async with tls_inside(proxy, host, devbox_ca) as (reader, writer):
        writer.write(f"GET /slow HTTP/1.1\r\nHost: {host}\r\nX-Drip: ".encode())
        await writer.drain()
        async with asyncio.timeout(10):
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                assert b"HTTP/" not in await reader.read()
    assert https_upstream.requests == []
    record = await connection_record(proxy)
    assert (record["decision"], record["rule"]) == ("allow", "intercept")  # served, then cut
