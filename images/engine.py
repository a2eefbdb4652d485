"""The Docker engine connection and the image names shared by build, push and verify.

Every engine failure a user can cause (no engine, a socket they may not open, the engine or a registry
refusing a request, a full disk) becomes one EngineError whose message names the cause and the fix, so the
commands print one paragraph and exit 1 instead of a traceback. The translation lives here, in
`engine_errors()`, used where build, push and verify talk to the engine; the rules that pick a fix from the
engine's own words (`explain_refusal`) are pure functions, tested on the engine's real error texts.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

import docker
import requests
from docker.errors import APIError, DockerException

from images.matrix import IMAGE_NAME, PLATFORMS, ImageLine

DEFAULT_HOST = "unix:///var/run/docker.sock"

DISK_FULL_FIX = (
    "the engine's disk is full; fix: `docker system df` shows what holds the space, `docker image prune` "
    "(or `docker system prune`) frees it, or make room on the disk of Docker's data root "
    "(`docker info -f '{{.DockerRootDir}}'`), then run again"
)


class EngineError(RuntimeError):
    """No Docker engine could be reached (or it refused a request); the message says how to fix it."""


def engine_address() -> str:
    """Where docker-py connects: DOCKER_HOST, else the default socket."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_HOST


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError at the bottom of docker-py's and requests' wrappers (they keep it in args or causes)."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, OSError) and item.errno is not None:
            return item
        todo += [item.__cause__, item.__context__, *item.args]
    return None


def unreachable(exc: BaseException, address: str) -> EngineError:
    """No engine answered at address: say whether nothing listens there or the socket is closed to us."""
    cause = _os_error(exc)
    where = f"cannot reach the Docker engine at {address}"
    if cause is not None and cause.errno in (errno.EACCES, errno.EPERM):
        return EngineError(
            f"{where}: permission denied (the engine's socket is open to root and the docker group only); "
            "fix: sudo usermod -aG docker $USER, then log out and in again (or run `newgrp docker`), "
            "or use rootless Docker (dockerd-rootless-setuptool.sh install, then "
            "DOCKER_HOST=unix://$XDG_RUNTIME_DIR/docker.sock)"
        )
    if cause is not None and cause.errno in (errno.ENOENT, errno.ECONNREFUSED):
        return EngineError(
            f"{where}: nothing listens there ({os.strerror(cause.errno)}); fix: start it "
            "(sudo systemctl start docker) or set DOCKER_HOST to a running engine"
        )
    return EngineError(
        f"{where} ({exc}); fix: check that the engine runs there (`docker info`), start it "
        "(sudo systemctl start docker) or set DOCKER_HOST to a running engine"
    )


def refusal_words(exc: APIError) -> str:
    """The engine's own sentence, without docker-py's "500 Server Error for http+docker://..." prefix."""
    return str(exc.explanation or exc).strip()


def explain_refusal(words: str, registry: str = "REGISTRY") -> str:
    """The fix for an engine or registry refusal, chosen from its words; "" when none is known."""
    lower = words.lower()
    if "no space left on device" in lower:
        return DISK_FULL_FIX
    if "server gave http response to https client" in lower:
        return (
            "the registry speaks plain HTTP; fix: serve it with TLS, or list it under "
            '"insecure-registries" in /etc/docker/daemon.json and restart dockerd'
        )
    if any(w in lower for w in ("unauthorized", "authentication required", "no basic auth credentials")):
        return f"the registry wants a login; fix: docker login {registry.split('/')[0]}"
    if "denied" in lower or "http 403" in lower or "403 forbidden" in lower:
        return (
            "the registry refuses this account write access there; fix: docker login with an account "
            f"that may push to it, or push to a namespace you own (--registry {registry.split('/')[0]}/NAME)"
        )
    if "http 405" in lower or "405 method not allowed" in lower or "unsupported" in lower:
        return (
            "the registry does not accept pushes (read-only or a pull-through mirror); fix: push to a "
            "writable registry"
        )
    if any(w in lower for w in ("no such host", "connection refused", "i/o timeout", "dial tcp")):
        return (
            "the engine cannot reach that registry; fix: check the address and that it runs; behind a "
            "proxy, give dockerd HTTPS_PROXY (a systemd drop-in for docker.service)"
        )
    if "unexpected http status: 5" in lower or "500 internal server error" in lower:
        return (
            "the registry failed on its side (its log says why, e.g. its disk is full); fix: repair or "
            "free the registry, then push again"
        )
    return ""


def refused(doing: str, words: str, registry: str = "REGISTRY") -> EngineError:
    """The engine (or a registry behind it) said no to `doing`; its words and the fix when one is known."""
    fix = explain_refusal(words, registry)
    return EngineError(f"the engine refused {doing}: {words}" + (f"; {fix}" if fix else ""))


@contextmanager
def engine_errors(doing: str, registry: str = "REGISTRY") -> Iterator[None]:
    """Turn docker-py's and requests' exceptions into EngineError naming the cause and the fix.

    Used around every conversation with the engine; callers that expect a particular refusal (an image
    that may be missing) catch it themselves inside.
    """
    try:
        yield
    except APIError as exc:
        raise refused(doing, refusal_words(exc), registry) from exc
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
        # Mid-conversation: the engine stopped answering (dockerd stopped or crashed).
        raise EngineError(
            f"lost the Docker engine at {engine_address()} while {doing} ({exc}); fix: see why it stopped "
            "(sudo systemctl status docker; journalctl -u docker), start it, then run again"
        ) from exc
    except DockerException as exc:
        raise unreachable(exc, engine_address()) from exc


def api_client(timeout: int = 3600) -> docker.APIClient:
    """The engine from DOCKER_HOST (or the default socket); EngineError with a fix when it is not there."""
    address = engine_address()
    try:
        client = docker.APIClient(timeout=timeout, **docker.utils.kwargs_from_env())
        client.ping()
    except (DockerException, requests.RequestException) as exc:
        raise unreachable(exc, address) from exc
    return client


def platform_suffix(platform: str | None) -> str:
    """ "" for the first platform (linux/amd64), else "-arm64": one local tag holds one architecture, so an
    image of another platform is tagged beside it (pytorch-cuda:v2.15-arm64)."""
    if platform is None or platform == PLATFORMS[0]:
        return ""
    return "-" + platform.rsplit("/", 1)[1]


def deps_ref(
    line: ImageLine, flavor: str, repository: str = f"{IMAGE_NAME}-deps", platform: str | None = None
) -> str:
    """The deps stage's own image (base, Python, user, venv), e.g. pytorch-cuda-deps:v2.8."""
    return f"{repository}:{line.short_tag(flavor)}{platform_suffix(platform)}"


def image_refs(
    line: ImageLine, flavor: str, repository: str = IMAGE_NAME, platform: str | None = None
) -> tuple[str, str]:
    """(short, full) references: pytorch-cuda:v2.8 and pytorch-cuda:2.8.0-cuda12.8-cudnn9-py3.13-runtime
    (with -arm64 after each for linux/arm64)."""
    suffix = platform_suffix(platform)
    return (
        f"{repository}:{line.short_tag(flavor)}{suffix}",
        f"{repository}:{line.full_tag(flavor)}{suffix}",
    )
