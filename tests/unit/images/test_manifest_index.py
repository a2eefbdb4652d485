"""The multi-platform index's pure parts; the registry round trip is tests/engine/test_build_arm64.py."""

from __future__ import annotations

import json

from images.manifest_index import LIST_TYPE, index_body, split_registry


def test_a_registry_splits_into_host_and_namespace() -> None:
    assert split_registry("ghcr.io/acme") == ("ghcr.io", "acme/")
    assert split_registry("ghcr.io/acme/team") == ("ghcr.io", "acme/team/")
    assert split_registry("127.0.0.1:5000") == ("127.0.0.1:5000", "")


def test_the_index_lists_each_platform_manifest_as_docker_reads_a_manifest_list() -> None:
    entry = {
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "size": 1234,
        "digest": "sha256:" + "a" * 64,
        "platform": {"architecture": "arm64", "os": "linux"},
    }
    body = json.loads(index_body([entry]))
    assert body == {"schemaVersion": 2, "mediaType": LIST_TYPE, "manifests": [entry]}
