"""Building, pulling, importing and listing images on the engine, for `devbox images`.

docker-py's low-level client does the talking (DockerBackend.api); its errors leave through
docker_backend.mapped, like every other engine call. Streams are read to their end here, and
an error in one (the engine reports a failed build step inside the stream, not as a status)
becomes a DevboxRuntimeError with the last lines that led to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devbox_cli.engine.docker_errors import REFUSED_HINT, mapped
from devbox_cli.errors import DevboxRuntimeError

if TYPE_CHECKING:
    from devbox_cli.engine.docker_backend import DockerBackend

Detail = Callable[[str], None]


def split_ref(ref: str) -> tuple[str, str]:
    """`repo:tag` -> (repo, tag); a ref without a tag is :latest."""
    repo, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest"
    return repo, tag


def build(
    docker: DockerBackend,
    context: Path,
    ref: str,
    *,
    buildargs: Mapping[str, str],
    network: str | None,
    labels: Mapping[str, str],
    detail: Detail,
) -> None:
    """`docker build` of the directory `context` (its Dockerfile) as `ref`. `network` is
    the build's network mode ("none": no network in any step)."""
    what = f"building image {ref}"
    tail: list[str] = []
    with mapped(what):
        stream = docker.api.build(
            path=str(context),
            tag=ref,
            buildargs=dict(buildargs),
            network_mode=network,
            labels=dict(labels),
            rm=True,
            forcerm=True,
            decode=True,
            pull=False,
            use_config_proxy=False,
        )
        for message in stream:
            for line in str(message.get("stream") or message.get("status") or "").splitlines():
                if line.strip():
                    tail = [*tail[-9:], line.rstrip()]
                    detail(line.strip())
            _raise_on_error(message, what, tail)


def pull(docker: DockerBackend, ref: str, detail: Detail) -> None:
    repo, tag = split_ref(ref)
    what = f"pulling image {ref}"
    with mapped(what):
        for message in docker.api.pull(repo, tag, stream=True, decode=True):
            status = message.get("status")
            if status:
                detail(f"{message.get('id', '')} {status} {message.get('progress', '')}".strip())
            _raise_on_error(message, what, [])


def import_tar(
    docker: DockerBackend, chunks: Iterable[bytes], ref: str, *, changes: list[str]
) -> None:
    """`docker import -`: a root filesystem's tar stream as image `ref`."""
    repo, tag = split_ref(ref)
    with mapped(f"importing image {ref}"):
        result = docker.api.import_image(
            src=chunks, repository=repo, tag=tag, changes=changes, stream_src=True
        )
    if isinstance(result, dict):
        _raise_on_error(result, f"importing image {ref}", [])
    elif isinstance(result, str) and '"error"' in result:
        raise DevboxRuntimeError(f"importing image {ref}: {result.strip()[:300]}", REFUSED_HINT)


def tag(docker: DockerBackend, image: str, ref: str) -> None:
    repo, name = split_ref(ref)
    with mapped(f"tagging {image} as {ref}"):
        docker.api.tag(image, repo, name)


def in_repositories(docker: DockerBackend, repositories: Iterable[str]) -> list[dict[str, Any]]:
    """Every image whose repository is one of `repositories` (one entry per image)."""
    found: dict[str, dict[str, Any]] = {}
    with mapped("listing images"):
        for repo in repositories:
            for image in docker.api.images(name=repo):
                found[image["Id"]] = image
    return list(found.values())


def _raise_on_error(message: Any, what: str, tail: list[str]) -> None:
    if not isinstance(message, dict) or not message.get("error"):
        return
    detail = message.get("errorDetail") or {}
    text = str(detail.get("message") or message["error"]).strip()
    context = "\n".join(tail[-6:])
    raise DevboxRuntimeError(
        f"{what}: {text}" + (f"\n{context}" if context else ""),
        "the build's last lines are above; rerun with `devbox images build --rebuild`",
    )
