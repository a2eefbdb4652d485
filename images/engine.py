"""The Docker engine connection and the image names shared by build, push and verify."""

from __future__ import annotations

import docker
from docker.errors import DockerException

from images.matrix import IMAGE_NAME, ImageLine


class EngineError(RuntimeError):
    """No Docker engine could be reached (or it refused a request); the message says how to fix it."""


def api_client(timeout: int = 3600) -> docker.APIClient:
    """The engine from DOCKER_HOST (or the default socket); EngineError with a fix when it is not there."""
    try:
        client = docker.APIClient(timeout=timeout, **docker.utils.kwargs_from_env())
        client.ping()
    except DockerException as exc:
        raise EngineError(
            f"cannot reach the Docker engine ({exc}); fix: start dockerd (see DESIGN.md: Environment) "
            "or point DOCKER_HOST at a running engine"
        ) from exc
    return client


def deps_ref(line: ImageLine, flavor: str, repository: str = f"{IMAGE_NAME}-deps") -> str:
    """The deps stage's own image (base, Python, user, venv), e.g. pytorch-cuda-deps:v2.8."""
    return f"{repository}:{line.short_tag(flavor)}"


def image_refs(line: ImageLine, flavor: str, repository: str = IMAGE_NAME) -> tuple[str, str]:
    """(short, full) references: pytorch-cuda:v2.8 and pytorch-cuda:2.8.0-cuda12.8-cudnn9-py3.13-runtime."""
    return f"{repository}:{line.short_tag(flavor)}", f"{repository}:{line.full_tag(flavor)}"
