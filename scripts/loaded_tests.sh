#!/usr/bin/env bash
# Run the race-prone suites (tests/engine, tests/integration) on a LOADED machine, as issue 22 asks: a busy
# loop on every core and a cold engine build of another line beside them for the whole run. What a slow CI
# day looks like; a test that only passes on an idle machine waits for a time instead of a condition.
#   bash scripts/loaded_tests.sh [LOG]          (default LOG: build/loaded-tests-<time>.log)
# Writes the pytest output (-v: each test's name and outcome as it ends, so a run stopped early still says
# which failed; a background job ignores SIGINT, so pytest's own summary never comes then) and, per
# beside-build, one line with its result, then the wall time of the run.
# Needs what `.ci/run` sets up (dockerd, the base image, the dev venv); CA_BUNDLE as there.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG="${1:-build/loaded-tests-$(date +%Y%m%d-%H%M%S).log}"
mkdir -p "$(dirname "$LOG")"
export CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}" CI="${CI:-true}"
BESIDE_TAG="${BESIDE_TAG:-v2.9}"

pids=()
stop_load() { kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null; }
trap stop_load EXIT

for _ in $(seq "$(nproc)"); do
    python3 -c 'while True: pass' &
    pids+=($!)
done
(
    while true; do
        t0=$(date +%s)
        if .venv/bin/python -m images build --tag "$BESIDE_TAG" --no-cache --extra-ca-cert "$CA_BUNDLE" \
            >/dev/null 2>&1; then verdict=ok; else verdict=FAILED; fi
        echo "# beside: cold build of $BESIDE_TAG $verdict in $(($(date +%s) - t0)) s ($(date +%H:%M:%S))" >>"$LOG"
    done
) &
pids+=($!)

echo "# loaded run: $(nproc) busy loops + cold builds of $BESIDE_TAG beside; started $(date +%H:%M:%S)" >>"$LOG"
start=$(date +%s)
.venv/bin/python -m pytest -m 'not gpu' -p no:cacheprovider tests/engine tests/integration -v -rfE --durations=40 >>"$LOG" 2>&1
rc=$?
echo "# pytest rc=$rc, wall $(($(date +%s) - start)) s, ended $(date +%H:%M:%S)" >>"$LOG"
exit $rc
