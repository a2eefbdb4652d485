#!/usr/bin/env bash
# Set up, or finish, the Python environment `python -m images` runs in: VENV with the project and its
# [build] extra (docker-py, jinja2, requests, rich), and no torch, so `make build` works on a machine that
# has only Docker and python3. make runs this when VENV/.pytorch-cuda-tools is missing or older than
# pyproject.toml; `make dev` then adds torch and the test tools to the same VENV.
#
# The stamp is written last, so a setup cut short (Ctrl-C, no network) is finished by the next make: a VENV
# without a working Python >= 3.11 and pip in it is made again, one that has them gets the install re-run.
set -euo pipefail
venv="${1:?usage: scripts/setup_venv.sh VENV}"
stamp="$venv/.pytorch-cuda-tools"
cd "$(dirname "$0")/.."

is_new_enough() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }

find_python() {  # BOOTSTRAP_PYTHON, else the newest python3.x >= 3.11 on PATH, else python3
    local candidate
    for candidate in ${BOOTSTRAP_PYTHON:-} python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && is_new_enough "$candidate"; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

if [ -e "$venv" ] && ! { is_new_enough "$venv/bin/python" && "$venv/bin/python" -m pip --version >/dev/null 2>&1; }; then
    if [ ! -f "$venv/pyvenv.cfg" ] && [ -n "$(ls -A "$venv" 2>/dev/null)" ]; then
        echo "error: $venv exists but is not a Python venv (no pyvenv.cfg); fix: move it away, or make VENV=other-dir" >&2
        exit 2
    fi
    echo "make: $venv has no working Python >= 3.11 with pip (a setup cut short?); making it again"
    rm -rf "$venv"
fi

if [ ! -e "$venv" ]; then
    if ! python="$(find_python)"; then
        echo "error: the build tools need Python >= 3.11; python3 here is $(python3 --version 2>&1 || echo missing);" \
            "fix: sudo apt-get install python3.11 python3.11-venv (Ubuntu 22.04), or make BOOTSTRAP_PYTHON=/path/to/python3.11" >&2
        exit 2
    fi
    echo "make: creating $venv with $python ($("$python" --version 2>&1)) for python -m images: the project + [build] extra, no torch"
    if ! err="$("$python" -m venv "$venv" 2>&1)"; then
        rm -rf "$venv"
        echo "error: '$python -m venv $venv' failed: $(printf '%s' "$err" | grep -v '^\s*$' | tail -n 1);" \
            "fix: sudo apt-get install python3-venv (Debian/Ubuntu; for python3.X: python3.X-venv)" >&2
        exit 2
    fi
else
    echo "make: installing the project + [build] extra into $venv (no torch; its stamp is missing or older than pyproject.toml)"
fi

# -qq: pip's errors only (setuptools' editable-install banner is noise here).
pip=("$venv/bin/python" -m pip --disable-pip-version-check -qq)
if ! "${pip[@]}" install 'pip>=23.3' || ! "${pip[@]}" install -e '.[build]'; then  # lock needs pip >= 23.3
    echo "error: pip could not install the project + [build] extra into $venv (its lines above say why);" \
        "fix: make pip reach an index (pip config / PIP_INDEX_URL, PIP_CERT behind a proxy), then make tools" >&2
    exit 1
fi
touch "$stamp"
echo "make: $venv is ready ($("$venv/bin/python" -m pip --version | cut -d' ' -f1-2); make dev adds torch and the test tools)"
