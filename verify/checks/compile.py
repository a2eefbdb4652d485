"""compile: torch.compile builds and runs a small function on the CPU and on each GPU, and matches eager.

torch.compile compiles at run time, so an environment can install and import torch fine and still fail the
first time a user compiles. Inductor writes C++ for the CPU and builds it with g++ (or $CXX) against Python.h;
on a GPU it writes Triton kernels, and Triton builds their launcher with gcc (or $CC) against Python.h. The
check first looks for each piece the way Inductor and Triton do (cheap, and a FAIL names the missing piece
and its fix), then compiles for real, which is the truth: a piece can be present and still broken.

The function is one fused pointwise kernel (sin(x) + 1): the smallest graph that still goes through code
generation, the compiler and loading the built kernel. Inductor's and Triton's caches point at a fresh
temporary directory, because a kernel built earlier loads from the cache without running any compiler and
would hide a compiler that is gone (Triton loads a cached launcher without looking for gcc; the FX graph
cache is off too). torch 2.8 keeps its precompiled headers in /tmp/torchinductor_<user> whatever the cache
directory says; they only speed up the kernel's own g++ run, which still happens. Compilation stays in this
process (compile_threads=1): one kernel gains nothing from a worker pool, and an error then carries the
compiler's own message.

Cost on 2 shared cores: a cold CPU compile builds the kernel (scalar C++: the probes of the CPU's vector
ISAs, a g++ build each, are switched off, see compile_on): 4-10 s on the host with torch 2.13, where it was
21-25 s with the probes. The check runs beside the GPU measurements (EXCLUSIVE = False).
--quick on a host with GPUs compiles on the first GPU only and checks the CPU's pieces without the CPU
compile; on a host without GPUs it still compiles on the CPU.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import sysconfig
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from verify.context import Context
from verify.result import Result, Status

NAME = "compile"
DESCRIPTION = "torch.compile of a small function on the CPU and each GPU vs eager: compiler, Python.h, Triton"
DEFAULT_TIMEOUT_S = 300.0  # with the ISA probes a cold CPU compile once took 81 s on a 16-core GPU host
IMPORTS = ("torch",)  # imported once, before CUDA, by the fork server
EXCLUSIVE = False  # beside the GPU measurements: g++ and Triton work on the CPU, one tiny GPU kernel

TOLERANCE = 1e-5  # max |compiled - eager| for sin(x) + 1 in float32 on [-4, 4] (values within [0, 2])
REPRO = "python -c 'import torch; print(torch.compile(lambda x: x.sin() + 1)(torch.ones(8)))'"


@dataclass(frozen=True)
class Toolchain:
    """What torch.compile will call, found the way Inductor and Triton look for it."""

    cxx: str  # Inductor's C++ compiler: $CXX, else g++ (torch._inductor.config.cpp.cxx)
    cxx_from_env: bool
    cxx_path: str | None  # where it resolved on PATH; None: not found
    cc: str | None  # Triton's C compiler: $CC, else gcc, else clang; None: none of them on PATH
    cc_from_env: bool
    cc_path: str | None
    python_include: str  # sysconfig's include directory, where both look for Python.h
    has_python_h: bool
    triton: str | None = None  # version when `import triton` works
    triton_error: str | None = None  # why it does not
    triton_requirement: str | None = None  # what the installed torch requires, e.g. "triton==3.4.0"
    kernel_dir: str | None = None  # where the built kernels are written and loaded from (the cache folder)
    kernel_dir_noexec: bool = False  # that folder's file system is mounted noexec: no kernel can load


@dataclass
class Outcome:
    """One real compile on one device."""

    device: str  # "cpu", "cuda:0", ...
    seconds: float = 0.0
    error: str | None = None  # the exception text when the compile or the run raised
    max_abs_diff: float | None = None  # compiled vs eager
    kernels: int = 0  # kernels Inductor generated; 0 after a clean return means it never compiled


@dataclass
class DeviceVerdict:
    device: str
    status: Status
    text: str  # the reason on FAIL; the compile time on PASS
    figures: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------
# judging: facts in, verdict out
# ---------------------------------------------------------------------------------------------------------
def cxx_problem(tc: Toolchain) -> str | None:
    if tc.cxx_path is not None:
        return None
    if tc.cxx_from_env:
        return (
            f"no C++ compiler: Inductor runs CXX={tc.cxx} and it is not an executable on PATH; "
            "fix: unset CXX or point it at a C++ compiler (apt-get install g++)"
        )
    return (
        f"no C++ compiler: Inductor runs {tc.cxx} ($CXX unset) and it is not on PATH; "
        f"fix: apt-get install g++ (or set CXX to a C++ compiler)"
    )


def python_h_problem(tc: Toolchain) -> str | None:
    if tc.has_python_h:
        return None
    return (
        f"no Python headers: Python.h is not in {tc.python_include} (sysconfig include); "
        "fix: apt-get install python3-dev (libpython3-dev is enough) or use a Python build that ships them"
    )


def triton_problem(tc: Toolchain) -> str | None:
    if tc.triton is not None:
        return None
    wanted = tc.triton_requirement or "triton"
    return (
        f"Triton missing or broken ({tc.triton_error}): torch.compile needs it on a GPU; "
        f"fix: pip install '{wanted}' (the version this torch requires)"
    )


def cc_problem(tc: Toolchain) -> str | None:
    if tc.cc_path is not None:
        return None
    if tc.cc_from_env:
        return (
            f"no C compiler for Triton's launcher: CC={tc.cc} is not an executable on PATH; "
            "fix: unset CC or point it at a C compiler (apt-get install gcc)"
        )
    return (
        "no C compiler for Triton's launcher: $CC unset and neither gcc nor clang is on PATH; "
        "fix: apt-get install gcc (or set CC to a C compiler)"
    )


def noexec_problem(tc: Toolchain) -> str | None:
    """Docker's `--tmpfs /tmp` is mounted noexec unless told otherwise: Inductor and Triton build their
    kernels as shared objects under the temporary folder and dlopen them, which a noexec mount refuses."""
    if not tc.kernel_dir_noexec:
        return None
    return (
        f"the temporary folder where torch.compile builds and loads its kernels ({tc.kernel_dir}) is on a "
        "file system mounted noexec, so no built kernel can load; fix: mount it exec (docker run --tmpfs "
        "/tmp:exec; a Kubernetes emptyDir is exec) or point TMPDIR at an exec-mounted writable folder"
    )


def missing_pieces(tc: Toolchain, device_type: str) -> list[str]:
    """What this device's compile needs and lacks: the CPU needs a C++ compiler and Python.h, a GPU needs
    Triton, a C compiler and Python.h; both need a folder they may load the built kernels from."""
    if device_type == "cpu":
        found = [cxx_problem(tc), python_h_problem(tc)]
    else:
        found = [triton_problem(tc), cc_problem(tc), python_h_problem(tc)]
    return [problem for problem in [*found, noexec_problem(tc)] if problem]


def mounted_noexec(path: Path) -> bool:
    """Whether the file system holding `path` refuses to execute (and so to mmap-exec) its files."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_NOEXEC)
    except OSError:
        return False


_EXCEPTION_HEADER = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)(:|$)")


def error_gist(text: str, limit: int = 300) -> str:
    """The line of an exception text that says what went wrong.

    A compiler's output ends in "compilation terminated." or a command line; the line that matters is its
    first "error:" line (e.g. "fatal error: Python.h: No such file or directory"). Else the traceback's last
    exception header ("torch._inductor.exc.InductorError: InvalidCxxCompiler: ..."), else its last line.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "no error text"
    compiler_errors = [line for line in lines if re.search(r"\berror:", line)]
    headers = [line for line in lines if _EXCEPTION_HEADER.match(line)]
    chosen = compiler_errors[0] if compiler_errors else headers[-1] if headers else lines[-1]
    return chosen if len(chosen) <= limit else chosen[: limit - 3] + "..."


def judge_device(outcome: Outcome, missing: list[str], compile_disabled: bool) -> DeviceVerdict:
    """The real compile decides; the missing pieces only explain a failure."""
    device = outcome.device
    figures = {f"compile_s_{device.replace(':', '')}": round(outcome.seconds, 2)}
    if compile_disabled:
        return DeviceVerdict(
            device,
            Status.FAIL,
            f"{device}: torch.compile is switched off (TORCH_COMPILE_DISABLE=1), so nothing compiles; "
            "fix: unset TORCH_COMPILE_DISABLE",
            figures,
        )
    if outcome.error is not None:
        if missing:
            return DeviceVerdict(device, Status.FAIL, f"{device}: " + "; ".join(missing), figures)
        return DeviceVerdict(
            device,
            Status.FAIL,
            f"{device}: torch.compile failed: {error_gist(outcome.error)}; fix: the full error is in the "
            f"report's details; reproduce it with {REPRO}",
            figures,
        )
    if outcome.kernels == 0:
        return DeviceVerdict(
            device,
            Status.FAIL,
            f"{device}: torch.compile returned without generating a kernel (it ran the function eagerly); "
            f"fix: look for settings that turn Dynamo or Inductor off, and reproduce with {REPRO}",
            figures,
        )
    if outcome.max_abs_diff is None or not outcome.max_abs_diff <= TOLERANCE:
        return DeviceVerdict(
            device,
            Status.FAIL,
            f"{device}: compiled result differs from eager by {outcome.max_abs_diff} (tolerance "
            f"{TOLERANCE:g}): a wrong kernel; fix: report it upstream with the torch version and "
            f"`{'g++' if device == 'cpu' else 'gcc'} --version`",
            figures,
        )
    return DeviceVerdict(device, Status.PASS, f"{device} {outcome.seconds:.1f} s", figures)


def overall(verdicts: list[DeviceVerdict], notes: list[str]) -> tuple[Status, str]:
    """FAIL if any device failed (their reasons, joined); else PASS with each compile time and the notes
    (what was skipped and why)."""
    failed = [v.text for v in verdicts if v.status is Status.FAIL]
    if failed:
        return Status.FAIL, "; ".join(failed)
    passed = ", ".join(v.text for v in verdicts)
    summary = f"compiled and matched eager: {passed} (cold compile)" if passed else "nothing compiled"
    return (Status.PASS if passed else Status.FAIL), "; ".join([summary, *notes])


# ---------------------------------------------------------------------------------------------------------
# collecting
# ---------------------------------------------------------------------------------------------------------
def _inductor_cxx() -> str:
    """The C++ compiler Inductor will search for: its config lists None (conda download, opt-in) and
    $CXX or "g++"."""
    from torch._inductor import config

    search = config.cpp.cxx if isinstance(config.cpp.cxx, list | tuple) else (config.cpp.cxx,)
    names = [name for name in search if name]
    return str(names[-1]) if names else os.environ.get("CXX", "g++")


def _triton_cc() -> tuple[str | None, bool]:
    """Triton's own search (triton/runtime/build.py): $CC, else gcc, else clang."""
    if os.environ.get("CC") is not None:
        return os.environ["CC"], True
    for name in ("gcc", "clang"):
        if shutil.which(name):
            return name, False
    return None, False


def _triton_requirement() -> str | None:
    """torch's own pin of triton, e.g. 'triton==3.4.0', from its metadata."""
    try:
        requires = importlib.metadata.requires("torch") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for req in requires:
        match = re.match(r"\s*(triton\s*[=<>~!][^;]*)", req)
        if match:
            return match.group(1).replace(" ", "")
    return None


def collect_toolchain(gpu: bool, kernel_dir: Path | None = None) -> Toolchain:
    cxx = _inductor_cxx()
    include = sysconfig.get_paths()["include"]
    cc, cc_from_env = _triton_cc()
    triton_version = triton_error = None
    if gpu:
        try:
            import triton

            triton_version = str(getattr(triton, "__version__", "unknown"))
        except Exception as exc:  # an ImportError or a broken install's own error
            triton_error = f"import triton: {type(exc).__name__}: {exc}"
    return Toolchain(
        cxx=cxx,
        cxx_from_env=os.environ.get("CXX") is not None,
        cxx_path=shutil.which(cxx),
        cc=cc,
        cc_from_env=cc_from_env,
        cc_path=shutil.which(cc) if cc else None,
        python_include=include,
        has_python_h=(Path(include) / "Python.h").is_file(),
        triton=triton_version,
        triton_error=triton_error,
        triton_requirement=_triton_requirement() if gpu else None,
        kernel_dir=str(kernel_dir) if kernel_dir else None,
        kernel_dir_noexec=mounted_noexec(kernel_dir) if kernel_dir else False,
    )


def _function(x: Any) -> Any:
    return x.sin() + 1


def _has_option(config: Any, dotted: str) -> bool:
    """Whether this torch's Inductor config has the option ("cpp.vec_isa_ok": a nested one)."""
    node = config
    for part in dotted.split("."):
        if not hasattr(node, part):
            return False
        node = getattr(node, part)
    return True


def compile_on(device: str) -> Outcome:
    """torch.compile _function on `device` in a fresh Dynamo state, time it, compare it with eager."""
    import torch
    from torch._inductor import config, metrics

    torch._dynamo.reset()
    metrics.reset()
    outcome = Outcome(device)
    x = torch.linspace(-4, 4, 1024, device=device)
    expected = _function(x)
    # No FX graph cache (local or remote): every device goes through code generation and the compiler.
    # No probing of the CPU's vector ISAs: each probe is a g++ build of its own (15-17 s of a 21-25 s cold
    # CPU compile on 2 cores) that proves nothing the kernel's build does not, and a failed probe only
    # makes Inductor fall back to scalar code. The kernel is then scalar C++, still built by g++ against
    # Python.h and loaded, which is what breaks on a host without them.
    options = {
        "fx_graph_cache": False,
        "fx_graph_remote_cache": False,
        "compile_threads": 1,
        "cpp.vec_isa_ok": False,
    }
    known = {k: v for k, v in options.items() if _has_option(config, k)}
    start = time.monotonic()
    try:
        with config.patch(known):
            got = torch.compile(_function, fullgraph=True)(x)
            if device.startswith("cuda"):
                torch.cuda.synchronize(device)
    except Exception as exc:  # whatever the compile raises is the finding
        outcome.error = "".join(traceback.format_exception(exc))
        return outcome
    finally:
        outcome.seconds = time.monotonic() - start
        outcome.kernels = int(metrics.generated_kernel_count)
    outcome.max_abs_diff = float((got - expected).abs().max().item())
    return outcome


def run(ctx: Context) -> Result:
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="verify-compile-") as cache:
        # Before torch is imported: Inductor and Triton read these when they first build something.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(cache) / "inductor")
        os.environ["TRITON_CACHE_DIR"] = str(Path(cache) / "triton")
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        tc = collect_toolchain(gpu=gpus > 0, kernel_dir=Path(cache))
        compile_disabled = bool(getattr(torch._dynamo.config, "disable", False))
        verdicts: list[DeviceVerdict] = []
        notes: list[str] = []
        outcomes: list[Outcome] = []
        if ctx.quick and gpus:
            missing = missing_pieces(tc, "cpu")
            if missing:
                verdicts.append(DeviceVerdict("cpu", Status.FAIL, "cpu: " + "; ".join(missing)))
            else:
                notes.append("cpu: compiler and Python.h found, compile skipped (--quick)")
        else:
            outcomes.append(compile_on("cpu"))
            verdicts.append(judge_device(outcomes[-1], missing_pieces(tc, "cpu"), compile_disabled))
        if gpus == 0:
            notes.append("GPU compile skipped: torch sees no CUDA GPU")
        for index in range(1 if ctx.quick else gpus):
            if index >= gpus:
                break
            outcomes.append(compile_on(f"cuda:{index}"))
            verdicts.append(judge_device(outcomes[-1], missing_pieces(tc, "cuda"), compile_disabled))
        if ctx.quick and gpus > 1:
            notes.append(f"compiled on cuda:0 only of {gpus} GPUs (--quick)")
    status, summary = overall(verdicts, notes)
    figures: dict[str, Any] = {}
    for verdict in verdicts:
        figures |= verdict.figures
    details = {
        "toolchain": asdict(tc),
        "compile_disabled": compile_disabled,
        "outcomes": [asdict(o) for o in outcomes],
        "torch": torch.__version__,
    }
    return Result(NAME, status, summary, figures, details, time.monotonic() - start)
