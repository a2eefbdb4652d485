"""A rebuild of an unchanged line reuses every layer, also through --cache-from (what CI passes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import docker
import pytest

from images.build import BuildRequest, BuildResult, build_image

if TYPE_CHECKING:
    from conftest import BuildSecrets

pytestmark = pytest.mark.slow


def test_unchanged_rebuild_with_cache_from_reuses_every_layer(
    docker_client: docker.DockerClient, build_result: BuildResult, build_secrets: BuildSecrets
) -> None:
    first = docker_client.images.get(build_result.image_id)
    request = BuildRequest(
        tag="v2.8",  # the line the session's build_result built
        extra_ca=build_secrets.ca_bundle,
        index_url=build_secrets.index_url,
        cache_from=(build_result.tags[1],),
    )
    again = build_image(request, client=docker_client.api)
    assert again.deps_outcome is None, "the deps image was rebuilt although nothing changed"
    assert "Using cache" in again.log_path.read_text()
    rebuilt = docker_client.images.get(again.tags[0])
    assert rebuilt.attrs["RootFS"]["Layers"] == first.attrs["RootFS"]["Layers"]
    assert again.seconds < 60, f"an unchanged rebuild took {again.seconds:.0f} s"
