"""What a CONNECT tunnel carries (issue 7 item 4): the TLS server name and every plain-HTTP
Host inside a tunnel must be the CONNECT host, so an allowed host can't front a denied one.

End to end: a real TLS upstream (the test CA, one certificate for an allowed and a denied
name, as a shared CDN has) behind the proxy, real clients (asyncio's TLS, curl), and raw
sockets for fragmented, malformed and ECH ClientHellos. Then the guard alone, table-driven.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl

import pytest
from aiohttp import web

from proxy.config import PolicySpec
from proxy.context import Settings
from proxy.tunnel_guard import Refused, TunnelGuard, parse_client_hello
from tests.proxy.conftest import make_config
from tests.proxy.forward_support import FakeResolver, NullStream, connect_request, read_response
from tests.proxy.tls_hello import (
    handshake,
    hello_body,
    real_client_hello,
    records,
    sni_extension,
    synthetic_hello,
    unwrap_records,
    vec,
    with_extension,
)

DENIED = "denied.test"
POLICY = PolicySpec(name="fronting", allow=("localhost",), allow_cidr=("127.0.0.0/8",))


@pytest.fixture
async def cdn(ca):
    """An HTTPS server answering for `localhost` and `denied.test` alike (one certificate):
    `(port, requests)`; each request is recorded with the Host it named."""
    requests: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        requests.append(request.host)
        return web.json_response({"host": request.host})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", DENIED, "127.0.0.1").configure_cert(ctx)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    yield site._server.sockets[0].getsockname()[1], requests
    await runner.cleanup()


@pytest.fixture
async def guard_proxy(start_proxy):
    resolver = FakeResolver({"localhost": ["127.0.0.1"], DENIED: ["127.0.0.1"]})
    return await start_proxy(make_config(policy=POLICY), resolver=resolver)


@pytest.fixture
async def sink():
    """A raw TCP upstream that keeps every byte it receives: `(port, received)`."""
    received = bytearray()

    async def keep(reader, writer):
        while chunk := await reader.read(65536):
            received.extend(chunk)
        writer.close()

    server = await asyncio.start_server(keep, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], received
    server.close()
    await server.wait_closed()


async def tunnel(proxy, authority: str):
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(connect_request(authority))
    await writer.drain()
    resp = await read_response(reader)
    assert resp.status == 200
    return reader, writer


async def audited(proxy) -> dict:
    async with asyncio.timeout(10):
        while not proxy.audit_records:
            await asyncio.sleep(0.01)
    [record] = proxy.audit_records
    return record


async def https_get(proxy, authority: str, server_hostname: str | None, ca) -> dict:
    reader, writer = await tunnel(proxy, authority)
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ctx.check_hostname = server_hostname is not None
    try:
        await writer.start_tls(ctx, server_hostname=server_hostname)
        host = server_hostname or authority
        writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        resp = await read_response(reader)
        return json.loads(resp.body)
    finally:
        writer.close()


async def closed_without_an_answer(reader) -> None:
    async with asyncio.timeout(10):
        with contextlib.suppress(ConnectionResetError):
            assert await reader.read() == b""


# --- TLS: real clients ------------------------------------------------------------------


async def test_sni_of_the_connect_host_goes_through(guard_proxy, cdn, ca):
    port, requests = cdn
    assert (await https_get(guard_proxy, f"localhost:{port}", "LocalHost", ca))["host"]
    assert requests == ["LocalHost"]
    record = await audited(guard_proxy)
    assert (record["decision"], record["rule"]) == ("allow", "allow:localhost")


async def test_domain_fronting_through_an_allowed_connect_is_refused(guard_proxy, cdn, ca):
    port, requests = cdn
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        await https_get(guard_proxy, f"localhost:{port}", DENIED, ca)
    assert requests == []  # the denied virtual host never saw a request
    record = await audited(guard_proxy)
    assert (record["host"], record["status"]) == ("localhost", 200)  # the 200 had gone out
    assert (record["decision"], record["rule"]) == ("deny", "tunnel:tls-sni-mismatch")


async def test_curl_fronting_with_connect_to_is_refused(guard_proxy, cdn, ca, tmp_path):
    port, requests = cdn
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    async def curl(*args: str) -> int:
        proc = await asyncio.create_subprocess_exec(
            "curl", "-sS", "--noproxy", "", "-x", guard_proxy.url, "--cacert", str(ca_file),
            *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode is not None
        return proc.returncode

    # CONNECT localhost, TLS server name denied.test
    fronted = await curl("--connect-to", f"{DENIED}:{port}:localhost:{port}",
                         f"https://{DENIED}:{port}/")  # fmt: skip
    assert fronted != 0
    assert requests == []
    record = await audited(guard_proxy)
    assert (record["host"], record["rule"]) == ("localhost", "tunnel:tls-sni-mismatch")
    assert await curl(f"https://localhost:{port}/") == 0
    assert requests == [f"localhost:{port}"]


async def test_a_hello_without_sni_is_refused_on_a_name(guard_proxy, cdn, ca):
    port, requests = cdn
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        await https_get(guard_proxy, f"localhost:{port}", None, ca)
    assert requests == []
    assert (await audited(guard_proxy))["rule"] == "tunnel:tls-sni-missing"


async def test_ip_literal_connect_takes_no_sni_or_an_admitted_one(start_proxy, cdn, ca):
    port, requests = cdn
    resolver = FakeResolver({})
    proxy = await start_proxy(make_config(policy=POLICY), resolver=resolver)
    assert await https_get(proxy, f"127.0.0.1:{port}", None, ca)
    assert await https_get(proxy, f"127.0.0.1:{port}", "localhost", ca)  # admitted by name
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        await https_get(proxy, f"127.0.0.1:{port}", DENIED, ca)  # no rule admits it
    assert len(requests) == 2
    assert proxy.audit_records[-1]["rule"] == "tunnel:tls-sni-not-allowed"
    assert resolver.calls == []  # the SNI is checked against the literal, never resolved


# --- TLS: raw sockets -------------------------------------------------------------------


async def send_in_pieces(writer, data: bytes, piece: int) -> None:
    for i in range(0, len(data), piece):
        writer.write(data[i : i + piece])
        await writer.drain()
        await asyncio.sleep(0.001)  # separate TCP reads on the proxy's side


@pytest.mark.parametrize("record_size", [16384, 1, 7, 100])
async def test_a_fragmented_hello_is_reassembled(guard_proxy, sink, record_size):
    port, received = sink
    hello = records(unwrap_records(real_client_hello("localhost")), record_size)
    reader, writer = await tunnel(guard_proxy, f"localhost:{port}")
    await send_in_pieces(writer, hello + b"\x17\x03\x03\x00\x01x", 17)
    writer.write_eof()
    await closed_without_an_answer(reader)
    writer.close()
    assert bytes(received) == hello + b"\x17\x03\x03\x00\x01x"  # every byte, in order
    assert (await audited(guard_proxy))["decision"] == "allow"


async def refusal(proxy, sink, data: bytes, piece: int) -> str:
    """Send `data` through a tunnel to `sink` in pieces: the tunnel must close with nothing
    delivered; the audited rule."""
    port, received = sink
    reader, writer = await tunnel(proxy, f"localhost:{port}")
    await send_in_pieces(writer, data, piece)
    await closed_without_an_answer(reader)
    writer.close()
    assert bytes(received) == b""
    return (await audited(proxy))["rule"]


@pytest.mark.parametrize("record_size", [16384, 1, 50])
async def test_a_fragmented_fronting_hello_is_refused(guard_proxy, sink, record_size):
    hello = records(unwrap_records(real_client_hello(DENIED)), record_size)
    assert await refusal(guard_proxy, sink, hello, 11) == "tunnel:tls-sni-mismatch"


async def test_ech_in_a_real_hello_is_refused(guard_proxy, sink):
    hello = with_extension(real_client_hello("localhost"), 0xFE0D, b"\x00" * 40)
    assert await refusal(guard_proxy, sink, hello, len(hello)) == "tunnel:tls-ech"


async def test_a_partial_hello_is_refused_after_the_head_timeout(start_proxy, sink):
    port, received = sink
    proxy = await start_proxy(
        make_config(policy=POLICY),
        Settings(header_timeout=0.2),
        resolver=FakeResolver({"localhost": ["127.0.0.1"]}),
    )
    hello = real_client_hello("localhost")
    reader, writer = await tunnel(proxy, f"localhost:{port}")
    writer.write(hello[: len(hello) // 2])
    await closed_without_an_answer(reader)
    writer.close()
    assert bytes(received) == b""
    assert (await audited(proxy))["rule"] == "tunnel:inspect-timeout"


# --- plain HTTP inside a tunnel ---------------------------------------------------------


def get(host: str, extra: str = "", path: str = "/") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


async def test_plain_http_with_the_connect_host_goes_through(guard_proxy, http_upstream):
    port = http_upstream.port
    reader, writer = await tunnel(guard_proxy, f"localhost:{port}")
    body = b"GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n"  # a body is not a request
    first = get(f"localhost:{port}", f"Content-Length: {len(body)}\r\n", path="/a")
    writer.write(
        first.replace(b"GET", b"POST")
        + body
        + b"POST /b HTTP/1.1\r\nHost: LocalHost.\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"5;x=y\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"
        + get(f"localhost:{port}", "Connection: close\r\n", path="/c")
    )  # fmt: skip
    for _ in range(3):
        assert (await read_response(reader)).status == 200
    writer.close()
    assert [r["path"] for r in http_upstream.requests] == ["/a", "/b", "/c"]
    assert (await audited(guard_proxy))["decision"] == "allow"


L = "localhost"
SECOND_REQUESTS = [
    (get(DENIED), "tunnel:http-host-mismatch"),
    (get("localhost:1"), "tunnel:http-host-mismatch"),
    (b"GET / HTTP/1.1\r\n\r\n", "tunnel:http-host-missing"),
    (b"GET http://denied.test/ HTTP/1.1\r\nHost: localhost\r\n\r\n", "tunnel:http-absolute-form"),
    (b"CONNECT denied.test:443 HTTP/1.1\r\nHost: localhost\r\n\r\n", "tunnel:http-connect"),
    (get(L, "Upgrade: websocket\r\nConnection: Upgrade\r\n"), "tunnel:http-upgrade"),
    (get(L, "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n"), "tunnel:http-framing"),
    (get(L, "Transfer-Encoding: gzip, chunked\r\n"), "tunnel:http-framing"),
    (get(L, "Content-Length: 1\r\nContent-Length: 2\r\n"), "tunnel:http-framing"),
    (b"GET / HTTP/1.1\r\nHost: localhost\r\n X: folded\r\n\r\n", "tunnel:http-malformed"),
    (get(L, f"Host: {DENIED}\r\n"), "tunnel:http-malformed"),
    (b"GET / HTTP/1.1\r\nHost: localhost\nHost: denied.test\r\n\r\n", "tunnel:http-malformed"),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "tunnel:http-malformed"),
]


@pytest.mark.parametrize(("second", "rule"), SECOND_REQUESTS)
async def test_a_second_request_naming_another_host_closes_the_tunnel(
    guard_proxy, http_upstream, second, rule
):
    port = http_upstream.port
    reader, writer = await tunnel(guard_proxy, f"localhost:{port}")
    writer.write(get(f"localhost:{port}"))  # keep-alive
    assert (await read_response(reader)).status == 200
    writer.write(second)
    await closed_without_an_answer(reader)
    writer.close()
    assert len(http_upstream.requests) == 1
    assert (await audited(guard_proxy))["rule"] == rule


async def test_pipelined_requests_are_each_checked(guard_proxy, http_upstream):
    port = http_upstream.port
    reader, writer = await tunnel(guard_proxy, f"localhost:{port}")
    writer.write(get(f"localhost:{port}") + get(DENIED))  # one write, two requests
    await closed_without_an_answer(reader)
    writer.close()
    assert [r["headers"]["Host"] for r in http_upstream.requests] in ([], [f"localhost:{port}"])
    assert (await audited(guard_proxy))["rule"] == "tunnel:http-host-mismatch"


async def test_other_protocols_pass_untouched(guard_proxy, sink):
    port, received = sink
    reader, writer = await tunnel(guard_proxy, f"localhost:{port}")
    data = b"SSH-2.0-OpenSSH_9.6\r\n" + bytes(range(256)) * 4
    writer.write(data)
    writer.write_eof()
    await closed_without_an_answer(reader)
    writer.close()
    assert bytes(received) == data


# --- the guard alone ----------------------------------------------------------------------


def guard(expected: str = "localhost") -> TunnelGuard:
    def check(name):
        return None if name == expected else "mismatch"

    return TunnelGuard(check, check)


def hello_with(exts, **kw) -> bytes:
    return records(handshake(hello_body(exts, **kw)))


SNI = sni_extension(b"localhost")
PARTIAL_THEN_ALERT = records(handshake(hello_body([]))[:10]) + b"\x15\x03\x03\x00\x02\x02\x28"
MALFORMED = [
    ("not a ClientHello", records(handshake(hello_body([]), msg_type=2))),
    ("record version 2", b"\x16\x02\x01" + vec(2, handshake(hello_body([])))),
    ("zero-length record", b"\x16\x03\x01\x00\x00"),
    ("alert record mid-hello", PARTIAL_THEN_ALERT),
    ("session id of 33", hello_with([], session_id=b"x" * 33)),
    ("no cipher suites", records(handshake(b"\x03\x03" + bytes(32) + b"\x00\x00\x00\x01\x00"))),
    (
        "odd cipher suites",
        records(handshake(b"\x03\x03" + bytes(32) + b"\x00\x00\x01\x13\x01\x00")),
    ),
    ("extensions overrun", records(handshake(hello_body(None) + b"\x00\x10\x00\x00"))),
    ("bytes after extensions", records(handshake(hello_body([SNI]) + b"\x00"))),
    ("duplicate SNI extension", hello_with([SNI, SNI])),
    ("two host names", hello_with([sni_extension(b"localhost", b"denied.test")])),
    ("unknown name type", hello_with([sni_extension(b"localhost", name_type=1)])),
    ("NUL in the name", hello_with([sni_extension(b"localhost\x00.evil")])),
    ("empty name list", hello_with([(0, vec(2, b""))])),
    ("message behind the hello", records(handshake(hello_body([SNI])) + b"\x01")),
    ("SSLv2 hello", b"\x80\x2e\x01\x03\x01"),
]


@pytest.mark.parametrize(("what", "data"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_hellos_are_refused(what, data):
    g = guard()
    with pytest.raises(Refused) as info:
        g.feed(data + b"\x00" * 8)  # enough bytes behind it that a complete hello is seen
    assert info.value.rule.startswith("tunnel:tls-"), what


@pytest.mark.parametrize("kind", [0xFE0D, 0xFFCE])
def test_ech_and_esni_are_refused(kind):
    with pytest.raises(Refused, match="tunnel:tls-ech"):
        guard().feed(synthetic_hello("localhost", extra=[(kind, b"\x00" * 8)]))


def test_the_hello_is_bounded():
    huge = records(handshake(hello_body([(0x15, b"\x00" * 60000)]) + b"\x00" * 10000))
    with pytest.raises(Refused, match="tunnel:tls-malformed"):
        guard().feed(huge)
    g = guard()
    with pytest.raises(Refused):  # tiny records: the buffered headers are bounded too
        for i in range(0, 200_000):
            g.feed(b"\x16\x03\x01\x00\x01\x01" if i == 0 else b"\x16\x03\x01\x00\x01\x00")


def test_byte_by_byte_feeding_releases_everything_once():
    hello = synthetic_hello("LocalHost.")
    g = TunnelGuard(lambda name: None if name == "LocalHost." else "x", lambda h: None)
    out = b"".join(g.feed(hello[i : i + 1]) for i in range(len(hello)))
    assert out == hello and g.passing and not g.waiting


def test_parse_client_hello_returns_the_name_or_none():
    assert parse_client_hello(hello_body([sni_extension(b"Example.COM")])) == "Example.COM"
    assert parse_client_hello(hello_body(None)) is None
    assert parse_client_hello(hello_body([(0x2B, b"\x02\x03\x04")])) is None


def test_a_text_line_without_an_end_is_held_then_bounded():
    g = guard()
    assert g.feed(b"GET / HTTP/1.1") == b"" and g.waiting
    with pytest.raises(Refused, match="unclassified"):
        guard().feed(b"A" * 40_000)
    assert guard().feed(b"AMQP\x00\x00\x09\x01") == b"AMQP\x00\x00\x09\x01"  # binary: passes


# --- a second ClientHello (TLS 1.3 HelloRetryRequest) -----------------------------------

TLS13 = (0x002B, vec(1, b"\x03\x04\x03\x03"))
CCS = b"\x14\x03\x03\x00\x01\x01"
APP_DATA = b"\x17\x03\x03\x00\x05hello"


def test_a_second_hello_after_a_retry_is_checked_too():
    first = synthetic_hello("localhost", extra=[TLS13])
    g = guard()
    assert g.feed(first) == first and not g.passing  # a TLS 1.3 client: keep reading
    assert g.feed(CCS) == CCS
    with pytest.raises(Refused, match="mismatch"):
        g.feed(records(unwrap_records(synthetic_hello(DENIED, extra=[TLS13])), 9))
    # the same name again, then encrypted records: everything passes, then untouched
    g = guard()
    second = synthetic_hello("localhost", extra=[TLS13])
    stream = first + CCS + second + APP_DATA + b"\x16anything"
    out = b"".join(g.feed(stream[i : i + 4]) for i in range(0, len(stream), 4))
    assert out == stream and g.passing


def test_a_tls12_flight_after_the_hello_ends_the_checks():
    g = guard()
    first = synthetic_hello("localhost", extra=[TLS13])
    key_exchange = records(handshake(b"\x00" * 40, msg_type=16))
    assert g.feed(first + key_exchange + CCS) == first + key_exchange + CCS
    assert g.passing
    # a hello without TLS 1.3 can get no retry: nothing after it is read
    g = guard()
    old = synthetic_hello("localhost")
    assert g.feed(old) == old and g.passing


async def test_a_fronting_second_hello_is_refused_end_to_end(guard_proxy, sink):
    port, received = sink
    first = real_client_hello("localhost")  # Python's client offers TLS 1.3
    reader, writer = await tunnel(guard_proxy, f"localhost:{port}")
    writer.write(first)
    await writer.drain()
    async with asyncio.timeout(10):
        while len(received) < len(first):
            await asyncio.sleep(0.01)
    writer.write(CCS + synthetic_hello(DENIED, extra=[TLS13]))
    await closed_without_an_answer(reader)
    writer.close()
    assert bytes(received) in (first, first + CCS)
    assert (await audited(guard_proxy))["rule"] == "tunnel:tls-sni-mismatch"


# --- the checks connect.py builds ----------------------------------------------------------


def inside_checks(host: str, port: int = 443, spec: PolicySpec = POLICY):
    from proxy import connect, egress
    from proxy.context import ProxyContext, State
    from proxy.policy import Policy

    config = make_config(policy=spec)
    ctx = ProxyContext(
        state=State(config=config, policy=Policy.compile(spec), gateways={}),
        settings=Settings(),
    )
    return connect.inside_checks(ctx, egress.make_target(host, port))


@pytest.mark.parametrize(
    ("connect", "sni", "rule"),
    [
        ("localhost", "LOCALHOST.", None),
        ("bücher.test", "xn--bcher-kva.test", None),  # IDNA: the same name
        ("bücher.test", "bucher.test", "tunnel:tls-sni-mismatch"),
        ("localhost", "127.0.0.1", "tunnel:tls-sni-mismatch"),
        ("localhost", "local host", "tunnel:tls-sni-invalid"),
        ("localhost", None, "tunnel:tls-sni-missing"),
        ("127.0.0.1", None, None),
        ("127.0.0.1", "localhost", None),  # a name the policy admits at that address
        ("127.0.0.1", "denied.test", "tunnel:tls-sni-not-allowed"),
        ("127.0.0.1", "metadata.google.internal", "tunnel:tls-sni-not-allowed"),
        ("127.0.0.1", "127.0.0.2", "tunnel:tls-sni-mismatch"),
    ],
)
def test_sni_rules(connect, sni, rule):
    spec = PolicySpec(name="p", allow=("localhost", "bücher.test"), allow_cidr=("127.0.0.0/8",))
    check_sni, _ = inside_checks(connect, spec=spec)
    assert check_sni(sni) == rule


@pytest.mark.parametrize(
    ("host_header", "rule"),
    [
        ("localhost:8080", None),
        ("LocalHost.", None),  # no port: the CONNECT port
        ("localhost:80", "tunnel:http-host-mismatch"),
        ("denied.test:8080", "tunnel:http-host-mismatch"),
        ("user@localhost", "tunnel:http-host-invalid"),
        ("", "tunnel:http-host-invalid"),
    ],
)
def test_host_rules(host_header, rule):
    _, check_host = inside_checks("localhost", 8080)
    assert check_host(host_header) == rule


async def test_a_fronting_hello_sent_with_the_connect_head_is_refused(guard_proxy, sink):
    port, received = sink
    reader, writer = await asyncio.open_connection("127.0.0.1", guard_proxy.port)
    writer.write(connect_request(f"localhost:{port}") + real_client_hello(DENIED))
    await writer.drain()
    assert (await read_response(reader)).status == 200
    await closed_without_an_answer(reader)
    writer.close()
    assert bytes(received) == b""
    assert (await audited(guard_proxy))["rule"] == "tunnel:tls-sni-mismatch"


def test_a_refusal_under_uvloop():
    """The proxy image runs on uvloop: a refused tunnel closes there too."""
    uvloop = pytest.importorskip("uvloop")
    from proxy.app import ProxyApp
    from proxy.audit import AuditLog

    async def scenario() -> tuple[bytes, list]:
        got = bytearray()

        async def keep(reader, writer):
            got.extend(await reader.read())
            writer.close()

        server = await asyncio.start_server(keep, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        log = AuditLog(NullStream(), keep=True)
        resolver = FakeResolver({"localhost": ["127.0.0.1"]})
        app = ProxyApp(resolve=resolver, audit_log=log)
        app.apply(make_config(policy=POLICY), persist=False)
        await app.start("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
            writer.write(connect_request(f"localhost:{port}"))
            assert (await read_response(reader)).status == 200
            writer.write(real_client_hello(DENIED))
            await closed_without_an_answer(reader)
            writer.close()
            async with asyncio.timeout(10):
                while not log.records:
                    await asyncio.sleep(0.01)
            return bytes(got), log.records
        finally:
            await app.close()
            server.close()
            await server.wait_closed()

    got, records_ = uvloop.run(scenario())
    assert got == b""
    assert [r["rule"] for r in records_] == ["tunnel:tls-sni-mismatch"]
