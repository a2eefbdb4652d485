"""The compile check's rules on data: which piece is missing, which error line is shown, the verdict.

The error texts are real ones, cut from reports of `verify run --only compile` (torch 2.13 on this host,
torch 2.8 in the pytorch-cuda:v2.8 image) with the fault made for real.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from verify.checks import compile as check
from verify.result import Status

GOOD = check.Toolchain(
    cxx="g++",
    cxx_from_env=False,
    cxx_path="/usr/bin/g++",
    cc="gcc",
    cc_from_env=False,
    cc_path="/usr/bin/gcc",
    python_include="/usr/include/python3.13",
    has_python_h=True,
    triton="3.4.0",
    triton_requirement="triton==3.4.0",
)

# torch 2.13, CXX=/nonexistent/g++ (the end of the traceback)
NO_CXX_ERROR = """Traceback (most recent call last):
  File ".../torch/_inductor/cpp_builder.py", line 108, in cpp_compiler_search
    raise exc.InvalidCxxCompiler
torch._inductor.exc.InductorError: InvalidCxxCompiler: No working C++ compiler found in \
torch._inductor.config.cpp.cxx: (None, '/nonexistent/g++')

Set TORCHDYNAMO_VERBOSE=1 for the internal stack trace (please do this especially if you're reporting a bug \
to PyTorch). For even more developer context, set TORCH_LOGS="+dynamo"
"""

# torch 2.8 in the v2.8 image with libpython3.13-dev purged: the compiler's output inside the exception
# (the g++ command line and the paths shortened)
NO_PYTHON_H_ERROR = """Traceback (most recent call last):
  File "/opt/venv/lib/python3.13/site-packages/torch/_inductor/cpp_builder.py", line 396, in _run_compile_cmd
    raise exc.CppCompileError(cmd, output) from e
torch._dynamo.exc.BackendCompilerFailed: backend='inductor' raised:
CppCompileError: C++ compile error

Command:
g++ /tmp/verify-compile-wf5d/inductor/sg/csghzw.main.cpp -shared -fPIC -O3 -I/usr/include/python3.13 \
-o /tmp/verify-compile-wf5d/inductor/sg/csghzw.main.so

Output:
/tmp/verify-compile-wf5d/inductor/sg/csghzw.main.cpp:26:10: fatal error: Python.h: No such file or directory
   26 | #include <Python.h>
      |          ^~~~~~~~~~
compilation terminated.


Set TORCHDYNAMO_VERBOSE=1 for the internal stack trace (please do this especially if you're reporting a bug \
to PyTorch). For even more developer context, set TORCH_LOGS="+dynamo"
"""


def test_a_complete_toolchain_has_no_missing_piece():
    assert check.missing_pieces(GOOD, "cpu") == []
    assert check.missing_pieces(GOOD, "cuda") == []


def test_no_cxx_names_the_compiler_inductor_runs_and_the_package():
    (problem,) = check.missing_pieces(replace(GOOD, cxx_path=None), "cpu")
    assert problem.startswith("no C++ compiler: Inductor runs g++ ($CXX unset) and it is not on PATH;")
    assert "fix: apt-get install g++" in problem


def test_a_cxx_setting_that_names_nothing_is_blamed_on_the_setting():
    tc = replace(GOOD, cxx="/nonexistent/g++", cxx_from_env=True, cxx_path=None)
    (problem,) = check.missing_pieces(tc, "cpu")
    assert "Inductor runs CXX=/nonexistent/g++ and it is not an executable on PATH" in problem
    assert "fix: unset CXX or point it at a C++ compiler" in problem


def test_no_python_h_names_the_directory_and_python3_dev_on_cpu_and_gpu():
    tc = replace(GOOD, has_python_h=False)
    for device_type in ("cpu", "cuda"):
        (problem,) = check.missing_pieces(tc, device_type)
        assert "Python.h is not in /usr/include/python3.13" in problem
        assert "fix: apt-get install python3-dev" in problem


def test_the_c_compiler_matters_to_the_gpu_only():
    tc = replace(GOOD, cc=None, cc_path=None)
    assert check.missing_pieces(tc, "cpu") == []
    (problem,) = check.missing_pieces(tc, "cuda")
    assert "no C compiler for Triton's launcher: $CC unset and neither gcc nor clang is on PATH" in problem
    assert "fix: apt-get install gcc" in problem
    (problem,) = check.missing_pieces(replace(tc, cc="/no/cc", cc_from_env=True), "cuda")
    assert "CC=/no/cc is not an executable on PATH; fix: unset CC" in problem


def test_missing_triton_names_torchs_own_pin():
    tc = replace(
        GOOD, triton=None, triton_error="import triton: ModuleNotFoundError: No module named 'triton'"
    )
    assert check.missing_pieces(tc, "cpu") == []
    (problem,) = check.missing_pieces(tc, "cuda")
    assert "Triton missing or broken (import triton: ModuleNotFoundError" in problem
    assert "fix: pip install 'triton==3.4.0'" in problem


def test_a_noexec_kernel_folder_is_named_on_both_devices():
    tc = replace(GOOD, kernel_dir="/tmp/verify-compile-x", kernel_dir_noexec=True)
    for device in ("cpu", "cuda"):
        (problem,) = check.missing_pieces(tc, device)
        assert "(/tmp/verify-compile-x) is on a file system mounted noexec" in problem
        assert "fix: mount it exec (docker run --tmpfs /tmp:exec;" in problem


def test_several_missing_pieces_are_all_named():
    tc = replace(GOOD, cxx_path=None, has_python_h=False)
    problems = check.missing_pieces(tc, "cpu")
    assert [p.split(":")[0] for p in problems] == ["no C++ compiler", "no Python headers"]


@pytest.mark.parametrize(
    ("text", "gist"),
    [
        (
            NO_CXX_ERROR,
            "torch._inductor.exc.InductorError: InvalidCxxCompiler: No working C++ compiler found in "
            "torch._inductor.config.cpp.cxx: (None, '/nonexistent/g++')",
        ),
        (
            NO_PYTHON_H_ERROR,
            "/tmp/verify-compile-wf5d/inductor/sg/csghzw.main.cpp:26:10: "
            "fatal error: Python.h: No such file or directory",
        ),
        ("RuntimeError: boom\n  - detail line\n", "RuntimeError: boom"),
        ("something odd\nlast words\n", "last words"),
        ("", "no error text"),
    ],
)
def test_error_gist_picks_the_line_that_says_what_went_wrong(text, gist):
    assert check.error_gist(text) == gist


def test_error_gist_is_bounded():
    assert len(check.error_gist("ValueError: " + "x" * 1000, limit=100)) == 100


def _outcome(**kwargs) -> check.Outcome:
    return check.Outcome(**({"device": "cpu", "seconds": 12.5, "max_abs_diff": 0.0, "kernels": 1} | kwargs))


def test_a_clean_compile_that_matches_eager_passes_with_its_time():
    verdict = check.judge_device(_outcome(), [], compile_disabled=False)
    assert (verdict.status, verdict.text) == (Status.PASS, "cpu 12.5 s")
    assert verdict.figures == {"compile_s_cpu": 12.5}
    assert check.judge_device(_outcome(device="cuda:1"), [], False).figures == {"compile_s_cuda1": 12.5}


def test_a_failed_compile_with_a_missing_piece_names_the_piece():
    missing = check.missing_pieces(replace(GOOD, cxx_path=None), "cpu")
    verdict = check.judge_device(_outcome(error=NO_CXX_ERROR, max_abs_diff=None), missing, False)
    assert verdict.status is Status.FAIL
    assert verdict.text == "cpu: " + missing[0]


def test_a_failed_compile_with_every_piece_present_shows_the_error_and_a_repro():
    verdict = check.judge_device(_outcome(error=NO_PYTHON_H_ERROR, max_abs_diff=None), [], False)
    assert verdict.status is Status.FAIL
    assert verdict.text.startswith("cpu: torch.compile failed: /tmp/verify-compile-wf5d/")
    assert "fatal error: Python.h: No such file or directory" in verdict.text
    assert "reproduce it with python -c 'import torch; print(torch.compile(" in verdict.text


def test_compile_switched_off_fails_naming_the_setting():
    verdict = check.judge_device(_outcome(kernels=0), [], compile_disabled=True)
    assert verdict.status is Status.FAIL
    assert "TORCH_COMPILE_DISABLE=1" in verdict.text and "fix: unset TORCH_COMPILE_DISABLE" in verdict.text


def test_a_clean_return_without_a_kernel_is_not_a_pass():
    verdict = check.judge_device(_outcome(kernels=0), [], compile_disabled=False)
    assert verdict.status is Status.FAIL
    assert "without generating a kernel" in verdict.text


@pytest.mark.parametrize("diff", [2e-5, float("nan"), None])
def test_a_result_off_eager_fails(diff):
    verdict = check.judge_device(_outcome(device="cuda:0", max_abs_diff=diff), [], False)
    assert verdict.status is Status.FAIL
    assert "cuda:0: compiled result differs from eager by" in verdict.text
    assert "`gcc --version`" in verdict.text


def test_the_tolerance_itself_passes():
    assert check.judge_device(_outcome(max_abs_diff=check.TOLERANCE), [], False).status is Status.PASS


def test_overall_passes_with_each_time_and_the_skip_reason():
    verdicts = [check.DeviceVerdict("cpu", Status.PASS, "cpu 12.5 s")]
    status, summary = check.overall(verdicts, ["GPU compile skipped: torch sees no CUDA GPU"])
    assert status is Status.PASS
    assert summary == (
        "compiled and matched eager: cpu 12.5 s (cold compile); GPU compile skipped: torch sees no CUDA GPU"
    )


def test_overall_fails_when_any_device_fails_and_names_only_the_failures():
    verdicts = [
        check.DeviceVerdict("cpu", Status.FAIL, "cpu: no C++ compiler: ..."),
        check.DeviceVerdict("cuda:0", Status.PASS, "cuda:0 1.0 s"),
        check.DeviceVerdict("cuda:1", Status.FAIL, "cuda:1: torch.compile failed: ..."),
    ]
    status, summary = check.overall(verdicts, [])
    assert status is Status.FAIL
    assert summary == "cpu: no C++ compiler: ...; cuda:1: torch.compile failed: ..."


def test_overall_with_nothing_compiled_is_not_a_pass():
    status, _ = check.overall([], ["cpu: compiler and Python.h found, compile skipped (--quick)"])
    assert status is Status.FAIL
