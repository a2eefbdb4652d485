"""The committed Dockerfile installs the venv in place, with no CA, from an http:// index: real, made small.

Most users build with no extra CA: their deps stage installs the lock in place (no builder stage, no 7 GB
copy). This host's containers cannot reach PyPI without the proxy's CA, so the index reaches the build over
plain HTTP through scripts/http_index_mirror.py, which is how a site's own mirror looks too. The lock is cut
to uv and one small package so the proof takes a minute, not a full CUDA install (bench_build.py --http-mirror
measures the full one): the committed Dockerfile's deps stage, built as written, must install both through
its own steps (pip installs the lock's uv, uv the lock), trust the http host as TRUSTED_HOST says, leave no
build folder or cache behind, and stop on a wheel whose sha256 is not the locked one.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import docker
import pytest

from images.lock import parse_lock
from images.matrix import ImageLine

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

SMALL = "packaging"


def small_context(tmp_path: Path, line: ImageLine, *, spoil_hash: bool = False) -> Path:
    """The line's committed Dockerfile, its lock cut to uv and packaging (with their locked hashes)."""
    folder = tmp_path / f"images/{line.tag}"
    folder.mkdir(parents=True)
    shutil.copy(REPO / f"images/{line.tag}/Dockerfile", folder / "Dockerfile")
    lock = (REPO / f"images/{line.tag}/requirements.lock").read_text()
    _, entries = parse_lock(lock, "requirements.lock")
    kept = [e for e in entries if e.key in ("uv", SMALL)]
    assert len(kept) == 2, "the v2.8 lock lost uv or packaging"
    text = "".join(e.render() + "\n" for e in kept)
    if spoil_hash:
        small = next(e for e in kept if e.key == SMALL)
        text = text.replace(small.hashes[0], "0" * 64)
    (folder / "requirements.lock").write_text(text)
    return tmp_path


def build_deps(client: docker.DockerClient, context: Path, line: ImageLine, index: str) -> str:
    tag = f"pytorch-cuda-test-inplace:{uuid.uuid4().hex[:10]}"
    host = index.split("//", 1)[1].split("/", 1)[0]
    client.images.build(
        path=str(context),
        dockerfile=f"images/{line.tag}/Dockerfile",
        target="deps",
        tag=tag,
        buildargs={"INDEX_URL": index, "TRUSTED_HOST": host},
        rm=True,
        forcerm=True,
        pull=False,
    )
    return tag


def test_the_deps_stage_installs_the_lock_in_place_from_an_http_index(
    docker_client: docker.DockerClient, matrix_line: ImageLine, mirror_url: str, tmp_path: Path
) -> None:
    tag = build_deps(docker_client, small_context(tmp_path, matrix_line), matrix_line, mirror_url)
    try:
        out = docker_client.containers.run(
            tag,
            [
                "bash",
                "-c",
                "python -c 'import packaging, sys; print(packaging.__version__, sys.prefix)'"
                " && uv --version && pip check"
                " && test ! -e /tmp/build && test ! -e /root/.cache/uv && echo clean",
            ],
            remove=True,
        ).decode()
        history = " ".join(str(h.get("CreatedBy", "")) for h in docker_client.api.history(tag))
    finally:
        docker_client.images.remove(tag, force=True)
    _, entries = parse_lock((REPO / f"images/{matrix_line.tag}/requirements.lock").read_text(), "lock")
    versions = {e.key: e.version for e in entries}
    assert f"{versions[SMALL]} /opt/venv" in out
    assert f"uv {versions['uv']}" in out
    assert out.strip().endswith("clean")
    assert "COPY --from=builder" not in history  # in place: no second copy of the venv


def test_a_wheel_whose_sha256_is_not_the_locked_one_stops_the_build(
    docker_client: docker.DockerClient, matrix_line: ImageLine, mirror_url: str, tmp_path: Path
) -> None:
    context = small_context(tmp_path, matrix_line, spoil_hash=True)
    with pytest.raises(docker.errors.BuildError) as failure:
        build_deps(docker_client, context, matrix_line, mirror_url)
    said = "".join(f"{item.get('stream', '')}{item.get('error', '')}" for item in failure.value.build_log)
    assert "hash" in said.lower() and SMALL in said
