#!/usr/bin/env bash
# Every fault of README's fault table that can be made on a real GPU host, made for real, in ONE command:
#   OUT=/tmp/out bash scripts/gpu_faults.sh            (from the repository root; needs one NVIDIA GPU)
# Each row runs the real `verify` with the fault in place and records the exit code and the verdict of the
# check that must catch it. Writes $OUT/faults.md (the table), $OUT/faults.log (everything) and
# $OUT/faults.jsonl (each row's report). Exits 1 when any row's exit code is not the expected one.
# Faults that cannot be made on a healthy card (ECC errors, row-remap failures, an old driver, MIG) are
# tested in CI on recorded NVML data instead (tests/nvml_replay).
set -u
export NCCL_NVLS_ENABLE="${NCCL_NVLS_ENABLE:-0}" TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
OUT="${OUT:-/tmp/gpu-faults}"
PY="${PY:-python3}"
mkdir -p "$OUT"
TMP=$(mktemp -d)
exec > >(tee "$OUT/faults.log") 2>&1
: >"$OUT/faults.jsonl"
echo "| fault (made for real) | expected exit | exit | verdict of the check that must catch it |" >"$OUT/faults.md"
echo "|---|---|---|---|" >>"$OUT/faults.md"
failures=0
n=0

# row NAME EXPECTED_RC CHECK [PREFIX...] -- VERIFY_RUN_ARGS...: run `PREFIX python -m verify run --json REPORT
# ARGS` (PREFIX makes the fault: env VAR=..., unshare ..., sh -c 'ulimit ...; exec "$@"' sh) and record the
# verdict of CHECK.
row() {
    local name="$1" want="$2" check="$3"
    shift 3
    local prefix=()
    while [ "$1" != "--" ]; do prefix+=("$1"); shift; done
    shift
    n=$((n + 1))
    REPORT="$TMP/row$n.json"
    echo
    echo "=== $(date -u +%T) [$n] $name (expect exit $want) ==="
    local t0 rc
    t0=$(date +%s)
    timeout 300 "${prefix[@]}" "$PY" -m verify run --json "$REPORT" "$@"
    rc=$?
    local verdict
    verdict=$($PY - "$REPORT" "$check" <<'PYEOF'
import json, sys
try:
    report = json.load(open(sys.argv[1]))
except (OSError, ValueError) as exc:
    print(f"(no report: {exc})")
    raise SystemExit
for r in report.get("results", []):
    if r["name"] == sys.argv[2]:
        print(f"{r['status'].upper()} {r['name']}: {r['summary']}".replace("|", "/").replace("\n", " ")[:400])
        break
else:
    print(f"(no result for {sys.argv[2]})")
PYEOF
)
    echo "--- exit $rc (expected $want) in $(($(date +%s) - t0)) s: $verdict"
    [ "$rc" = "$want" ] || failures=$((failures + 1))
    echo "| $name | $want | $rc | $verdict |" >>"$OUT/faults.md"
    $PY -c 'import json,sys; print(json.dumps({"row": sys.argv[1], "expected": int(sys.argv[2]), "exit": int(sys.argv[3]), "report": json.load(open(sys.argv[4])) if __import__("os").path.exists(sys.argv[4]) else None}))' \
        "$name" "$want" "$rc" "$REPORT" >>"$OUT/faults.jsonl"
}

echo "host: $(nvidia-smi -L | head -n 4)"
echo "driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n 1)"
$PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'

row "healthy host, every check, --require-gpu" 0 gpu -- --require-gpu
row "CUDA_VISIBLE_DEVICES empty" 1 gpu env CUDA_VISIBLE_DEVICES= -- --only gpu
row "CUDA_VISIBLE_DEVICES=7 (no such ordinal)" 1 gpu env CUDA_VISIBLE_DEVICES=7 -- --only gpu
row "CUDA_VISIBLE_DEVICES=GPU-bogus (no such UUID)" 1 gpu env CUDA_VISIBLE_DEVICES=GPU-bogus -- --only gpu
row "CUDA_VISIBLE_DEVICES=7,0 (CUDA stops at the bad entry)" 1 gpu env CUDA_VISIBLE_DEVICES=7,0 -- --only gpu
row "CUDA_VISIBLE_DEVICES=MIG-bogus (no such MIG device)" 1 gpu env CUDA_VISIBLE_DEVICES=MIG-bogus -- --only gpu
row "no fault: CUDA_VISIBLE_DEVICES=0,7 (GPU 0 stays visible)" 0 gpu env CUDA_VISIBLE_DEVICES=0,7 -- --only gpu
uuid=$(nvidia-smi --query-gpu=uuid --format=csv,noheader | head -n 1)
row "no fault: CUDA_VISIBLE_DEVICES=<UUID prefix ${uuid:0:13}>" 0 gpu env CUDA_VISIBLE_DEVICES="${uuid:0:13}" -- --only gpu
row "CUDA_VISIBLE_DEVICES=0,0 (a device named twice)" 1 gpu env CUDA_VISIBLE_DEVICES=0,0 -- --only gpu
# NVML hidden (the test suite's stand-in pynvml with no recording answers "library not found"): /dev/nvidia0 is left.
row "NVML unusable, /dev/nvidia0 present, CUDA_VISIBLE_DEVICES empty" 1 gpu env PYTHONPATH="$PWD/tests/nvml_replay:$PWD" CUDA_VISIBLE_DEVICES= -- --only gpu
row "NVIDIA_VISIBLE_DEVICES=void on a bare host (only a container runtime reads it)" 0 gpu env NVIDIA_VISIBLE_DEVICES=void -- --only gpu --require-gpu

echo; echo "=== another process holds 130 GiB of GPU 0 ==="
$PY -c "import torch,time; x=torch.empty(130*2**30, dtype=torch.uint8, device='cuda'); open('$TMP/held','w').write('1'); time.sleep(600)" &
holder=$!
for _ in $(seq 90); do [ -f "$TMP/held" ] && break; sleep 1; done
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv
row "another process holds 130 GiB (driver check)" 0 driver -- --only driver,gpu,bert --require-gpu
kill "$holder"; wait "$holder" 2>/dev/null

echo; echo "=== another process leaves 3 GiB free ==="
$PY -c "import torch,time; f,_=torch.cuda.mem_get_info(); x=torch.empty(f-3*2**30, dtype=torch.uint8, device='cuda'); open('$TMP/held3','w').write('1'); time.sleep(600)" &
holder=$!
for _ in $(seq 90); do [ -f "$TMP/held3" ] && break; sleep 1; done
row "another process leaves 3 GiB free (gpu sizes down, bert not measured)" 0 bert -- --only gpu,bert --require-gpu
kill "$holder"; wait "$holder" 2>/dev/null

row "/dev/shm of 64 MiB (plain docker run's size)" 0 host unshare -m sh -c 'mount -t tmpfs -o size=64m tmpfs /dev/shm && exec "$@"' sh -- --only host
row "no fault: memlock 64 KiB, no InfiniBand verbs device" 0 host sh -c 'ulimit -l 64 && exec "$@"' sh -- --only host
row "no C++ compiler (CXX names a missing one)" 1 compile env CXX=/nonexistent/g++ -- --only compile
mkdir -p "$TMP/broken-triton/triton"
echo 'raise ImportError("triton deliberately broken by scripts/gpu_faults.sh")' >"$TMP/broken-triton/triton/__init__.py"
row "Triton broken (an import that fails)" 1 compile env PYTHONPATH="$TMP/broken-triton:$PWD" -- --only compile

echo
echo "=== pytest -m gpu tests/gpu with VERIFY_EXPECT_GPU=1 ==="
VERIFY_EXPECT_GPU=1 timeout 300 $PY -m pytest -m gpu tests/gpu -q -p no:cacheprovider 2>&1 | tee "$OUT/pytest-gpu.txt" | tail -n 15
echo "pytest rc=${PIPESTATUS[0]} (expected 0)"
echo "=== the same with the GPU hidden: every test must error, not skip ==="
CUDA_VISIBLE_DEVICES= VERIFY_EXPECT_GPU=1 timeout 120 $PY -m pytest -m gpu tests/gpu -q -p no:cacheprovider 2>&1 | tail -n 4
echo "pytest (GPU hidden) rc=${PIPESTATUS[0]} (expected 1)"

echo
echo "=== fault table ($failures of $n rows off) ==="
cat "$OUT/faults.md"
[ "$failures" = 0 ]
