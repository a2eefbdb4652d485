"""env: version formatting, the manifest comparison rules, and the check run for real against this venv."""

from __future__ import annotations

import platform

import pytest

from verify.checks import env
from verify.context import Context
from verify.result import Status

VERSIONS = {
    "python": "3.13.5",
    "torch": "2.8.0+cu128",
    "cuda": "12.8",
    "cudnn": "9.10.2",
    "nccl": "2.27.3",
    "transformers": "4.56.1",
}
MANIFEST = {
    "schema": 1,
    "image": "pytorch-cuda",
    "tag": "v2.8",
    "flavor": "runtime",
    "full_tag": "pytorch-cuda:2.8.0-cuda12.8-cudnn9-py3.13-runtime",
    "base_image": "debian:trixie-slim",
    "python": "3.13",
    "torch": "2.8.0",
    "cuda": "12.8",
    "cudnn": "9.10.2.21",
    "nccl": "2.27.3",
    "triton": "3.4.0",
    "packages": {"transformers": "4.56.1", "accelerate": "1.10.1"},
    "nvidia": {"nvidia-cudnn-cu12": "9.10.2.21"},
}
INSTALLED = {
    "triton": "3.4.0",
    "transformers": "4.56.1",
    "accelerate": "1.10.1",
    "nvidia-cudnn-cu12": "9.10.2.21",
}


def _compare(versions=None, manifest=None, installed=None):
    installed = INSTALLED if installed is None else installed
    return env.compare_manifest(versions or VERSIONS, manifest or MANIFEST, installed.get)


@pytest.mark.parametrize(
    ("code", "text"), [(91002, "9.10.2"), (90100, "9.1.0"), (8907, "8.9.7"), (None, None)]
)
def test_cudnn_text(code, text):
    assert env.cudnn_text(code) == text


@pytest.mark.parametrize(
    ("value", "text"), [((2, 27, 3), "2.27.3"), (21903, "2.19.3"), (2708, "2.7.8"), (None, None)]
)
def test_nccl_text(value, text):
    assert env.nccl_text(value) == text


def test_a_matching_manifest_compares_every_pin():
    rows = _compare()
    assert all(row.ok for row in rows), [row.message() for row in rows if not row.ok]
    items = [row.item for row in rows]
    assert items == [
        "python",
        "torch",
        "CUDA runtime",
        "cuDNN",
        "NCCL",
        "triton",
        "accelerate",
        "transformers",
        "nvidia-cudnn-cu12",
    ]


@pytest.mark.parametrize(
    ("field", "installed", "message"),
    [
        ("torch", "2.7.1+cu126", "torch 2.7.1+cu126 installed, manifest promises 2.8.0"),
        ("python", "3.12.3", "python 3.12.3 installed, manifest promises 3.13"),
        ("cuda", "12.6", "CUDA runtime 12.6 installed, manifest promises 12.8"),
        ("cuda", None, "CUDA runtime not installed, manifest promises 12.8"),
        ("cudnn", "9.8.0", "cuDNN 9.8.0 installed, manifest promises 9.10.2.21"),
        ("nccl", "2.26.2", "NCCL 2.26.2 installed, manifest promises 2.27.3"),
    ],
)
def test_a_mismatch_names_both_values(field, installed, message):
    bad = [row for row in _compare(versions={**VERSIONS, field: installed}) if not row.ok]
    assert [row.message() for row in bad] == [message]


def test_packages_missing_or_different_are_named():
    installed = {**INSTALLED, "transformers": "4.57.0"}
    del installed["accelerate"]
    bad = [row.message() for row in _compare(installed=installed) if not row.ok]
    assert bad == [
        "accelerate not installed, manifest promises 1.10.1",
        "transformers 4.57.0 installed, manifest promises 4.56.1",
    ]


def test_local_tags_and_release_padding_are_not_mismatches():
    versions = {**VERSIONS, "torch": "2.8.0+cu128", "cudnn": "9.10.2"}
    manifest = {**MANIFEST, "torch": "2.8", "packages": {"accelerate": "1.10.1"}}
    installed = {**INSTALLED, "accelerate": "1.10.1+local"}
    assert all(row.ok for row in _compare(versions, manifest, installed))


def test_null_pins_are_not_compared():
    manifest = {**MANIFEST, "cuda": None, "cudnn": None, "nccl": None, "triton": None, "nvidia": None}
    versions = {**VERSIONS, "cuda": None, "cudnn": None, "nccl": None}
    rows = _compare(versions, manifest)
    assert "CUDA runtime" not in [row.item for row in rows]
    assert all(row.ok for row in rows)


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({**MANIFEST, "schema": 2}, "field 'schema' is 2, this verify reads schema 1"),
        (
            {**MANIFEST, "packages": ["torch"]},
            "field 'packages' must map package names to versions, got list",
        ),
    ],
)
def test_an_unreadable_manifest_names_the_field(manifest, message):
    with pytest.raises(env.ManifestError, match=message):
        _compare(manifest=manifest)


def test_evaluate_fails_on_mismatch_with_both_values_in_the_summary(tmp_path):
    rows = _compare(versions={**VERSIONS, "torch": "2.8.1"})
    result = env.evaluate(VERSIONS, None, tmp_path / "m.json", MANIFEST, rows)
    assert result.status is Status.FAIL
    assert result.summary == (
        "1 mismatch with manifest of pytorch-cuda:2.8.0-cuda12.8-cudnn9-py3.13-runtime: "
        "torch 2.8.1 installed, manifest promises 2.8.0"
    )
    assert result.figures["manifest_mismatches"] == 1


def test_evaluate_without_torch_fails_with_the_fix(tmp_path):
    result = env.evaluate(
        {**VERSIONS, "torch": None},
        "ModuleNotFoundError: No module named 'torch'",
        tmp_path / "m.json",
        None,
        [],
    )
    assert result.status is Status.FAIL
    assert "fix: pip install torch" in result.summary


# The real check in this venv (torch CPU): no mocks, the installed versions are what is compared.


def test_run_on_this_host_without_a_manifest(tmp_path):
    result = env.run(Context(manifest_path=tmp_path / "absent.json"))
    assert result.status is Status.PASS
    assert result.summary.endswith("; no image manifest (bare host)")
    import torch

    assert result.details["versions"]["torch"] == torch.__version__
    assert result.details["versions"]["torch_git"] == torch.version.git_version
    assert result.details["versions"]["python"] == platform.python_version()


def test_run_against_a_matching_and_a_wrong_manifest(host_manifest):
    good = env.run(Context(manifest_path=host_manifest()))
    assert good.status is Status.PASS, good.summary
    assert "all 4 pins match manifest of pytorch-cuda:test" in good.summary
    bad = env.run(Context(manifest_path=host_manifest(torch="2.7.1", packages={"rich": "0.1"})))
    assert bad.status is Status.FAIL
    assert "manifest promises 2.7.1" in bad.summary and "rich " in bad.summary
    assert bad.figures["manifest_mismatches"] == 2


def test_run_with_a_corrupt_manifest_fails_naming_the_file(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text("{not json")
    result = env.run(Context(manifest_path=path))
    assert result.status is Status.FAIL
    assert result.summary.startswith(f"image manifest {path}: cannot read {path}")
