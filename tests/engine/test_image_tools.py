"""The workspace tools and notebook basics of the v2.8 image work, each run for real inside it.

What a user reaches for over SSH or in JupyterLab's terminal (images/dockerfile.py WORKSPACE_PACKAGES) and in
a notebook (matplotlib, ipywidgets from images/matrix.toml).
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from images.dockerfile import WORKSPACE_PACKAGES
from images.matrix import ImageLine

# apt package -> the command it puts on PATH, with the flag that prints its version and exits 0.
VERSION_COMMANDS = {
    "git": "git --version",
    "curl": "curl --version",
    "wget": "wget --version",
    "vim": "vim --version",
    "nano": "nano --version",
    "less": "less --version",
    "tmux": "tmux -V",
    "htop": "htop --version",
    "unzip": "unzip -v",
    "rsync": "rsync --version",
}


def run(image: str, *command: str, volume: str | None = None) -> subprocess.CompletedProcess[str]:
    mount = ["-v", volume] if volume else []
    argv = ["docker", "run", "--rm", *mount, image, *command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def test_every_workspace_tool_runs() -> None:
    """The list here and the image's list are the same, so a tool added there is tested here."""
    assert set(VERSION_COMMANDS) == set(WORKSPACE_PACKAGES)


def test_each_workspace_tool_prints_its_version(built_image: str) -> None:
    script = "; ".join(
        f"if {command} >/dev/null 2>&1; then echo 'ok {name}'; else echo 'FAILED {name}: {command}'; fi"
        for name, command in VERSION_COMMANDS.items()
    )
    done = run(built_image, "bash", "-c", script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:-1] == [f"ok {name}" for name in VERSION_COMMANDS], done.stdout


def test_matplotlib_renders_a_png_with_agg_by_default(
    built_image: str, matrix_line: ImageLine, tmp_path: Path
) -> None:
    """No display in a container: matplotlib must pick Agg itself and write a real PNG."""
    tmp_path.chmod(0o777)  # the image's user (UID 1000) writes here
    code = (
        "import matplotlib, matplotlib.pyplot as plt; "
        "fig, ax = plt.subplots(); ax.plot([0, 1, 2], [2, 0, 1]); fig.savefig('/out/plot.png'); "
        "print(matplotlib.__version__, matplotlib.get_backend())"
    )
    done = run(built_image, "python", "-c", code, volume=f"{tmp_path}:/out")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [matrix_line.packages["matplotlib"], "agg"]
    png = (tmp_path / "plot.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000, len(png)


def test_ipywidgets_imports_and_tqdm_notebook_does_not_warn(built_image: str, matrix_line: ImageLine) -> None:
    """Without ipywidgets, tqdm.notebook warns 'IProgress not found' and its bars fall back to text."""
    code = "\n".join(
        [
            "import warnings",
            "from tqdm import TqdmWarning",
            "warnings.simplefilter('error', TqdmWarning)",
            "import ipywidgets",
            "from tqdm.notebook import tqdm",
            "print(ipywidgets.__version__, sum(tqdm(range(4))))",
        ]
    )
    done = run(built_image, "python", "-c", code)
    assert done.returncode == 0, f"{shlex.quote(code)} failed:\n{done.stderr}"
    assert done.stdout.split()[-2:] == [matrix_line.packages["ipywidgets"], "6"]
