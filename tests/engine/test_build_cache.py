"""The deps image is CI's layer cache: pushed beside the image, pulled back by `build --deps-image`, reused
only when its deps-key label matches the build's inputs; an unchanged local rebuild skips it outright."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import docker
import pytest

from images.build import DEPS_KEY_LABEL, BuildRequest, BuildResult, build_image, reuse_pushed_deps
from images.engine import deps_ref
from images.matrix import ImageLine
from images.registry import push_deps

if TYPE_CHECKING:
    from conftest import BuildSecrets

pytestmark = pytest.mark.slow


def _request(line: ImageLine, secrets: BuildSecrets, deps_image: str | None = None) -> BuildRequest:
    return BuildRequest(
        tag=line.tag, extra_ca=secrets.ca_bundle, index_url=secrets.index_url, deps_image=deps_image
    )


def test_deps_image_round_trip_through_a_registry(
    docker_client: docker.DockerClient,
    build_result: BuildResult,
    build_secrets: BuildSecrets,
    matrix_line: ImageLine,
    local_registry: str,
) -> None:
    api = docker_client.api
    local = deps_ref(matrix_line, "runtime")
    key = docker_client.images.get(local).labels[DEPS_KEY_LABEL]
    assert len(key) == 64

    # An unchanged rebuild reads the key off the local deps image and skips phase 1.
    again = build_image(_request(matrix_line, build_secrets), client=api)
    assert again.deps_outcome is None, "the deps image was rebuilt although nothing changed"
    assert f"phase 1 skipped: {local} is current" in again.log_path.read_text()

    # As in CI: the deps image comes from the registry, the local one is gone.
    pushed = push_deps(matrix_line, "runtime", local_registry, client=api)
    assert pushed is not None and pushed.digest.startswith("sha256:")
    remote = deps_ref(matrix_line, "runtime", f"{local_registry}/pytorch-cuda-deps")
    api.remove_image(local, noprune=True)  # untag: the layers stay, as the built image still uses them
    api.remove_image(remote, noprune=True)
    reused = build_image(_request(matrix_line, build_secrets, deps_image=remote), client=api)
    api.remove_image(remote, noprune=True)  # the pulled registry name; the local deps tag stays
    assert reused.deps_outcome is None, "the pulled deps image was not reused"
    assert f"phase 1 skipped: reused {remote} (same deps key)" in reused.log_path.read_text()
    deps_layers = docker_client.images.get(local).attrs["RootFS"]["Layers"]
    assert docker_client.images.get(local).labels[DEPS_KEY_LABEL] == key
    image_layers = docker_client.images.get(reused.tags[0]).attrs["RootFS"]["Layers"]
    assert image_layers[: len(deps_layers)] == deps_layers


def test_a_deps_image_built_from_other_inputs_is_not_reused(
    docker_client: docker.DockerClient,
    build_result: BuildResult,
    build_secrets: BuildSecrets,
    matrix_line: ImageLine,
    local_registry: str,
) -> None:
    """A pushed deps image whose key differs (another requirements set, an older base) must not be used."""
    api = docker_client.api
    stale = f"{local_registry}/pytorch-cuda-deps:stale-test"
    container = docker_client.containers.create(deps_ref(matrix_line, "runtime"), command=["true"])
    try:
        container.commit(
            repository=stale.rsplit(":", 1)[0], tag="stale-test", changes=[f'LABEL {DEPS_KEY_LABEL}="0"']
        )
    finally:
        container.remove()
    api.push(stale.rsplit(":", 1)[0], tag="stale-test")
    api.remove_image(stale, noprune=True)  # so that reuse_pushed_deps really pulls it
    local = deps_ref(matrix_line, "runtime")
    before = docker_client.images.get(local).id
    log = io.StringIO()
    assert not reuse_pushed_deps(
        api, stale, local, docker_client.images.get(local).labels[DEPS_KEY_LABEL], log
    )
    assert "built from other inputs" in log.getvalue()
    assert docker_client.images.get(local).id == before, "the stale image replaced the local deps image"
    api.remove_image(stale, noprune=True)  # pulled again by reuse_pushed_deps; leave no registry names
    assert not reuse_pushed_deps(api, f"{local_registry}/pytorch-cuda-deps:missing", local, "x", log)
    assert "could not be pulled" in log.getvalue()
