"""The JSON report matches its published schema; the JUnit XML is what CI publishers parse."""

from __future__ import annotations

import copy
import datetime as dt
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from verify import report as rep
from verify.result import Result, Status

SCHEMA = json.loads((Path(rep.__file__).parent / "report.schema.json").read_text())
DOC = Path(rep.__file__).resolve().parents[1] / "docs" / "report-schema.md"


def _validator() -> Draft202012Validator:
    return Draft202012Validator(SCHEMA, format_checker=FormatChecker())


def _results() -> list[Result]:
    return [
        Result(
            "env",
            Status.PASS,
            "python 3.11.7, torch 2.8.0",
            figures={"torch": "2.8.0"},
            details={"versions": {"python": "3.11.7", "torch": "2.8.0", "cuda": "12.8"}},
            duration_s=1.2,
        ),
        Result(
            "driver",
            Status.WARN,
            "GPU0 clocks held down: hw_thermal_slowdown",
            figures={"driver_version": "580.95.05", "temperature_max_C": 91},
            details={
                "gpus": [
                    {"index": 0, "name": "NVIDIA H100 80GB HBM3", "throttle_reasons": ["hw_thermal_slowdown"]}
                ]
            },
            duration_s=0.4,
        ),
        Result("nccl", Status.SKIP, "one GPU: multi-GPU all-reduce not run", duration_s=0.1),
        Result(
            "bert",
            Status.FAIL,
            "timed out after 300 s (killed)",
            figures={"ratio": float("inf")},
            duration_s=300,
        ),
    ]


def _report(results=None, interrupted=False, manifest_path=Path("/nonexistent/manifest.json")) -> dict:
    return rep.build_report(
        _results() if results is None else results,
        started_at=dt.datetime(2026, 11, 29, 12, 0, 0, tzinfo=dt.UTC),
        duration_s=301.7,
        manifest_path=manifest_path,
        options={
            "quick": False,
            "timeout_s": None,
            "require_gpu": True,
            "only": [],
            "skip": [],
            "checks": ["env", "driver"],
        },
        interrupted=interrupted,
    )


def test_schema_is_a_valid_json_schema():
    Draft202012Validator.check_schema(SCHEMA)


def test_report_validates_and_carries_versions_gpus_and_summary():
    report = _report()
    _validator().validate(report)
    assert report["schema_version"] == 1
    assert report["tool"]["name"] == "pytorch-cuda verify"
    assert report["versions"]["cuda"] == "12.8"
    assert report["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3"
    assert report["summary"] == {"pass": 1, "fail": 1, "warn": 1, "skip": 1}
    assert report["exit_code"] == 1
    assert report["manifest"] is None
    assert report["results"][3]["figures"]["ratio"] == "inf"  # strict JSON
    json.dumps(report, allow_nan=False)


def test_manifest_is_embedded_when_present(tmp_path):
    manifest = {"schema": 1, "image": "pytorch-cuda", "tag": "v2.8", "torch": "2.8.0"}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    report = _report(manifest_path=path)
    _validator().validate(report)
    assert report["manifest"] == manifest


@pytest.mark.parametrize(
    ("results", "interrupted", "code"),
    [
        (
            [Result("a", Status.PASS, "ok"), Result("b", Status.WARN, "w"), Result("c", Status.SKIP, "s")],
            False,
            0,
        ),
        ([Result("a", Status.PASS, "ok"), Result("b", Status.FAIL, "f")], False, 1),
        ([Result("a", Status.PASS, "ok"), Result("b", Status.SKIP, "interrupted: not run")], True, 130),
    ],
)
def test_exit_code(results, interrupted, code):
    assert rep.exit_code_for(results, interrupted) == code
    assert _report(results, interrupted)["exit_code"] == code


@pytest.mark.parametrize(
    "breakage",
    [
        lambda r: r.pop("results"),
        lambda r: r.update(schema_version=2),
        lambda r: r["results"][0].update(status="ok"),
        lambda r: r["results"][2].update(summary=""),  # a SKIP without a reason
        lambda r: r["results"][0]["figures"].update(per_size=[1, 2]),  # figures are flat
        lambda r: r["summary"].update(errors=0),
        lambda r: r.update(exit_code=2),
        lambda r: r.update(started_at="yesterday"),
        lambda r: r["options"].update(require_gpu="yes"),
    ],
)
def test_schema_rejects_broken_reports(breakage):
    report = copy.deepcopy(_report())
    breakage(report)
    assert list(_validator().iter_errors(report)), "the schema accepted a broken report"


def test_json_is_written_atomically(tmp_path):
    path = tmp_path / "sub" / "r.json"
    rep.write_json(_report(), path)
    assert json.loads(path.read_text())["schema_version"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_junit_has_a_testcase_per_check_with_failure_skip_and_properties(tmp_path):
    path = tmp_path / "junit.xml"
    rep.write_junit(_report(), path)
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped"), suite.get("errors")) == (
        "4",
        "1",
        "1",
        "0",
    )
    cases = {case.get("name"): case for case in suite.findall("testcase")}
    assert list(cases) == ["env", "driver", "nccl", "bert"]
    assert all(case.get("classname") == f"verify.{name}" for name, case in cases.items())
    assert float(cases["bert"].get("time")) == 300.0
    failure = cases["bert"].find("failure")
    assert failure is not None and failure.get("message") == "timed out after 300 s (killed)"
    assert cases["nccl"].find("skipped").get("message") == "one GPU: multi-GPU all-reduce not run"
    warn = cases["driver"]
    assert warn.find("failure") is None and warn.find("skipped") is None  # a warning does not fail CI
    props = {p.get("name"): p.get("value") for p in warn.find("properties")}
    assert props == {"status": "warn", "driver_version": "580.95.05", "temperature_max_C": "91"}
    assert warn.find("system-out").text.startswith("WARN: GPU0 clocks held down")
    suite_props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert suite_props["version.torch"] == "2.8.0"


def test_table_shows_every_check_with_status_and_time():
    from rich.console import Console

    console = Console(width=120, record=True, color_system=None)
    console.print(rep.results_table(_results()))
    text = console.export_text()
    for name, status in (("env", "PASS"), ("driver", "WARN"), ("nccl", "SKIP"), ("bert", "FAIL")):
        line = next(line for line in text.splitlines() if f" {name} " in line)
        assert status in line
    assert "300.0 s" in text


def test_schema_doc_names_every_option():
    doc = DOC.read_text()
    for option in SCHEMA["properties"]["options"]["properties"]:
        assert f"`{option}`" in doc, f"docs/report-schema.md does not describe options.{option}"


def test_schema_doc_names_every_top_level_field():
    doc = DOC.read_text()
    for field in SCHEMA["properties"]:
        assert f"`{field}`" in doc, f"docs/report-schema.md does not describe {field}"
