"""A build leaves no venv-sized garbage: the builder stage's image goes once the deps image exists, and a
rebuild removes the image its tags moved away from, unless something (a container) still uses it.

Without this every CI run on a fresh clone (new test CA, so a new deps key) left about 15 GB of untagged
images behind, until the engine's disk was full.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import docker
import pytest

from images.build import BuildRequest, BuildResult, build_image
from images.engine import deps_ref
from images.matrix import ImageLine

if TYPE_CHECKING:
    from conftest import BuildSecrets

pytestmark = pytest.mark.slow


def _rebuild(api: docker.APIClient, line: ImageLine, secrets: BuildSecrets) -> BuildResult:
    """A rebuild (the deps image is current: a few seconds) that is sure to be a new image: the build-time
    label has one-second resolution, and two rebuilds can fall in the same second."""
    request = BuildRequest(
        tag=line.tag, extra_ca=secrets.ca_bundle, index_url=secrets.index_url,
        extra_labels={"org.pytorch-cuda.test.rebuild": uuid.uuid4().hex},
    )  # fmt: skip
    return build_image(request, client=api)


def test_the_builder_stage_image_is_removed_once_the_deps_image_exists(
    docker_client: docker.DockerClient, build_result: BuildResult, matrix_line: ImageLine
) -> None:
    if build_result.deps_outcome is None:
        pytest.skip("the deps image was already current, so this session built no builder stage to remove")
    builder_ends = build_result.deps_outcome.stage_ends
    assert builder_ends, "the deps build's stream named no builder stage"
    for image_id in builder_ends:
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(image_id)
    assert docker_client.images.get(deps_ref(matrix_line, "runtime")).id  # the deps image itself stays
    assert f"# removed {builder_ends[0]}" in build_result.log_path.read_text()


def test_a_rebuild_removes_the_image_it_replaced_but_keeps_one_a_container_uses(
    docker_client: docker.DockerClient,
    build_result: BuildResult,
    build_secrets: BuildSecrets,
    matrix_line: ImageLine,
) -> None:
    api = docker_client.api
    first = docker_client.images.get(build_result.tags[0]).id
    container = docker_client.containers.create(first, command=["true"])
    try:
        second = _rebuild(api, matrix_line, build_secrets)
        assert second.image_id != first
        assert docker_client.images.get(first).id == first, "an image a container uses was removed"
        assert "# kept " + first.removeprefix("sha256:")[:12] in second.log_path.read_text()
    finally:
        container.remove()

    third = _rebuild(api, matrix_line, build_secrets)
    assert second.image_id.removeprefix("sha256:")[:12] in third.removed
    # The project stage's image goes too (it is a child of the deps image, so it would keep a replaced deps
    # image alive); the deps image it started from stays.
    deps_id = docker_client.images.get(deps_ref(matrix_line, "runtime")).id.removeprefix("sha256:")[:12]
    project_ends = [i for i in third.outcome.stage_ends if i != deps_id]
    assert project_ends, "the final build's stream named no project stage"
    for image_id in project_ends:
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(image_id)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(second.image_id)
    assert docker_client.images.get(build_result.tags[0]).id == third.image_id
    # The image the container held is untagged now: what `docker image prune` would take; take it here.
    docker_client.images.remove(first)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(first)
