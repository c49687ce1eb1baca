"""`devbox port-forward`: a port on the host's 127.0.0.1 relayed to a port inside a devbox.

The relay (proxy/relay.py) runs in the devbox's proxy container, which already sits on the
box's network, so it needs nothing from the box's image and gives the box no new route. One
`docker exec` per session carries every connection (engine/forwarding.py), over the Engine
API, so it works on a remote engine too. The box's address comes from `docker inspect` of
the box (the engine's record, never anything the box says) and is fixed on the relay's
command line with the port: nothing the box sends can point the relay elsewhere.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from devbox_cli.engine.views import state_of
from devbox_cli.errors import (
    ConflictError,
    DevboxError,
    DevboxRuntimeError,
    NotFoundError,
    UsageError,
)
from devbox_cli.names import box_container, box_network, check_devbox_name, proxy_container
from devbox_cli.services.proxy_push import PROXY_PYTHON

if TYPE_CHECKING:
    from devbox_cli.engine.docker_backend import DockerBackend
    from devbox_cli.engine.forwarding import Ending, Session

LISTEN_HOST = "127.0.0.1"
RELAY = [PROXY_PYTHON, "-m", "proxy.relay"]
EXIT_TIMEOUT = 5.0  # for the relay's exec to be reported finished
KILLED_GRACE = 3.0  # a killed relay: wait this long for its container's `die` to explain it

Report = Callable[[str], None]


def parse_port_spec(spec: str) -> tuple[int | None, int]:
    """`[LOCAL:]REMOTE` as (local, remote): `8080` is 8080 on both sides (local None), and
    `:8080` or `0:8080` a free local port (0)."""
    local_text, sep, remote_text = spec.rpartition(":")
    remote = _port(remote_text, spec, low=1)
    if not sep:
        return None, remote
    return (_port(local_text, spec, low=0) if local_text else 0), remote


def _port(text: str, spec: str, *, low: int) -> int:
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= 65535:
        raise UsageError(
            f"invalid port spec {spec!r}: use [LOCAL:]REMOTE with ports 1-65535",
            "for example `8080`, `9000:80`, or `:80` for a free local port",
        )
    return int(text)


class PortForward:
    """A running port-forward: `address` is where it listens. Use it as a context manager,
    or call close(); wait() blocks until it ends and raises if it ended by itself."""

    def __init__(
        self,
        name: str,
        remote_port: int,
        session: Session,
        stop: Callable[[], DevboxError | None],
    ) -> None:
        self.name = name
        self.remote_port = remote_port
        self.address = session.address
        self._session = session
        self._stop = stop
        self._error: DevboxError | None = None
        self._closed = False

    def wait(self, timeout: float | None = None) -> bool:
        """True once the session is over; a DevboxError when the devbox or its relay ended it."""
        if not self._session.done.wait(timeout):
            return False
        self.close()
        if self._error is not None:
            raise self._error
        return True

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._error = self._stop()

    def __enter__(self) -> PortForward:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def to_json(self) -> dict[str, Any]:
        host, port = self.address
        return {
            "name": self.name,
            "address": f"{host}:{port}",
            "host": host,
            "port": port,
            "remote_port": self.remote_port,
        }


class PortForwardService:
    def __init__(self, engine: Callable[[], DockerBackend]) -> None:
        self.engine = engine

    def forward(
        self, name: str, remote: int, local: int | None = None, *, report: Report | None = None
    ) -> PortForward:
        """Listen on 127.0.0.1:`local` (None: the same as `remote`; 0: a free port) and relay
        each connection to port `remote` in devbox `name`, until closed. `report` hears of
        connections the devbox refused or cut."""
        check_devbox_name(name)
        for port, low in ((remote, 1), (local if local is not None else remote, 0)):
            if type(port) is not int or not low <= port <= 65535:
                raise UsageError(f"invalid port {port!r}: use 1-65535 (0 for a free local port)")
        docker = self.engine()
        run = _Run(docker, name)
        try:
            target = run.target()
            listener = _listen(name, remote, remote if local is None else local)
            try:
                exec_id, stream, owner = docker.exec_stream(
                    run.proxy_id, [*RELAY, target, str(remote)]
                )
            except BaseException:
                listener.close()
                raise
        except BaseException:
            run.stop_watching()
            raise
        from devbox_cli.engine.forwarding import Session  # asyncio: only when forwarding

        run.exec_id, run.owner = exec_id, owner
        say = report or (lambda _text: None)
        session = Session(
            stream, listener, lambda text: say(f"port {remote} in devbox {name}: {text}")
        )
        run.session = session
        try:
            started = session.start()
        except BaseException:  # Ctrl-C while it starts: nothing may be left running
            run.finish()
            raise
        if not started:
            raise run.finish() or DevboxRuntimeError(f"port-forward to devbox {name} failed")
        run.watch()
        return PortForward(name, remote, session, run.finish)


class _Run:
    """One session's Docker side: the containers, the exec, the watcher, and what its end
    means."""

    def __init__(self, docker: DockerBackend, name: str) -> None:
        self.docker = docker
        self.name = name
        self.session: Session | None = None
        self.exec_id: str | None = None
        self.owner: Any = None
        self.saw_die = threading.Event()
        self.died: str | None = None
        box = docker.container(box_container(name))
        proxy = docker.container(proxy_container(name))
        if box is None and proxy is None:
            raise NotFoundError(f"no devbox {name}", "`devbox list` shows the devboxes")
        if box is None or proxy is None:
            raise DevboxRuntimeError(
                f"devbox {name} is incomplete: its {'box' if box is None else 'proxy'} is missing",
                f"recreate it: `devbox delete {name}` then `devbox create`",
            )
        self.box, self.proxy_id = box, proxy["Id"]
        self.roles = {box["Id"]: "the devbox", proxy["Id"]: "its proxy"}
        # Watch before checking the states: a stop in between is still seen.
        self.events = docker.container_events(list(self.roles), ("die", "destroy"))
        self.states = {box["Id"]: state_of(box), proxy["Id"]: state_of(proxy)}

    def target(self) -> str:
        for ident, state in self.states.items():
            if state == "paused":
                raise ConflictError(
                    f"devbox {self.name} is paused while a snapshot is taken",
                    "try again in a moment",
                )
            if state != "running":
                raise ConflictError(
                    f"devbox {self.name} is not running ({self.roles[ident]} is {state})",
                    f"start it with `devbox start {self.name}`",
                )
        networks = (self.box.get("NetworkSettings") or {}).get("Networks") or {}
        address = (networks.get(box_network(self.name)) or {}).get("IPAddress") or ""
        try:
            return str(ipaddress.ip_address(address))
        except ValueError:
            raise DevboxRuntimeError(
                f"devbox {self.name} has no address on its network {box_network(self.name)}",
                f"`devbox start {self.name}`, or recreate it",
            ) from None

    def watch(self) -> None:
        threading.Thread(target=self._watch, name="devbox-port-forward-watch", daemon=True).start()

    def _watch(self) -> None:
        with contextlib.suppress(Exception):  # the stream is closed under it at the end
            for event in self.events:
                role = self.roles.get(str(event.get("id") or ""))
                if role:
                    self.died = f"{role} stopped"
                    self.saw_die.set()
                    if self.session is not None:
                        self.session.stop(self.died)
                    return

    def stop_watching(self) -> None:
        with contextlib.suppress(Exception):
            self.events.close()

    def finish(self) -> DevboxError | None:
        """Close everything; the error that ended the session by itself, if one did."""
        from devbox_cli.engine.forwarding import CLOSED, LINK, Ending

        assert self.session is not None
        self.session.close()
        for thing in (self.session.stream, self.owner):
            with contextlib.suppress(Exception):
                thing.close()
        code = self._exit_code()
        ending = self.session.ending or Ending(CLOSED)
        if ending.kind == LINK and (code is None or code >= 128) and self.died is None:
            self.saw_die.wait(KILLED_GRACE)  # killed: most likely its container is stopping
        self.stop_watching()
        return None if ending.kind == CLOSED else self._explain(ending, code)

    def _exit_code(self) -> int | None:
        deadline = time.monotonic() + EXIT_TIMEOUT
        while self.exec_id is not None:
            with contextlib.suppress(DevboxError):
                state = self.docker.exec_state(self.exec_id)
                if not state.get("Running"):
                    code = state.get("ExitCode")
                    return int(code) if isinstance(code, int) else None
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        return None

    def _explain(self, ending: Ending, code: int | None) -> DevboxError:
        from devbox_cli.engine.forwarding import PROTOCOL

        name = self.name
        restart = f"start it again with `devbox start {name}`, then port-forward again"
        if self.died is not None:
            return DevboxRuntimeError(f"port-forward to devbox {name} ended: {self.died}", restart)
        if ending.kind == PROTOCOL:
            return DevboxRuntimeError(
                f"port-forward to devbox {name} ended: the relay in its proxy broke the "
                f"protocol ({ending.detail})",
                f"see `docker logs {proxy_container(name)}`; recreate the devbox if it repeats",
            )
        stderr = self.session.stderr.decode("utf-8", "replace") if self.session else ""
        if "No module named proxy.relay" in stderr:
            return DevboxRuntimeError(
                f"the proxy of devbox {name} has no port-forward relay: it runs an older proxy "
                "image",
                f"recreate the devbox (`devbox delete {name}`, then `devbox create`)",
            )
        last = (stderr.strip().splitlines() or [ending.detail or "no message"])[-1][:200]
        why = f"exit status {code}" if code is not None else "still running"
        return DevboxRuntimeError(
            f"port-forward to devbox {name} ended: its relay stopped ({why}: {last})",
            f"see `docker logs {proxy_container(name)}`; `devbox show {name}` for its state",
        )


def _listen(name: str, remote: int, local: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LISTEN_HOST, local))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        hint = (
            f"pick another, `devbox port-forward {name} PORT:{remote}`, "
            f"or `:{remote}` for a free one"
        )
        if exc.errno == errno.EADDRINUSE:
            raise ConflictError(f"port {local} on {LISTEN_HOST} is in use", hint) from None
        if exc.errno == errno.EACCES:
            raise UsageError(f"port {local} on {LISTEN_HOST} needs privileges", hint) from None
        raise DevboxError(f"cannot listen on {LISTEN_HOST}:{local}: {exc.strerror}", hint) from None
    return sock
