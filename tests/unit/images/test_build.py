"""The build tooling without an engine: the context tarball, stream following, input errors.

The real engine paths (build, tags, failure, push, verify) are covered in tests/engine; here the engine's
event stream is replayed from the classic builder's documented shapes to pin down parsing and reporting.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from images.build import (
    DEPS_BEGIN,
    DEPS_END,
    BuildRequest,
    app_dockerfile,
    check_platform,
    deps_key,
    isolated_install_reasons,
    on_runtime_deps,
    trusted_hosts,
)
from images.context import CA_PATH_IN_CONTEXT, ContextError, ContextInputs, build_context
from images.matrix import MatrixError
from images.progress import failure_report, follow_build

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = "images/v2.8/Dockerfile"
PEM = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


def names(inputs: ContextInputs) -> dict[str, bytes]:
    with build_context(inputs) as handle, tarfile.open(fileobj=handle) as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else b"") for m in tar.getmembers()}  # type: ignore[union-attr]


def test_context_holds_what_the_dockerfile_copies_and_nothing_else() -> None:
    files = names(ContextInputs(REPO, DOCKERFILE))
    for needed in (
        "pyproject.toml",
        "README.md",
        DOCKERFILE,
        "images/v2.8/requirements.txt",
        "images/v2.8/manifest-runtime.json",
        "verify/__init__.py",
        "images/rootfs/usr/local/bin/entrypoint",
    ):
        assert needed in files, needed
    for unwanted in (".git", ".venv", "tests", "build", "reports"):
        assert not any(n == unwanted or n.startswith(unwanted + "/") for n in files), unwanted
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in files)
    assert not any(n.startswith(".build") for n in files)  # no build-only input unless asked for


def test_extra_ca_and_wheelhouse_go_to_fixed_paths_and_a_local_build_dir_is_ignored(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "images" / "v2.8").mkdir(parents=True)
    (root / "images" / "v2.8" / "Dockerfile").write_text("FROM scratch\n")
    (root / ".build").mkdir()
    (root / ".build" / "extra-ca.pem").write_bytes(b"stale local file")
    (root / ".dockerignore").write_text("*\n!images/\n")
    ca = tmp_path / "ca.pem"
    ca.write_bytes(PEM)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "demo-1.0-py3-none-any.whl").write_bytes(b"zip")
    (wheels / "notes.txt").write_text("not a wheel")
    files = names(ContextInputs(root, "images/v2.8/Dockerfile", extra_ca=ca, wheelhouse=wheels))
    assert files[CA_PATH_IN_CONTEXT] == PEM
    assert files[".build/wheelhouse/demo-1.0-py3-none-any.whl"] == b"zip"
    assert ".build/wheelhouse/notes.txt" not in files


@pytest.mark.parametrize(
    ("kind", "content", "message"),
    [
        ("ca", None, r"--extra-ca-cert: .* is not a file; fix:"),
        ("ca", b"\x30\x82binary DER", r"--extra-ca-cert: .* holds no PEM certificate .*fix: convert it"),
        ("wheels", None, r"--wheelhouse: .* is not a directory; fix:"),
        ("wheels", b"", r"--wheelhouse: .* holds no .whl file; fix:"),
    ],
)
def test_bad_build_only_inputs_name_the_option_and_the_fix(
    tmp_path: Path, kind: str, content: bytes | None, message: str
) -> None:
    target = tmp_path / "input"
    if content is not None:
        if kind == "ca":
            target.write_bytes(content)
        else:
            target.mkdir()
    inputs = ContextInputs(
        REPO, DOCKERFILE, **({"extra_ca": target} if kind == "ca" else {"wheelhouse": target})
    )
    with pytest.raises(ContextError, match=message):
        build_context(inputs)


def classic_stream(fail: bool) -> list[dict]:
    """Events in the shapes the classic builder sends through /build."""
    events = [
        {"stream": "Step 1/3 : FROM debian:trixie-slim"},
        {"stream": "\n"},
        {"stream": " ---> 51cebcdd1b12\n"},
        {"stream": "Step 2/3 : RUN pip install -r /tmp/build/requirements.txt"},
        {"stream": "\n"},
        {"stream": " ---> Running in 0f1e2d3c4b5a\n"},
    ]
    events += [{"stream": f"output line {i}\n"} for i in range(40)]
    if fail:
        message = "The command '/bin/sh -c pip' returned a non-zero code: 1"
        events.append({"errorDetail": {"code": 1, "message": message}, "error": message})
        return events
    events += [
        {"stream": " ---> 1234567890ab\n"},
        {"stream": "Step 3/3 : LABEL a=b"},
        {"stream": "\n"},
        {"aux": {"ID": "sha256:" + "ab" * 32}},
        {"stream": "Successfully built abababababab\n"},
        {"stream": "Successfully tagged pytorch-cuda-build:x\n"},
    ]
    return events


def test_follow_build_success_finds_image_and_steps() -> None:
    log = io.StringIO()
    outcome = follow_build(classic_stream(fail=False), log)
    assert outcome.ok and outcome.image_id == "sha256:" + "ab" * 32
    assert [s.number for s in outcome.steps] == [1, 2, 3] and outcome.steps[-1].total == 3
    assert "output line 39" in log.getvalue() and "Step 3/3 : LABEL a=b" in log.getvalue()


def test_follow_build_failure_reports_the_step_and_its_last_30_lines(tmp_path: Path) -> None:
    outcome = follow_build(classic_stream(fail=True), io.StringIO())
    assert not outcome.ok and outcome.failed_step is not None and outcome.failed_step.number == 2
    report = failure_report(outcome, tmp_path / "x.log")
    assert "build failed at step 2/3: RUN pip install -r /tmp/build/requirements.txt" in report
    assert "output line 39" in report and "returned a non-zero code: 1" in report
    assert "output line 10" not in report  # only the tail: the full log holds the rest
    assert f"full log: {tmp_path / 'x.log'}" in report


def test_follow_build_records_the_last_image_of_every_stage_before_the_final_one() -> None:
    """Those are the builder stages' results, which the build removes once the deps image exists."""
    events = [
        {"stream": "Step 1/5 : FROM debian:trixie-slim AS builder\n"},
        {"stream": " ---> 51cebcdd1b12\n"},
        {"stream": "Step 2/5 : RUN pip install torch\n"},
        {"stream": " ---> Running in 0f1e2d3c4b5a\n"},  # a container, not an image
        {"stream": " ---> Removed intermediate container 0f1e2d3c4b5a\n"},
        {"stream": " ---> aaaaaaaaaaaa\n"},
        {"stream": "Step 3/5 : FROM debian:trixie-slim AS deps\n"},
        {"stream": " ---> 51cebcdd1b12\n"},
        {"stream": "Step 4/5 : COPY --from=builder /opt/venv /opt/venv\n"},
        {"stream": " ---> Using cache\n"},
        {"stream": " ---> bbbbbbbbbbbb\n"},
        {"stream": "Step 5/5 : LABEL k=v\n"},
        {"stream": " ---> cccccccccccc\n"},
        {"aux": {"ID": "sha256:" + "cc" * 32}},
    ]
    outcome = follow_build(events, io.StringIO())
    assert outcome.ok and outcome.stage_ends == ["aaaaaaaaaaaa"]
    assert follow_build(classic_stream(fail=False), io.StringIO()).stage_ends == []  # one stage


def test_a_full_disk_is_named_with_the_fix(tmp_path: Path) -> None:
    message = "Error processing tar file(exit status 1): write /opt/venv/x.pyc: no space left on device"
    events = [
        {"stream": "Step 1/1 : COPY --from=builder /opt/venv /opt/venv\n"},
        {"stream": message + "\n"},
        {"errorDetail": {"message": message}, "error": message},
    ]
    report = failure_report(follow_build(events, io.StringIO()), tmp_path / "x.log")
    assert "the engine's disk is full" in report and "docker image prune" in report
    assert "disk is full" not in failure_report(
        follow_build(classic_stream(fail=True), io.StringIO()), tmp_path / "x.log"
    )


def test_unknown_tag_lists_the_known_ones_and_exits_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "images", "build", "--tag", "v9.9"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "unknown tag 'v9.9'" in proc.stderr and "v2.8" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_ca_file_is_a_usage_error_before_any_engine_work(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "images", "build", "--extra-ca-cert", str(tmp_path / "nope.pem")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"DOCKER_HOST": "unix:///nonexistent.sock", "PATH": ""},
    )
    assert proc.returncode == 2, proc.stderr
    assert "--extra-ca-cert:" in proc.stderr and "Traceback" not in proc.stderr


def test_no_engine_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "images", "build", "--tag", "v2.8"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"DOCKER_HOST": "unix:///nonexistent.sock", "PATH": ""},
    )
    assert proc.returncode == 1
    assert "cannot reach the Docker engine" in proc.stderr and "fix:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_app_dockerfile_swaps_only_the_deps_stage() -> None:
    text = (REPO / DOCKERFILE).read_text()
    app = app_dockerfile(text, "pytorch-cuda-deps:v2.8")
    head, tail = text.split(DEPS_BEGIN)[0], text.split(DEPS_END)[1]
    assert app == f"{head}{DEPS_BEGIN}\nFROM pytorch-cuda-deps:v2.8 AS deps\n{DEPS_END}{tail}"
    assert "COPY --from=builder /opt/venv" not in app  # the 7 GB copy is what the deps image holds
    assert "AS builder" not in app and ".build/" not in app.split(DEPS_END)[1]  # no CA needed
    assert "FROM deps\n" in tail and "COPY --from=project /tmp/dist/" in tail
    with pytest.raises(MatrixError, match="fix: make dockerfiles"):
        app_dockerfile("FROM scratch\n", "x")


def test_deps_key_follows_the_deps_inputs_only(tmp_path: Path) -> None:
    text = (REPO / DOCKERFILE).read_text()
    ca = tmp_path / "ca.pem"
    ca.write_bytes(PEM)
    plain = ContextInputs(REPO, DOCKERFILE)
    base = deps_key(text, b"torch==2.8.0\n", {"UID": "1000"}, plain, "sha256:base")
    assert base == deps_key(text, b"torch==2.8.0\n", {"UID": "1000"}, plain, "sha256:base")
    after_deps = text.replace(DEPS_END, DEPS_END + "\n# a change in the project or final stage")
    assert deps_key(after_deps, b"torch==2.8.0\n", {"UID": "1000"}, plain, "sha256:base") == base
    changed = [
        deps_key(
            text.replace("python3-venv", "python3-venv "),
            b"torch==2.8.0\n",
            {"UID": "1000"},
            plain,
            "sha256:base",
        ),
        deps_key(text, b"torch==2.8.1\n", {"UID": "1000"}, plain, "sha256:base"),
        deps_key(text, b"torch==2.8.0\n", {"UID": "1001"}, plain, "sha256:base"),
        deps_key(
            text,
            b"torch==2.8.0\n",
            {"UID": "1000"},
            ContextInputs(REPO, DOCKERFILE, extra_ca=ca),
            "sha256:base",
        ),
        deps_key(text, b"torch==2.8.0\n", {"UID": "1000"}, plain, "sha256:newbase"),
    ]
    assert base not in changed and len(set(changed)) == len(changed)


def test_only_build_only_secrets_move_the_install_to_a_builder_stage(tmp_path: Path) -> None:
    plain = BuildRequest(tag="v2.8")
    assert isolated_install_reasons(plain) == []
    assert isolated_install_reasons(replace(plain, index_url="https://mirror.example/simple")) == []
    assert isolated_install_reasons(replace(plain, extra_ca=tmp_path / "ca.pem")) == ["an extra CA bundle"]
    assert isolated_install_reasons(replace(plain, wheelhouse=tmp_path)) == ["a wheelhouse"]
    assert isolated_install_reasons(
        replace(
            plain, index_url="https://u:secret@mirror.example/simple", extra_index_url="https://u:@x/simple"
        )
    ) == ["a credential in --index-url", "a credential in --extra-index-url"]


def test_http_indexes_are_trusted_hosts_for_pip() -> None:
    plain = BuildRequest(tag="v2.8")
    assert trusted_hosts(plain) == ""
    assert trusted_hosts(replace(plain, index_url="https://pypi.org/simple")) == ""
    both = replace(plain, index_url="http://172.17.0.1:3141/simple", extra_index_url="http://mirror/simple")
    assert trusted_hosts(both) == "172.17.0.1:3141 mirror"


def test_a_cuda12_devel_build_starts_from_the_runtime_deps_image() -> None:
    text = (REPO / "images/v2.8/Dockerfile.devel").read_text()
    swapped = on_runtime_deps(text, "pytorch-cuda-deps:v2.8")
    rest = swapped.split(DEPS_BEGIN + "\n", 1)[1]
    assert rest.startswith("FROM pytorch-cuda-deps:v2.8 AS runtime-deps\nFROM runtime-deps AS deps\n")
    assert "uv pip install" not in rest.split(DEPS_END)[0]  # the venv is the runtime deps image's
    assert "apt-get download nvidia-cuda-toolkit" in rest.split(DEPS_END)[0]  # the toolchain is built here
    assert swapped.split(DEPS_END)[1] == text.split(DEPS_END)[1]
    with pytest.raises(MatrixError, match="fix: make dockerfiles"):
        on_runtime_deps(
            (REPO / DOCKERFILE).read_text(), "x"
        )  # a runtime Dockerfile has no runtime-deps stage


def test_a_platform_the_line_is_not_locked_for_is_refused_before_any_engine_work() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "images", "build", "--tag", "v2.8", "--platform", "linux/arm64"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"DOCKER_HOST": "unix:///nonexistent.sock", "PATH": ""},
    )
    assert proc.returncode == 2, proc.stderr
    assert "--platform: v2.8 is built for linux/amd64, not 'linux/arm64'" in proc.stderr
    assert "make lock" in proc.stderr and "Traceback" not in proc.stderr


def test_another_platform_is_tagged_beside_the_first() -> None:
    from images.engine import deps_ref, image_refs
    from images.matrix import load_matrix

    line = load_matrix().get("v2.15")
    assert (
        check_platform(line, None) == "linux/amd64" and check_platform(line, "linux/arm64") == "linux/arm64"
    )
    short, full = image_refs(line, "runtime", platform="linux/arm64")
    assert short == "pytorch-cuda:v2.15-arm64" and full.endswith("-py3.13-runtime-arm64")
    assert image_refs(line, "runtime", platform="linux/amd64") == image_refs(line, "runtime")
    assert deps_ref(line, "devel", platform="linux/arm64") == "pytorch-cuda-deps:v2.15-devel-arm64"
