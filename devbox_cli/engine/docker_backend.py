"""The only module that imports docker-py. It maps SDK objects and errors to ours.

Every call goes through the low-level APIClient (one request per call, no hidden
inspects), and every docker-py exception leaves this module as a DevboxError:
an unreachable engine is DockerUnavailableError, a 404 is None or NotFoundError,
a 409 is ConflictError, anything else DevboxRuntimeError.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote

import docker
import docker.errors
import requests.exceptions

from devbox_cli.engine.wire import docker_host, frames, poll_exit_code, unavailable
from devbox_cli.errors import ConflictError, DevboxRuntimeError, NotFoundError

REFUSED_HINT = "the Docker engine refused it; `docker info` and the engine's log say more"


@contextlib.contextmanager
def mapped(what: str) -> Iterator[None]:
    """Turn docker-py and transport errors into DevboxErrors naming `what`."""
    try:
        yield
    except docker.errors.NotFound as exc:
        raise NotFoundError(f"{what}: {_explain(exc)}") from None
    except docker.errors.APIError as exc:
        if exc.status_code == 409:
            raise ConflictError(
                f"{what}: {_explain(exc)}",
                "another command may be working on it; `devbox list` shows what exists",
            ) from None
        raise DevboxRuntimeError(
            f"{what}: {_explain(exc)}",
            REFUSED_HINT,
        ) from None
    except (requests.exceptions.ConnectionError, ConnectionError, FileNotFoundError) as exc:
        raise unavailable(exc.__class__.__name__) from None
    except docker.errors.DockerException as exc:
        raise unavailable(str(exc).split("\n")[0][:200]) from None


def _explain(exc: docker.errors.APIError) -> str:
    text = exc.explanation if isinstance(exc.explanation, str) else str(exc)
    return (text or "docker error").strip()


class DockerBackend:
    """A thin, typed face over the Docker engine API for devboxes."""

    def __init__(self) -> None:
        with mapped("connecting to Docker"):
            self.api = docker.APIClient(
                base_url=docker_host(),
                version=os.environ.get("DOCKER_API_VERSION") or "auto",
                timeout=120,
            )

    def info(self) -> dict[str, Any]:
        """`docker info`: CPUs, runtimes, storage driver."""
        with mapped("reading the engine's info"):
            return self.api.info()

    def version(self) -> dict[str, Any]:
        """`docker version` of the engine: Version, ApiVersion, Os, Arch."""
        with mapped("reading the engine's version"):
            return self.api.version()

    def events(self, **filters: list[str]) -> EventStream:
        """The engine's events from now on (`filters` as the Engine API takes them: type,
        event, label ...). The request is made here, so nothing that happens after this call
        is missed; iterating ends when the engine goes away or close() is called."""
        with mapped("following the engine's events"):
            return EventStream(self.api.events(decode=True, filters=filters))

    # -- images ----------------------------------------------------------------------------

    def image(self, ref: str) -> dict[str, Any] | None:
        with mapped(f"inspecting image {ref}"):
            try:
                return self.api.inspect_image(ref)
            except docker.errors.NotFound:
                return None

    def images(self, *labels: str) -> list[dict[str, Any]]:
        """Every image carrying all `labels` (`key` or `key=value`)."""
        with mapped("listing images"):
            return self.api.images(filters={"label": list(labels)})

    def commit(self, container: str) -> str:
        """An untagged image of the container's filesystem (paused while it is read); its
        config is the container's own, environment and labels included (the engine merges
        any override back in), so callers must not keep it: see load_image."""
        with mapped(f"committing container {container}"):
            return str(self.api.commit(container, pause=True)["Id"])

    def load_image(self, archive: bytes) -> None:
        """`docker load` of a (small) archive; the engine's progress stream is read to its
        end, and an error in it raised."""
        with mapped("loading an image"):
            for message in self.api.load_image(archive, quiet=True):
                if isinstance(message, dict) and message.get("error"):
                    detail = message.get("errorDetail") or {}
                    raise DevboxRuntimeError(
                        f"loading an image: {detail.get('message') or message['error']}",
                        REFUSED_HINT,
                    )

    def remove_image(self, ref: str) -> bool:
        """Remove an image (untag, and delete what no other tag or image holds); False
        when it was already gone. A 409 (a container uses it) is a ConflictError."""
        with mapped(f"removing image {ref}"):
            try:
                self.api.remove_image(ref)
            except docker.errors.NotFound:
                return False
        return True

    # -- containers ------------------------------------------------------------------------

    def container(self, name: str) -> dict[str, Any] | None:
        """`docker inspect` of one container, or None when it does not exist."""
        with mapped(f"inspecting container {name}"):
            try:
                return self.api.inspect_container(name)
            except docker.errors.NotFound:
                return None

    def containers(self, *labels: str) -> list[dict[str, Any]]:
        """Every container (running or not) carrying all `labels` (`key` or `key=value`)."""
        with mapped("listing containers"):
            return self.api.containers(all=True, filters={"label": list(labels)})

    def create_container(
        self,
        image: str,
        *,
        name: str,
        network: str,
        aliases: list[str] | None = None,
        labels: dict[str, str],
        **spec: Any,
    ) -> str:
        """Create (not start) a container attached to `network` only; returns its id."""
        host = dict(spec.pop("host", {}))
        with mapped(f"creating container {name}"):
            host_config = self.api.create_host_config(network_mode=network, **host)
            networking = self.api.create_networking_config(
                {network: self.api.create_endpoint_config(aliases=aliases or None)}
            )
            created = self.api.create_container(
                image,
                name=name,
                labels=labels,
                host_config=host_config,
                networking_config=networking,
                **spec,
            )
        return created["Id"]

    def connect(self, container: str, network: str, aliases: list[str] | None = None) -> None:
        with mapped(f"connecting {container} to network {network}"):
            self.api.connect_container_to_network(container, network, aliases=aliases)

    def start(self, container: str) -> None:
        with mapped(f"starting container {container}"):
            self.api.start(container)

    def stop(self, container: str, *, timeout: int = 10) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds; a stopped one stays stopped, even
        across a daemon restart under restart policy unless-stopped."""
        with mapped(f"stopping container {container}"):
            self.api.stop(container, timeout=timeout)

    def kill(self, container: str) -> None:
        with mapped(f"killing container {container}"):
            self.api.kill(container)

    def remove_container(self, container: str) -> bool:
        """Force-remove; False when it was already gone."""
        with mapped(f"removing container {container}"):
            try:
                self.api.remove_container(container, force=True, v=True)
            except docker.errors.NotFound:
                return False
            except docker.errors.APIError as exc:
                # A removal already under way (a concurrent delete) counts as gone.
                if exc.status_code == 409 and "already in progress" in _explain(exc):
                    return False
                raise
        return True

    def logs(
        self,
        container: str,
        *,
        follow: bool,
        stdout: bool = True,
        stderr: bool = True,
        tail: int | str = "all",
    ) -> Iterator[bytes]:
        with mapped(f"reading logs of {container}"):
            stream = self.api.logs(
                container, stdout=stdout, stderr=stderr, stream=True, follow=follow, tail=tail
            )
        with mapped(f"reading logs of {container}"):
            yield from stream

    # -- networks --------------------------------------------------------------------------

    def network(self, name: str) -> dict[str, Any] | None:
        with mapped(f"inspecting network {name}"):
            try:
                return self.api.inspect_network(name)
            except docker.errors.NotFound:
                return None

    def networks(self, *labels: str) -> list[dict[str, Any]]:
        with mapped("listing networks"):
            return self.api.networks(filters={"label": list(labels)})

    def create_network(
        self,
        name: str,
        *,
        labels: dict[str, str],
        internal: bool = False,
        options: dict[str, str] | None = None,
    ) -> str:
        with mapped(f"creating network {name}"):
            created = self.api.create_network(
                name,
                driver="bridge",
                internal=internal,
                options=options or None,
                labels=labels,
                check_duplicate=True,
            )
        return created["Id"]

    def remove_network(self, network: str) -> bool:
        """False when it was already gone."""
        with mapped(f"removing network {network}"):
            try:
                self.api.remove_network(network)
            except docker.errors.NotFound:
                return False
        return True

    # -- exec ------------------------------------------------------------------------------

    def exec_with_stdin(
        self,
        container: str,
        cmd: list[str],
        data: bytes,
        *,
        timeout: float = 30.0,
        user: str | None = None,
    ) -> tuple[int, str]:
        """Run `cmd` in `container` (as `user`, else the image's) with `data` on its stdin
        (then EOF); returns the exit code and its combined output. This is how secrets reach
        the proxy: the bytes travel over the engine's API socket only, never in argv, env or
        a file."""
        with mapped(f"exec in {container}"):
            exec_id = self.api.exec_create(
                container, cmd, stdin=True, stdout=True, stderr=True, user=user or ""
            )
            sock = self.api.exec_start(exec_id["Id"], socket=True)
            raw: socket.socket = getattr(sock, "_sock", sock)
            try:
                raw.settimeout(timeout)
                raw.sendall(data)
                raw.shutdown(socket.SHUT_WR)
                output = b"".join(payload for _stream, payload in frames(raw))
            finally:
                sock.close()
            code = poll_exit_code(lambda: self.api.exec_inspect(exec_id["Id"]))
        return code, output.decode("utf-8", "replace")

    def exec_stream(self, container: str, cmd: list[str]) -> tuple[str, Any, Any]:
        """Start `cmd` in `container` attached (stdin, stdout, stderr; no tty) and hand back
        (exec id, the hijacked stream, its owner). Our bytes go raw to its stdin; its output
        comes framed as `frames` reads it. The stream is a socket, or on a TLS or ssh engine
        a socket-like object; the caller closes both it and its owner."""
        with mapped(f"exec in {container}"):
            exec_id = self.api.exec_create(container, cmd, stdin=True, stdout=True, stderr=True)
            owner = self.api.exec_start(exec_id["Id"], socket=True)
        return exec_id["Id"], getattr(owner, "_sock", owner), owner

    def exec_state(self, exec_id: str) -> dict[str, Any]:
        """`docker exec inspect`: Running, ExitCode, Pid."""
        with mapped("inspecting an exec"):
            return self.api.exec_inspect(exec_id)

    def container_events(self, containers: list[str], events: tuple[str, ...]) -> EventStream:
        """The engine's events for `containers` (ids) of the kinds `events` (`die`, ...), as
        dicts, from now on; the iterator's close() ends it from another thread."""
        return self.events(type=["container"], container=containers, event=list(events))

    # -- volumes ---------------------------------------------------------------------------

    def volume(self, name: str) -> dict[str, Any] | None:
        with mapped(f"inspecting volume {name}"):
            try:
                return self.api.inspect_volume(name)
            except docker.errors.NotFound:
                return None

    def volumes(self, *labels: str) -> list[dict[str, Any]]:
        with mapped("listing volumes"):
            return self.api.volumes(filters={"label": list(labels)}).get("Volumes") or []

    def create_volume(self, name: str, *, labels: dict[str, str]) -> dict[str, Any]:
        """Docker answers an existing name with that volume, whatever its labels: callers
        look first (services/workspace.py)."""
        with mapped(f"creating volume {name}"):
            return self.api.create_volume(name, driver="local", labels=labels)

    def remove_volume(self, name: str) -> bool:
        """False when it was already gone; ConflictError while a container uses it."""
        with mapped(f"removing volume {name}"):
            try:
                self.api.remove_volume(name)
            except docker.errors.NotFound:
                return False
        return True

    def containers_using_volume(self, name: str) -> list[dict[str, Any]]:
        """Every container, running or not, that mounts volume `name`."""
        with mapped(f"listing the users of volume {name}"):
            return self.api.containers(all=True, filters={"volume": name})

    # -- archives --------------------------------------------------------------------------

    def _archive(self, method: str, container: str, **kw: Any) -> requests.Response:
        """The archive endpoint by hand (docker-py has no HEAD, nor put's options); a
        failure is docker-py's own APIError, which mapped maps. A HEAD's 404 is returned."""
        url = f"{self.api.base_url}/v{self.api.api_version}/containers/{quote(container)}/archive"
        res = self.api.request(method, url, timeout=self.api.timeout, **kw)
        try:
            if method != "HEAD" or res.status_code != 404:
                res.raise_for_status()
        except requests.exceptions.HTTPError as exc:
            docker.errors.create_api_error_from_http_exception(exc)  # raises the APIError
        return res

    def path_stat(self, container: str, path: str) -> dict[str, Any] | None:
        """What `path` in `container` is (name, size, mode as Go's FileMode, linkTarget),
        without reading it; None when there is no such path. Works on a stopped container."""
        with mapped(f"looking up {path} in {container}"):
            res = self._archive("HEAD", container, params={"path": path})
        header = res.headers.get("X-Docker-Container-Path-Stat") or ""
        return json.loads(base64.b64decode(header) or b"{}") if res.status_code != 404 else None

    def get_archive(
        self, container: str, path: str, *, chunk_size: int = 1 << 20
    ) -> tuple[Iterator[bytes], dict[str, Any]]:
        """A tar stream of `path` in `container`, as chunks, and the path's stat."""
        with mapped(f"reading {path} from {container}"):
            stream, stat = self.api.get_archive(container, path, chunk_size=chunk_size)
        return self._chunks(stream, f"reading {path} from {container}"), stat or {}

    def _chunks(self, stream: Iterator[bytes], what: str) -> Iterator[bytes]:
        with mapped(what):
            yield from stream

    def put_archive(self, container: str, path: str, chunks: Iterable[bytes]) -> None:
        """Extract a tar stream (sent chunked as it is read) into directory `path` of the
        container; a directory is never replaced by a file (noOverwriteDirNonDir)."""
        with mapped(f"writing to {path} in {container}"):
            params = {"path": path, "noOverwriteDirNonDir": "true"}
            self._archive("PUT", container, params=params, data=iter(chunks))


class EventStream:
    """An event stream that close() ends from another thread (or a signal handler)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with mapped("following the engine's events"):
            yield from self._stream

    def close(self) -> None:
        with contextlib.suppress(Exception):  # already closed, or the engine is gone
            self._stream.close()
