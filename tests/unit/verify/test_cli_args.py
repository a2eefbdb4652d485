"""`verify` argument handling: good input runs, bad input exits 2 with a message that names the fix."""

from __future__ import annotations

import json

import checkfakes
import pytest

from verify.checks import CHECK_MODULES
from verify.cli import build_parser, main, require_gpu
from verify.context import Context

ALL_NAMES = ["env", "driver", "host", "xid", "topology", "gpu", "nccl", "amp", "bert", "compile"]


def _usage_error(capsys, argv, check_modules=CHECK_MODULES) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv, check_modules=check_modules)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_check_modules_are_the_checks_in_order():
    assert [m.rsplit(".", 1)[-1] for m in CHECK_MODULES] == ALL_NAMES


def test_help_shows_examples_and_exit_codes(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "verify run --only env,driver" in out
    assert "exit codes: 0 all passed" in out


def test_run_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for option in (
        "--only",
        "--skip",
        "--json",
        "--junit",
        "--quick",
        "--timeout",
        "--manifest",
        "--require-gpu",
    ):
        assert option in out


def test_no_command_is_a_usage_error(capsys):
    assert "required: COMMAND" in _usage_error(capsys, [])


@pytest.mark.parametrize("flag", ["--only", "--skip"])
def test_unknown_check_name_lists_the_valid_names(capsys, flag):
    err = _usage_error(capsys, ["run", flag, "env,gpus"])
    assert f"{flag}: unknown check 'gpus'; valid names: {', '.join(ALL_NAMES)}" in err


def test_only_and_skip_that_leave_nothing_is_a_usage_error(capsys):
    assert "leave no check to run" in _usage_error(capsys, ["run", "--only", "env", "--skip", "env"])


@pytest.mark.parametrize("value", ["-1", "0", "abc", "inf", "nan"])
def test_bad_timeout_is_a_usage_error(capsys, value):
    err = _usage_error(capsys, ["run", "--timeout", value])
    assert "argument --timeout" in err and value in err


def test_json_path_that_is_a_directory_is_a_usage_error(capsys, tmp_path):
    err = _usage_error(capsys, ["run", "--only", "env", "--json", str(tmp_path)])
    assert f"--json {tmp_path}: is a directory" in err


def test_unwritable_report_path_is_a_usage_error(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    err = _usage_error(capsys, ["run", "--only", "env", "--junit", str(blocker / "junit.xml")])
    assert f"--junit {blocker / 'junit.xml'}: cannot write there" in err
    assert "fix: choose a writable path" in err


def test_unwritable_report_dir_is_a_usage_error_before_any_check(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    err = _usage_error(capsys, ["run", "--only", "env", "--report-dir", str(blocker / "nodes")])
    assert f"--report-dir {blocker / 'nodes'}: cannot write there" in err
    assert "fix: choose a writable folder" in err
    assert "PASS" not in capsys.readouterr().out  # no check ran


def test_missing_manifest_is_a_usage_error(capsys, tmp_path):
    err = _usage_error(capsys, ["run", "--manifest", str(tmp_path / "nope.json")])
    assert "--manifest" in err and "no such file" in err


def test_only_and_skip_accept_lists_and_repeats():
    args = build_parser().parse_args(["run", "--only", "env, driver", "--only", "gpu", "--skip", "bert"])
    assert args.only == ["env", "driver", "gpu"] and args.skip == ["bert"]


def test_list_prints_every_check_with_one_line(capsys, tmp_path, monkeypatch):
    modules = checkfakes.install(tmp_path, monkeypatch, ok=30, warns=45)
    assert main(["list"], check_modules=modules) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["ok     fake check ok  (timeout 30 s)", "warns  fake check warns  (timeout 45 s)"]


def test_bench_bert_is_a_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--help"])
    assert exc.value.code == 0
    assert "bert" in capsys.readouterr().out


def test_run_exit_codes_and_default_report_path(tmp_path, monkeypatch, capsys):
    modules = checkfakes.install(tmp_path, monkeypatch, ok=30, warns=30, raises=30)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--skip", "raises"], check_modules=modules) == 0  # WARN still passes
    out = capsys.readouterr().out
    default = tmp_path / "verify-report.json"
    assert out.strip().splitlines()[-1] == f"JSON report: {default}"
    assert json.loads(default.read_text())["exit_code"] == 0
    assert main(["run", "--only", "raises,ok"], check_modules=modules) == 1
    report = json.loads(default.read_text())
    assert [r["name"] for r in report["results"]] == ["ok", "raises"]  # check order, not --only order
    assert report["exit_code"] == 1


def test_run_writes_json_and_junit_where_asked(tmp_path, monkeypatch, capsys):
    modules = checkfakes.install(tmp_path, monkeypatch, ok=30)
    json_path = tmp_path / "out" / "deeper" / "report.json"
    junit_path = tmp_path / "out" / "junit.xml"
    code = main(
        ["run", "--quick", "--timeout", "20", "--json", str(json_path), "--junit", str(junit_path)],
        check_modules=modules,
    )
    assert code == 0
    report = json.loads(json_path.read_text())
    assert report["options"]["quick"] is True and report["options"]["timeout_s"] == 20
    assert report["results"][0]["figures"] == {"quick": True, "timeout_s": 20.0}
    assert junit_path.read_text().startswith('<?xml version="1.0"')
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2:] == [f"JUnit XML: {junit_path}", f"JSON report: {json_path}"]


# A fake check that reports what its process was told, so the flag is seen where the gpu check reads it.
TELLS_REQUIRE_GPU = """
def run(ctx):
    return Result(NAME, Status.PASS, "told", figures={"require_gpu": ctx.require_gpu})
"""


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], None, False),
        (["--require-gpu"], None, True),
        ([], "1", True),
        ([], "yes", True),
        ([], "0", False),
        (["--require-gpu"], "0", True),  # the flag is never undone by the environment
    ],
)
def test_require_gpu_reaches_the_check_process_and_the_report(tmp_path, monkeypatch, argv, env, expected):
    monkeypatch.setitem(checkfakes.SOURCES, "tells", TELLS_REQUIRE_GPU)
    modules = checkfakes.install(tmp_path, monkeypatch, tells=30)
    if env is None:
        monkeypatch.delenv("VERIFY_REQUIRE_GPU", raising=False)
    else:
        monkeypatch.setenv("VERIFY_REQUIRE_GPU", env)
    report_path = tmp_path / "r.json"
    assert main(["run", *argv, "--json", str(report_path)], check_modules=modules) == 0
    report = json.loads(report_path.read_text())
    assert report["options"]["require_gpu"] is expected
    assert report["results"][0]["figures"] == {"require_gpu": expected}


def test_a_require_gpu_value_that_is_neither_yes_nor_no_is_a_usage_error(capsys, monkeypatch):
    monkeypatch.setenv("VERIFY_REQUIRE_GPU", "maybe")
    err = _usage_error(capsys, ["run", "--only", "env"])
    assert "VERIFY_REQUIRE_GPU='maybe': expected 1 or 0" in err
    assert require_gpu(True, {"VERIFY_REQUIRE_GPU": "0"}) is True


def test_context_round_trips_require_gpu():
    assert Context.from_dict(Context(require_gpu=True).to_dict()).require_gpu is True
    assert Context.from_dict({}).require_gpu is False  # an older caller's JSON
