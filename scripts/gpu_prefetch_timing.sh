#!/usr/bin/env bash
# Time `verify run --quick` with the page cache dropped, prefetch off and on, twice each, in ONE device call
# (issue 18: --quick <= 15 s cold). From the repository root: OUT=/tmp/out bash scripts/gpu_prefetch_timing.sh
# Writes under $OUT: session.log (raw), quick-pf{0,1}-r{1,2}.json and full-pf1.json (scripts/bench_verify.py:
# each run's wall, per-check times, figures and whole output). Each series: the first run cold, then warm.
set -u
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/gpu-prefetch}"
mkdir -p "$OUT"
exec > >(tee "$OUT/session.log") 2>&1
step() { echo; echo "=== $(date -u +%H:%M:%S) $* ==="; }
step "host"
date -u; nvidia-smi -L; nproc; free -g | head -2
for dev in /sys/block/*/queue/read_ahead_kb; do echo "$dev $(cat "$dev")"; done
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
python3 -c 'from verify import prefetch; libs = prefetch.libraries(["torch", "transformers"]); print(len(libs), "libraries,", round(sum(p.stat().st_size for p in libs) / 1e9, 2), "GB")'
for round in 1 2; do
  for pf in 0 1; do
    step "round $round: --quick, VERIFY_PREFETCH=$pf"
    VERIFY_PREFETCH=$pf timeout 150 python3 scripts/bench_verify.py --runs 2 --out "$OUT/quick-pf$pf-r$round.json" -- --quick
  done
done
step "full run, prefetch on"
VERIFY_PREFETCH=1 timeout 170 python3 scripts/bench_verify.py --runs 2 --out "$OUT/full-pf1.json"
date -u
