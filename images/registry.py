"""`python -m images push`: tag the built image for a registry and push its short and full tags.

The deps image (pytorch-cuda-deps:TAG) is pushed too: it shares its layers with the image, so the registry
stores nothing twice, and a later build elsewhere (CI) pulls it with `build --deps-image` instead of
re-downloading 4 GB of wheels when its inputs are unchanged.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

import docker
from docker.errors import APIError, ImageNotFound
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

from images.engine import EngineError, api_client, deps_ref, image_refs
from images.matrix import IMAGE_NAME, ImageLine, load_matrix


class PushError(RuntimeError):
    """The registry refused a push; the message holds the registry's own words."""


@dataclass(frozen=True)
class Pushed:
    ref: str
    digest: str


def push_ref(client: docker.APIClient, ref: str, console: Console | None = None) -> Pushed:
    """Push one reference with a per-layer byte progress display; the digest the registry reported."""
    repository, tag = ref.rsplit(":", 1)
    digest = ""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=24),
        DownloadColumn(),
        console=console,
        disable=console is None,
        transient=True,
    )
    tasks: dict[str, Any] = {}
    with progress:
        for event in client.push(repository, tag=tag, stream=True, decode=True):
            if "error" in event:
                raise PushError(f"push of {ref} failed: {event['error']}")
            aux = event.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = aux["Digest"]
            layer, detail = event.get("id"), event.get("progressDetail") or {}
            if layer and detail.get("total"):
                if layer not in tasks:
                    tasks[layer] = progress.add_task(f"{tag} {layer}", total=detail["total"])
                progress.update(tasks[layer], completed=detail.get("current", 0))
    if not digest:
        raise PushError(f"push of {ref} finished without a digest from the registry")
    return Pushed(ref, digest)


def push_line(
    line: ImageLine,
    flavor: str,
    registry: str,
    console: Console | None = None,
    client: docker.APIClient | None = None,
) -> list[Pushed]:
    """Tag the local short and full images as REGISTRY/pytorch-cuda:... and push both."""
    tag = line.tag
    client = client or api_client()
    pushed = []
    for local, remote in zip(
        image_refs(line, flavor), image_refs(line, flavor, f"{registry}/{IMAGE_NAME}"), strict=True
    ):
        try:
            client.inspect_image(local)
        except ImageNotFound:
            raise EngineError(f"no local image {local}; fix: make build TAG={tag} FLAVOR={flavor}") from None
        repository, remote_tag = remote.rsplit(":", 1)
        client.tag(local, repository, remote_tag, force=True)
        pushed.append(push_ref(client, remote, console))
    return pushed


def push_deps(
    line: ImageLine,
    flavor: str,
    registry: str,
    console: Console | None = None,
    client: docker.APIClient | None = None,
) -> Pushed | None:
    """Push REGISTRY/pytorch-cuda-deps:TAG; None when this engine has no deps image (built elsewhere)."""
    client = client or api_client()
    local, remote = deps_ref(line, flavor), deps_ref(line, flavor, f"{registry}/{IMAGE_NAME}-deps")
    try:
        client.inspect_image(local)
    except ImageNotFound:
        return None
    repository, remote_tag = remote.rsplit(":", 1)
    client.tag(local, repository, remote_tag, force=True)
    return push_ref(client, remote, console)


def cmd_push(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    registry = args.registry.rstrip("/")
    try:
        line = load_matrix().get(args.tag)
        pushed = push_line(line, args.flavor, registry, console)
        deps = push_deps(line, args.flavor, registry, console)
    except (EngineError, PushError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except APIError as exc:
        print(f"error: the engine refused the push to {registry}: {exc.explanation or exc}", file=sys.stderr)
        return 1
    for item in pushed:
        print(f"pushed {item.ref}@{item.digest}")
    if deps is None:
        print("no local deps image to push (this image was built elsewhere); `build --deps-image` needs one")
    else:
        print(f"pushed {deps.ref}@{deps.digest} (layer cache for `build --deps-image`)")
    return 0
