"""Every command in the README's ```bash blocks runs as written.

Each command is run for real where that is quick and harmless here; where the real run needs an engine, a GPU,
the network or minutes, make runs dry (`make -n`, and each `python -m images` line it prints is parsed by the
real parser) and `python -m images ...` / `verify ...` are parsed by the CLI's own parser, exactly as written,
plus their `--help`; the few that only an engine can run are named with the engine test that runs them.
A command the rules below do not classify fails the test, so a new README example has to be decided on,
not skipped by accident.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
BLOCK_RE = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
COMMENT_RE = re.compile(r"\s+#\s.*$")
ASSIGNMENT_RE = re.compile(r"^[A-Z_][A-Z0-9_]*=")

# Run for real: offline, read-only, a few seconds.
RUN = (
    "python -m images ci-matrix",
    "python -m images readme --check",
    "python -m images dockerfiles --check",
    "python -m images lock --check",
    "verify list",
)
# The CLI's real parser on the README's words: exit 2 (argparse) when the README's arguments are wrong.
PARSE = {
    "images": "import sys; from images.cli import build_parser; build_parser()[0].parse_args(sys.argv[1:])",
    "verify": "import sys; from verify.cli import build_parser as b; a = sys.argv[1:]; b(a).parse_args(a)",
}
# Launchers of many processes or nodes: what they launch is parsed by its own parser.
LAUNCHERS = {"srun", "torchrun", "mpirun"}
VERIFY_COMMANDS = {"run", "list", "fleet", "bench", "sweep"}
# Need a cluster: the files they are given are checked (bash -n, YAML), the rest needs the cluster itself.
CLUSTER = {"sbatch": "a Slurm cluster", "kubectl": "a Kubernetes cluster"}
YAML_PARSES = "import sys, yaml; [list(yaml.safe_load_all(open(f))) for f in sys.argv[1:]]"
# Need a Docker engine with the image, a running service or a remote host: run by the engine tests.
ENGINE_ONLY = {
    "docker compose logs jupyter | grep token=": "tests/engine (compose up, the token in the logs)",
    "ssh -p 2222 pytorch@127.0.0.1": "tests/engine (the SSH workspace)",
    "docker compose --profile tensorboard up -d tensorboard": "tests/engine (compose profiles)",
    "copy-examples": "tests/engine/test_image_examples.py (copy-examples in the image)",
    "cd /workspace/examples": "tests/engine/test_compose.py (the examples in the jupyter service)",
}
# The examples (examples/*.py, run in an image): their own parsers read the README's arguments.
EXAMPLE_SCRIPTS = {"finetune_bert.py", "serve.py", "load_test.py"}
PARSE_EXAMPLE = "import sys; sys.path.insert(0, 'examples'); __import__(sys.argv[1]).parse_args(sys.argv[2:])"
ONE_LINERS_TEST = REPO / "tests/engine/test_image_oneliners.py"


def engine_one_liners() -> set[str]:
    """The `docker run` lines tests/engine/test_image_oneliners.py runs (its README_ONE_LINERS)."""
    tree = ast.parse(ONE_LINERS_TEST.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        names = [getattr(target, "id", "") for target in getattr(node, "targets", ())]
        if isinstance(node, ast.Assign) and "README_ONE_LINERS" in names:
            return set(ast.literal_eval(node.value))
    return set()


def readme_commands(text: str) -> list[str]:
    """The commands of every ```bash block: one per line, comments dropped, `a && b` split."""
    commands = []
    for block in BLOCK_RE.findall(text):
        block = re.sub(r"\\\n\s*", "", block)  # `cmd \` + continuation: one command
        for line in block.splitlines():
            line = COMMENT_RE.sub("", line).strip()
            if line and not line.startswith("#"):
                commands += [part.strip() for part in line.split(" && ")]
    return commands


def how_to_run(command: str) -> tuple[str, str]:
    """(mode, shell line): run, dry (make -n), parse (+ --help), syntax, manifests, engine, cluster."""
    if command in ENGINE_ONLY or command in engine_one_liners():
        return "engine", ""
    words = shlex.split(command)
    while words and ASSIGNMENT_RE.match(words[0]):  # `VAR=value make up`: the variable stays, make is dry
        words = words[1:]
    if words and words[-1] == "&":  # `python serve.py ... &`: in the background, as a user starts a server
        words = words[:-1]
    head = words[0] if words else ""
    py = shlex.quote(sys.executable)
    script = next((word for word in words if word in EXAMPLE_SCRIPTS), None)
    if script is not None and head in {
        "python",
        *LAUNCHERS,
    }:  # `python serve.py ...`, `torchrun ... x.py ...`
        args = words[words.index(script) + 1 :]
        return (
            "parse",
            f"{py} -c {shlex.quote(PARSE_EXAMPLE)} {script.removesuffix('.py')} {shlex.join(args)}",
        )
    if head in LAUNCHERS:  # `srun ... verify run ...`, `torchrun ... -m verify run ...`
        start = next(i for i, w in enumerate(words[:-1]) if w == "verify" and words[i + 1] in VERIFY_COMMANDS)
        return "parse", f"{py} -c {shlex.quote(PARSE['verify'])} {shlex.join(words[start + 1 :])}"
    if head == "export":
        return "run", command
    if head in CLUSTER:
        files = [w for w in words[1:] if (REPO / w).is_file()]
        if head == "sbatch":
            assert files, f"{command!r}: names no script of this repository"
            return "syntax", f"bash -n {shlex.join(files)}"
        if files:
            return "manifests", f"{py} -c {shlex.quote(YAML_PARSES)} {shlex.join(files)}"
        return "cluster", ""
    if head == "make":
        return "dry", command.replace("make ", "make -n ", 1)
    if head == "cp":
        return "run", command
    if head == "bash":
        return "syntax", f"bash -n {shlex.join(words[1:])}"
    if command.startswith(RUN):
        return "run", command.replace("python ", f"{py} ", 1).replace("verify ", f"{py} -m verify ", 1)
    if head == "python" and words[1:3] == ["-m", "images"]:
        return "parse", f"{py} -c {shlex.quote(PARSE['images'])} {shlex.join(words[3:])}"
    if head == "verify":
        return "parse", f"{py} -c {shlex.quote(PARSE['verify'])} {shlex.join(words[1:])}"
    raise AssertionError(f"README command not classified: {command!r}; add a rule to {Path(__file__).name}")


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


def test_the_readme_has_the_quick_start_commands() -> None:
    assert "make build TAG=v2.8" in COMMANDS
    assert COMMANDS.count("make dev") >= 1
    assert "make test" in COMMANDS
    assert len(COMMANDS) > 20


@pytest.mark.parametrize("command", COMMANDS)
def test_each_readme_command_runs_as_written(command: str, tmp_path: Path) -> None:
    mode, line = how_to_run(command)
    if mode == "engine":  # named above, or run by the one-liner engine tests
        assert command in engine_one_liners() or ENGINE_ONLY[command].startswith("tests/engine")
        return
    if mode == "cluster":  # e.g. `kubectl logs`: nothing here to check without the cluster
        return
    cwd = REPO
    if mode == "run" and command.startswith("cp "):  # the copy lands in a scratch tree, not in the checkout
        shutil.copy2(REPO / ".env.example", tmp_path / ".env.example")
        cwd = tmp_path
    env = {**os.environ, "HOME": str(tmp_path)}  # `$(cat ~/.ssh/...)` may be missing: make -n still runs
    result = subprocess.run(
        ["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"{command!r} ({mode}: {line}) exited {result.returncode}: {result.stderr}"
    assert "Traceback" not in result.stderr
    if mode == "parse":  # and its --help, as a reader would try it next
        helped = subprocess.run(["bash", "-c", f"{line} --help"], cwd=REPO, capture_output=True, text=True)
        assert helped.returncode == 0, helped.stderr
        assert helped.stdout.startswith("usage:"), helped.stdout[:200]
    if mode == "dry":  # what make would run, through the real parser
        for printed in result.stdout.splitlines():
            words = shlex.split(printed)
            if words[1:3] == ["-m", "images"]:
                parse = [sys.executable, "-c", PARSE["images"], *words[3:]]
                parsed = subprocess.run(parse, cwd=REPO, capture_output=True, text=True)
                assert parsed.returncode == 0, f"make printed {printed!r}: {parsed.stderr}"


def test_make_build_on_a_fresh_clone_sets_up_the_venv_first(tmp_path: Path) -> None:
    """The quick start's first command, dry: without .venv, make sets it up, then builds with its Python."""
    for name in ("Makefile", "pyproject.toml", "scripts/setup_venv.sh"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, tmp_path / name)
    # As a user types it: not a sub-make of `make test` (which would print make[1]: lines), and none of the
    # Makefile's variables from this environment (CI exports CA_BUNDLE, for one).
    makefile_vars = ("CA_BUNDLE", "BUILD_ARGS", "TAG", "FLAVOR", "VENV", "PYTHON", "GPUS", "REGISTRY")
    drop = ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", *makefile_vars)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    dry = subprocess.run(
        ["make", "-n", "build", "TAG=v2.8"], cwd=tmp_path, env=env, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    setup = lines.index("scripts/setup_venv.sh .venv")
    build = next(i for i, text in enumerate(lines) if text.startswith(".venv/bin/python -m images build"))
    assert setup < build
    assert "--tag v2.8 --flavor runtime" in lines[build]
    # With the venv set up (its stamp newer than pyproject.toml), the build goes straight on.
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ".pytorch-cuda-tools").touch()
    again = subprocess.run(
        ["make", "-n", "build"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert "setup_venv" not in again.stdout
    # PYTHON=... (CI's workflows) uses that Python as it is: no venv is made.
    given = subprocess.run(
        ["make", "-n", "build", "PYTHON=python"], cwd=tmp_path, env=env, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert given.stdout.splitlines() == ["python -m images build --tag v2.8 --flavor runtime"]


def test_make_test_without_the_dev_tools_names_make_dev(tmp_path: Path) -> None:
    python = tmp_path / "bare" / "bin" / "python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(python.parent.parent)], check=True)
    result = subprocess.run(
        ["make", "-s", "test-unit", f"PYTHON={python}"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert f"error: {python} has no pytest; fix: make dev" in result.stdout
