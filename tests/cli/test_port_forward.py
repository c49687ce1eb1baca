"""The host's end of `devbox port-forward` without Docker: the port spec, the engine's
stream framing, a Session against a stand-in relay on a plain and on a TLS stream (a TLS
engine's exec stream is an ssl.SSLSocket: engine/stream_bridge.py), and a Session whose
"relay" misbehaves, each ending cleanly with its reason."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import threading

import pytest
import trustme

from devbox_cli.engine import forwarding, wire
from devbox_cli.engine.forwarding import CLOSED, LINK, PROTOCOL, Session
from devbox_cli.engine.stream_bridge import bridge
from devbox_cli.errors import DevboxRuntimeError, UsageError
from devbox_cli.services.ports import parse_port_spec
from proxy import relay_wire as w
from tests.cli.relay_fakes import FakeRelay, docker_frame


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [("8080", (None, 8080)), ("9000:80", (9000, 80)), (":80", (0, 80)), ("0:80", (0, 80)),
     ("1:65535", (1, 65535))],
)  # fmt: skip
def test_port_specs(spec, parsed):
    assert parse_port_spec(spec) == parsed


@pytest.mark.parametrize(
    "spec",
    ["", ":", "0", "65536", "80:0", "-1", "a:80", "80:b", "1:2:3", "\uff18\uff10", "\u0663",
     " 80", "1e3"],
)  # fmt: skip
def test_bad_port_specs_are_usage_errors(spec):
    with pytest.raises(UsageError, match="invalid port spec"):
        parse_port_spec(spec)


def test_the_demuxer_takes_frames_in_any_pieces_and_refuses_nonsense():
    stream = docker_frame(1, b"out") + docker_frame(2, b"err") + docker_frame(1, b"")
    demux = wire.Demuxer()
    got = [part for byte in stream for part in demux.feed(bytes([byte]))]
    assert got == [(1, b"out"), (2, b"err"), (1, b"")]
    with pytest.raises(DevboxRuntimeError, match="malformed exec stream"):
        wire.Demuxer().feed(docker_frame(7, b"x"))
    with pytest.raises(DevboxRuntimeError, match="malformed exec stream"):
        wire.Demuxer().feed(b"\x01\0\0\0\xff\xff\xff\xff")


def listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def round_trip(session: Session, size: int = 3 << 20) -> None:
    data = os.urandom(size)
    with socket.create_connection(session.address, timeout=60) as client:
        threading.Thread(target=lambda: (client.sendall(data), client.shutdown(1))).start()
        got = bytearray()
        while chunk := client.recv(1 << 20):
            got += chunk
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


def test_a_session_relays_and_its_close_ends_the_relays_stdin():
    relay = FakeRelay()
    session = Session(relay.plain(), listener(), lambda _text: None)
    assert session.start()
    round_trip(session)
    session.close()
    assert session.ending.kind == CLOSED
    assert relay.ended.result(30) is None  # the relay saw its stdin end: it would exit
    assert session.done.is_set()
    with pytest.raises(OSError):
        socket.create_connection(session.address, timeout=5)
    relay.close()


@pytest.fixture(scope="module")
def tls_contexts():
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("engine.test").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


def test_a_session_over_a_tls_stream_relays_through_the_bridge(tls_contexts):
    relay = FakeRelay()
    stream = relay.tls(*tls_contexts)
    assert isinstance(stream, ssl.SSLSocket)
    session = Session(stream, listener(), lambda _text: None)
    assert session.start()
    for _ in range(3):
        round_trip(session, 2 << 20)
    session.close()
    assert relay.ended.result(30) is None
    relay.close()


def test_the_bridge_pumps_both_ways_and_passes_the_end_on(tls_contexts):
    server_ctx, client_ctx = tls_contexts
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    received = bytearray()

    def tls_echo() -> None:
        conn, _ = srv.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            while chunk := tls.recv(1 << 16):
                received.extend(chunk)
                tls.sendall(chunk)

    thread = threading.Thread(target=tls_echo)
    thread.start()
    raw = socket.create_connection(srv.getsockname())
    plain = bridge(client_ctx.wrap_socket(raw, server_hostname="engine.test"))
    data = os.urandom(4 << 20)
    sender = threading.Thread(target=plain.sendall, args=(data,))
    sender.start()
    got = bytearray()
    while len(got) < len(data):
        got += plain.recv(1 << 20)
    sender.join()
    assert got == data
    plain.close()  # the bridge closes the TLS stream: the server's read ends
    thread.join(30)
    assert not thread.is_alive() and received == data
    srv.close()


class ScriptedRelay:
    """A far end that says exactly what the test wrote, framed as the engine frames it."""

    def __init__(self, script) -> None:
        ours, self.theirs = socket.socketpair()
        self.stream = ours
        self.thread = threading.Thread(target=script, args=(self.theirs,), daemon=True)
        self.thread.start()


def hello_then(*frames: bytes):
    def script(sock: socket.socket) -> None:
        decoder = w.Decoder()
        while not any(f.kind == w.HELLO for f in decoder.feed(sock.recv(4096))):
            pass
        sock.sendall(docker_frame(1, w.encode(w.HELLO, 0, w.PROTOCOL)))
        for frame in frames:
            sock.sendall(frame)
        while sock.recv(1 << 20):  # until the session hangs up, then exit as the relay does
            pass
        sock.close()

    return script


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ((docker_frame(1, w.HEADER.pack(w.DATA, 9, 10**9)),), "DATA frame of 1000000000 bytes"),
        ((docker_frame(1, w.encode(w.OPENED, 4)),), "OPENED for connection 4, never opened"),
        ((docker_frame(5, b"x"),), "the Docker engine sent a malformed exec stream"),
        ((b"\x01\0\0\0\x7f\xff\xff\xff",), "malformed exec stream"),
    ],
)
def test_a_misbehaving_relay_ends_the_session_with_its_reason(frames, reason):
    relay = ScriptedRelay(hello_then(*frames))
    session = Session(relay.stream, listener(), lambda _text: None)
    started = session.start()
    session.done.wait(30)
    assert session.ending.kind == PROTOCOL and reason in session.ending.detail, session.ending
    assert not started or session.done.is_set()
    session.close()


def test_a_relay_that_dies_at_once_leaves_its_last_words():
    def script(sock: socket.socket) -> None:
        sock.recv(4096)  # the engine reads the exec's stdin (the HELLO) into a process that
        sock.sendall(docker_frame(2, b"/opt/proxy/bin/python: No module named proxy.relay\n"))
        sock.close()  # failed at once

    relay = ScriptedRelay(script)
    session = Session(relay.stream, listener(), lambda _text: None)
    assert not session.start()
    assert session.ending.kind == LINK
    assert b"No module named proxy.relay" in session.stderr


def test_a_relay_that_never_answers_is_given_up_on(monkeypatch):
    monkeypatch.setattr(forwarding, "HELLO_TIMEOUT", 0.2)

    def script(sock: socket.socket) -> None:
        while sock.recv(1 << 20):  # reads, never answers
            pass
        sock.close()

    relay = ScriptedRelay(script)
    session = Session(relay.stream, listener(), lambda _text: None)
    assert not session.start()
    assert session.ending == forwarding.Ending(LINK, "the relay did not answer")


class NotASocket:
    def setblocking(self, flag: bool) -> None:
        raise OSError("this stream cannot be used")

    def close(self) -> None:
        pass


def closed_socket() -> socket.socket:
    sock = socket.socket()
    sock.close()
    return sock


@pytest.mark.parametrize("make", [NotASocket, closed_socket])
def test_a_stream_that_is_no_stream_ends_the_session_without_a_traceback(capfd, make):
    session = Session(make(), listener(), lambda _text: None)
    assert not session.start()
    assert session.ending.kind == LINK
    session.close()
    assert "Traceback" not in capfd.readouterr().err
