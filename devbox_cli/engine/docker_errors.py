"""docker-py's exceptions as DevboxErrors: the one place that knows them (with
docker_backend.py, the only modules that import docker-py).

An unreachable engine (a transport error, or docker-py failing to connect) is
DockerUnavailableError; a 404 NotFoundError; a 409 ConflictError; any other refusal
DevboxRuntimeError. Each message names what was being done and the engine's own words.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import docker.errors
import requests.exceptions

from devbox_cli.engine.wire import unavailable
from devbox_cli.errors import ConflictError, DevboxRuntimeError, NotFoundError

REFUSED_HINT = "the Docker engine refused it; `docker info` and the engine's log say more"


@contextlib.contextmanager
def mapped(what: str) -> Iterator[None]:
    """Turn docker-py and transport errors into DevboxErrors naming `what`."""
    try:
        yield
    except docker.errors.NotFound as exc:
        raise NotFoundError(f"{what}: {explain(exc)}") from None
    except docker.errors.APIError as exc:
        if exc.status_code == 409:
            raise ConflictError(
                f"{what}: {explain(exc)}",
                "another command may be working on it; `devbox list` shows what exists",
            ) from None
        raise DevboxRuntimeError(
            f"{what}: {explain(exc)}",
            REFUSED_HINT,
        ) from None
    except (requests.exceptions.ConnectionError, ConnectionError, FileNotFoundError) as exc:
        raise unavailable(exc.__class__.__name__) from None
    except docker.errors.DockerException as exc:
        raise unavailable(str(exc).split("\n")[0][:200]) from None


def explain(exc: docker.errors.APIError) -> str:
    """The engine's explanation of a refusal, else docker-py's text."""
    text = exc.explanation if isinstance(exc.explanation, str) else str(exc)
    return (text or "docker error").strip()
