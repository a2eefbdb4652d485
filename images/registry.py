"""`python -m images push`: tag the built image for a registry and push its short and full tags.

The deps image (pytorch-cuda-deps:TAG) is pushed too: it shares its layers with the image, so the registry
stores nothing twice, and a later build elsewhere (CI) pulls it with `build --deps-image` instead of
re-downloading 4 GB of wheels when its inputs are unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import dataclass
from typing import Any

import docker
from docker.errors import APIError, ImageNotFound
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

from images.engine import (
    EngineError,
    api_client,
    deps_ref,
    engine_errors,
    explain_refusal,
    image_refs,
)
from images.manifest_index import PlatformImage, RegistryIndexError, push_index
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
                words = str(event["error"]).strip()
                fix = explain_refusal(words, repository)
                raise PushError(f"push of {ref} failed: {words}" + (f"; {fix}" if fix else ""))
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
        with engine_errors(f"the push of {local} to {registry}", registry):
            _require_local(client, local, f"make build TAG={tag} FLAVOR={flavor} first")
            pushed.append(_tag_and_push(client, local, remote, console))
    return pushed


def _require_local(client: docker.APIClient, local: str, fix: str) -> None:
    """EngineError naming the missing local image and how to build it."""
    try:
        client.inspect_image(local)
    except ImageNotFound:
        raise EngineError(f"no local image {local}; fix: {fix}") from None


def _tag_and_push(client: docker.APIClient, local: str, remote: str, console: Console | None) -> Pushed:
    """Name local as remote and push it; a push that fails takes its remote name back off the image."""
    repository, remote_tag = remote.rsplit(":", 1)
    client.tag(local, repository, remote_tag, force=True)
    try:
        return push_ref(client, remote, console)
    except BaseException:
        with contextlib.suppress(APIError):  # noprune: only the name goes, the image keeps its own tags
            client.remove_image(remote, noprune=True)
        raise


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
    with engine_errors(f"the push of {local} to {registry}", registry):
        try:
            client.inspect_image(local)
        except ImageNotFound:
            return None
        return _tag_and_push(client, local, remote, console)


@dataclass(frozen=True)
class MultiPlatform:
    images: list[Pushed]  # one per platform, under its own tag (v2.15-amd64, v2.15-arm64)
    index_refs: list[str]  # the short and full tags, each now the multi-platform index
    index_digest: str


def push_platforms(
    line: ImageLine,
    flavor: str,
    registry: str,
    console: Console | None = None,
    client: docker.APIClient | None = None,
) -> MultiPlatform:
    """Push each platform's local image of the line under a tag of its own, then one index under the short
    and full tags that `docker pull` resolves per platform. Every platform the line lists must be built."""
    client = client or api_client()
    pushed = []
    remote, _ = image_refs(line, flavor, f"{registry}/{IMAGE_NAME}")
    for platform in line.platforms:
        local, _ = image_refs(line, flavor, platform=platform)
        with engine_errors(f"the push of {local} to {registry}", registry):
            _require_local(
                client,
                local,
                f"make build TAG={line.tag} FLAVOR={flavor} PLATFORM={platform} first (every platform of "
                f"{line.tag} goes into the index)",
            )
            pushed.append(_tag_and_push(client, local, f"{remote}-{platform.rsplit('/', 1)[1]}", console))
    images = [PlatformImage(platform, p.digest) for platform, p in zip(line.platforms, pushed, strict=True)]
    short, full = image_refs(line, flavor)
    tags = [short.rsplit(":", 1)[1], full.rsplit(":", 1)[1]]
    try:
        digest = push_index(registry, IMAGE_NAME, tags, images)
    except (RegistryIndexError, OSError) as exc:
        raise PushError(f"the multi-platform index of {line.tag}: {exc}") from None
    return MultiPlatform(pushed, [f"{registry}/{IMAGE_NAME}:{t}" for t in tags], digest)


def cmd_push(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    registry = args.registry.rstrip("/")
    try:
        line = load_matrix().get(args.tag)
        if getattr(args, "multi_platform", False):
            multi = push_platforms(line, args.flavor, registry, console)
            for item in multi.images:
                print(f"pushed {item.ref}@{item.digest}")
            for ref in multi.index_refs:
                print(f"pushed {ref}@{multi.index_digest} (index: {', '.join(line.platforms)})")
            return 0
        pushed = push_line(line, args.flavor, registry, console)
        deps = push_deps(line, args.flavor, registry, console)
    except (EngineError, PushError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for item in pushed:
        print(f"pushed {item.ref}@{item.digest}")
    if deps is None:
        print("no local deps image to push (this image was built elsewhere); `build --deps-image` needs one")
    else:
        print(f"pushed {deps.ref}@{deps.digest} (layer cache for `build --deps-image`)")
    return 0
