"""Push both tags of the real v2.8 image to a real registry on localhost, pull back, compare digests."""

from __future__ import annotations

import contextlib

import docker
import pytest
import requests

from images.engine import image_refs
from images.matrix import IMAGE_NAME, ImageLine
from images.registry import push_line

pytestmark = pytest.mark.slow
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


def test_push_both_tags_remove_pull_back_same_digest(
    docker_client: docker.DockerClient, built_image: str, matrix_line: ImageLine, local_registry: str
) -> None:
    remote_refs = list(image_refs(matrix_line, "runtime", f"{local_registry}/{IMAGE_NAME}"))
    try:
        check_push_round_trip(docker_client, built_image, matrix_line, local_registry, remote_refs)
    finally:  # never leave registry names behind, whatever failed
        for ref in remote_refs:
            with contextlib.suppress(docker.errors.ImageNotFound):
                docker_client.images.remove(ref)


def check_push_round_trip(
    docker_client: docker.DockerClient,
    built_image: str,
    matrix_line: ImageLine,
    local_registry: str,
    remote_refs: list[str],
) -> None:
    pushed = push_line(matrix_line, "runtime", local_registry, client=docker_client.api)
    assert [p.ref for p in pushed] == remote_refs
    assert all(p.digest.startswith("sha256:") for p in pushed)
    local = docker_client.images.get(built_image)

    # Two pushes of one image may compress a layer differently (so manifest digests can differ);
    # what identifies the image is its config digest, which must be the local image id for both tags.
    for ref, item in zip(remote_refs, pushed, strict=True):
        tag = ref.rsplit(":", 1)[1]
        answer = requests.get(f"http://{local_registry}/v2/{IMAGE_NAME}/manifests/{tag}",
                              headers={"Accept": MANIFEST_V2}, timeout=30)  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert answer.headers["Docker-Content-Digest"] == item.digest
        assert answer.json()["config"]["digest"] == local.id
        layers = answer.json()["layers"]
        assert len(layers) == len(local.attrs["RootFS"]["Layers"])
        for layer in layers:  # every layer's bytes are in the registry, not just the manifest
            head = requests.head(
                f"http://{local_registry}/v2/{IMAGE_NAME}/blobs/{layer['digest']}", timeout=30
            )
            assert head.status_code == 200 and int(head.headers["Content-Length"]) == layer["size"]

    local_id = local.id
    # Remove the registry names only: the local short and full tags stay for the other tests, so the pull
    # finds the layers present and fetches the manifests and config from the registry.
    for ref in remote_refs:
        docker_client.images.remove(ref)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(remote_refs[0])
    for ref, item in zip(remote_refs, pushed, strict=True):
        repository, tag = ref.rsplit(":", 1)
        pulled = docker_client.images.pull(repository, tag=tag)
        assert pulled.id == local_id
        assert f"{repository}@{item.digest}" in pulled.attrs["RepoDigests"]
