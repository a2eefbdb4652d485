"""A build that fails leaves no tag behind and names the failing step (real engine, real Dockerfile)."""

from __future__ import annotations

import shutil
from pathlib import Path

import docker
import pytest

from images import dockerfile as df
from images.build import BuildError, BuildRequest, build_image
from images.files import write_atomically
from images.lock import parse_lock, render_lock
from images.matrix import IMAGE_NAME, ImageLine, Matrix

REPO = Path(__file__).resolve().parents[2]


def mismatched_line(real: ImageLine) -> ImageLine:
    """The real v2.8 line under a tag of its own, asking for a Python the Debian base does not have."""
    return ImageLine(tag="v0.1", torch=real.torch, python="3.12", base_image=real.base_image,
                     flavors=("runtime",), packages=real.packages, pins=real.pins)  # fmt: skip


def test_failed_build_leaves_no_tag_and_prints_the_failing_step(
    docker_client: docker.DockerClient, matrix_line: ImageLine, tmp_path: Path
) -> None:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "verify", root / "verify", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "images" / "rootfs", root / "images" / "rootfs")
    for name in ("pyproject.toml", "README.md", ".dockerignore"):
        shutil.copy(REPO / name, root / name)
    line = mismatched_line(matrix_line)
    matrix = Matrix(lines=(line,))
    for item in df.render_all(matrix, root / "images"):
        write_atomically(item.path, item.text)
    # The real v2.8 lock under the new line (a build refuses a lock resolved from other requirements).
    _, entries = parse_lock((REPO / "images" / "v2.8" / "requirements.lock").read_text(), "v2.8")
    requirements = (root / "images" / "v0.1" / "requirements.txt").read_text()
    (root / "images" / "v0.1" / "requirements.lock").write_text(
        render_lock(line, "runtime", requirements, entries)
    )
    before = {t for image in docker_client.images.list() for t in image.tags}

    with pytest.raises(BuildError) as failure:
        build_image(BuildRequest(tag="v0.1"), matrix=matrix, client=docker_client.api,
                    log_dir=tmp_path / "logs", root=root)  # fmt: skip
    report = str(failure.value)
    assert "build failed at step" in report and "RUN have=" in report
    assert "the base image has Python 3.13 but pytorch-cuda v0.1 needs Python 3.12" in report
    assert "fix: choose a base image" in report
    logs = list((tmp_path / "logs").glob("v0.1-runtime-*.log"))
    assert len(logs) == 1 and "needs Python 3.12" in logs[0].read_text()

    after = {t for image in docker_client.images.list() for t in image.tags}
    # Only the names this build could leave (its tags, its deps image, its temporary name): other work on a
    # shared engine tags images meanwhile (a loaded run beside an arm64 build took that build's
    # pytorch-cuda-deps:v2.15-arm64 for a leftover of this one).
    new_tags = {
        t
        for t in after - before
        if t.startswith(f"{IMAGE_NAME}-build:") or ":v0.1" in t or line.full_tag("runtime") in t
    }
    assert not new_tags, f"a failed build left tags: {new_tags}"
    assert f"{IMAGE_NAME}:v0.1" not in after and f"{IMAGE_NAME}:{line.full_tag('runtime')}" not in after
