"""The runner with real misbehaving check processes: crash, hang, exception, garbage, leaked children."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import checkfakes
import pytest

from tests.foreground import foreground_python
from verify.context import Context
from verify.result import Status
from verify.runner import FALLBACK_TIMEOUT_S, KILL_GRACE_S, read_spec, run_checks

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True, params=["forkserver", "worker"])
def start_method(request, monkeypatch):
    """Every isolation test twice: checks forked from the warm fork servers (the default), and started as
    fresh `python -m verify.worker` processes (VERIFY_FORKSERVER=0, and what a server that failed leaves)."""
    monkeypatch.setenv("VERIFY_FORKSERVER", "1" if request.param == "forkserver" else "0")
    return request.param


def _run(tmp_path, monkeypatch, timeout_override=None, ctx=None, **checks):
    modules = checkfakes.install(tmp_path, monkeypatch, **checks)
    specs = [read_spec(m) for m in modules]
    return run_checks(specs, ctx or Context(manifest_path=tmp_path / "none.json"), timeout_override).results


def _alive(pid: int, settle_s: float = 5.0) -> bool:
    """Is pid still running after up to settle_s (a SIGKILLed process takes a moment to go)?"""
    deadline = time.monotonic() + settle_s
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _running(pid)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is dead for our purpose
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_read_spec_reads_constants_without_importing(tmp_path, monkeypatch):
    (module,) = checkfakes.install(tmp_path, monkeypatch, brokenimport=12.5)
    spec = read_spec(module)
    assert (spec.name, spec.description, spec.default_timeout_s) == (
        "brokenimport",
        "fake check brokenimport",
        12.5,
    )
    assert "fakes.brokenimport" not in sys.modules  # importing it would have raised


def test_read_spec_of_a_missing_module_still_names_the_check():
    spec = read_spec("verify.checks.does_not_exist")
    assert spec.name == "does_not_exist"
    assert spec.problem and "not found" in spec.problem
    assert spec.default_timeout_s == FALLBACK_TIMEOUT_S


def test_pass_and_context_reach_the_check(tmp_path, monkeypatch):
    ctx = Context(quick=True, manifest_path=tmp_path / "none.json")
    (result,) = _run(tmp_path, monkeypatch, ctx=ctx, ok=42)
    assert result.status is Status.PASS
    assert result.figures == {"quick": True, "timeout_s": 42.0}  # the effective timeout is passed on
    assert result.duration_s > 0


def test_exception_is_a_fail_with_its_last_line_and_the_traceback(tmp_path, monkeypatch):
    (result,) = _run(tmp_path, monkeypatch, raises=30)
    assert result.status is Status.FAIL
    assert result.summary == "raised ValueError: boom in the check"
    assert "Traceback (most recent call last)" in result.details["traceback"]
    assert "fakes/raises.py" in result.details["traceback"]


def test_segfault_is_a_fail_and_the_next_check_still_runs(tmp_path, monkeypatch):
    crash, ok = _run(tmp_path, monkeypatch, segfault=30, ok=30)
    assert crash.status is Status.FAIL
    assert crash.summary == "crashed: killed by SIGSEGV without a result"
    assert "Fatal Python error: Segmentation fault" in crash.details["log_tail"]  # faulthandler's stack
    assert ok.status is Status.PASS


def test_os_exit_and_sys_exit_are_fails(tmp_path, monkeypatch):
    exits, sysexit = _run(tmp_path, monkeypatch, exits=30, sysexit=30)
    assert (exits.status, exits.summary) == (Status.FAIL, "crashed: exited with code 3 without a result")
    assert (sysexit.status, sysexit.summary) == (Status.FAIL, "raised SystemExit: 0")


def test_a_hang_is_killed_at_its_own_timeout(tmp_path, monkeypatch):
    start = time.monotonic()
    hang, ok = _run(tmp_path, monkeypatch, hangs=1.5, ok=30)
    elapsed = time.monotonic() - start
    assert (hang.status, hang.summary) == (Status.FAIL, "timed out after 1.5 s (killed)")
    assert 1.5 <= hang.duration_s < 1.5 + KILL_GRACE_S
    assert ok.status is Status.PASS
    assert elapsed < 15
    pid = int((tmp_path / "markers" / "hangs.pid").read_text())
    assert not _alive(pid)


def test_timeout_override_replaces_the_default(tmp_path, monkeypatch):
    (hang,) = _run(tmp_path, monkeypatch, timeout_override=1.0, hangs=600)
    assert hang.summary == "timed out after 1 s (killed)"


def test_a_check_ignoring_sigterm_is_sigkilled(tmp_path, monkeypatch):
    start = time.monotonic()
    (result,) = _run(tmp_path, monkeypatch, stubborn=1)
    assert result.status is Status.FAIL and "timed out after 1 s" in result.summary
    assert time.monotonic() - start < 1 + 2 * KILL_GRACE_S + 5


def test_the_whole_process_group_dies_at_the_timeout(tmp_path, monkeypatch):
    (result,) = _run(tmp_path, monkeypatch, grandchild=2)
    assert result.status is Status.FAIL
    pid = int((tmp_path / "markers" / "grandchild.pid").read_text())
    assert not _alive(pid), "the check's own child survived the timeout"


def test_children_left_behind_by_a_finished_check_are_reaped(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_RETURN_AFTER_SPAWN", "1")
    (result,) = _run(tmp_path, monkeypatch, grandchild=30)
    assert result.status is Status.PASS
    pid = int((tmp_path / "markers" / "grandchild.pid").read_text())
    assert not _alive(pid)


def test_garbage_output_does_not_confuse_the_runner(tmp_path, monkeypatch):
    (result,) = _run(tmp_path, monkeypatch, garbage=60)
    assert (result.status, result.summary) == (Status.PASS, "survived its own noise")
    assert result.figures == {"nan": "nan"}  # strict JSON: NaN becomes a string
    assert "log_tail" not in result.details  # logs are attached to non-passing results only


def test_wrong_return_type_import_error_and_missing_reason(tmp_path, monkeypatch):
    notresult, broken, noreason = _run(tmp_path, monkeypatch, notresult=30, brokenimport=30, noreason=30)
    assert (notresult.status, notresult.summary) == (
        Status.FAIL,
        "run() returned dict, not a verify.result.Result",
    )
    assert broken.status is Status.FAIL
    assert broken.summary == "cannot import fakes.brokenimport: ImportError: a dependency is missing"
    assert noreason.status is Status.SKIP
    assert noreason.summary == "SKIP without a reason (a bug in the check)"


def test_a_missing_check_module_is_that_checks_fail(tmp_path, monkeypatch):
    checkfakes.install(tmp_path, monkeypatch, ok=30)
    specs = [read_spec("fakes.not_written_yet"), read_spec("fakes.ok")]
    missing, ok = run_checks(specs, Context(manifest_path=tmp_path / "none.json")).results
    assert missing.name == "not_written_yet" and missing.status is Status.FAIL
    assert "No module named 'fakes.not_written_yet'" in missing.summary
    assert ok.status is Status.PASS


INTERRUPT_SCRIPT = """
import sys
from verify.cli import main
sys.exit(main(["run", "--json", sys.argv[1]], check_modules=["fakes.ok", "fakes.hangs", "fakes.warns"]))
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_writes_the_partial_report_and_exits_130(tmp_path, monkeypatch, sig):
    checkfakes.install(tmp_path, monkeypatch, ok=30, hangs=120, warns=30)
    report_path = tmp_path / "partial.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ["PYTHONPATH"]])}
    proc = subprocess.Popen(
        foreground_python("-c", INTERRUPT_SCRIPT, str(report_path)),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    pid_file = tmp_path / "markers" / "hangs.pid"
    deadline = time.monotonic() + 60
    # the pid written, not only the file made: on a loaded machine the signal once came in between, the
    # check died before writing, and the test read an empty file
    while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pid_file.exists() and pid_file.read_text().strip(), "the hanging check never wrote its pid"
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out
    report = json.loads(report_path.read_text())
    assert report["interrupted"] is True and report["exit_code"] == 130
    statuses = [(r["name"], r["status"]) for r in report["results"]]
    assert statuses == [("ok", "pass"), ("hangs", "skip"), ("warns", "skip")]
    assert report["results"][1]["summary"].startswith("interrupted after")
    assert report["results"][2]["summary"] == "interrupted: not run"
    assert not _alive(int(pid_file.read_text())), "the interrupted check is still running"
    assert f"JSON report: {report_path}" in out.strip().splitlines()[-1]
