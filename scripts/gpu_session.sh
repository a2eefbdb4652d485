#!/usr/bin/env bash
# The whole GPU proof in ONE device command (issue 7). Run from the repository root on a GPU host:
#   OUT=/tmp/out bash scripts/gpu_session.sh        (on the lent machines $OUT is set by the device tool)
# Writes under $OUT (at most 8 files come back): session.log, verify.json, pytest-gpu.txt, bench.jsonl,
# nccl-torchrun.json. NVLink multicast stays off: the lent machines require NCCL_NVLS_ENABLE=0 (KINDS.md);
# only this device script sets it, the product never overrides a user's NCCL settings.
set -u
export NCCL_NVLS_ENABLE="${NCCL_NVLS_ENABLE:-0}" TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
OUT="${OUT:-/tmp/gpu-session}"
mkdir -p "$OUT"
TMP=$(mktemp -d)
PY=python3
STEPS="${STEPS:-30}"
NGPU=$(nvidia-smi -L | wc -l)
exec > >(tee "$OUT/session.log") 2>&1
step() { echo; echo "=== $(date -u +%H:%M:%S) $* ==="; }

step "host and versions"
date -u
nvidia-smi
nvidia-smi -q -d CLOCK,PCIE,PERFORMANCE | grep -E 'Clocks Event|Graphics|SM|Memory|Generation|Width|Max|Current|Idle|Power Cap|Thermal' | head -40
$PY -c 'import sys, torch, transformers; print("python", sys.version.split()[0]); print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "nccl", torch.cuda.nccl.version()); print("transformers", transformers.__version__); print("arch_list", torch.cuda.get_arch_list()); print("gpus", torch.cuda.device_count(), torch.cuda.get_device_name(0))'

step "verify run (whole suite, wall time)"
t0=$(date +%s.%N)
timeout 170 $PY -m verify run --json "$OUT/verify.json"; echo "verify run rc=$?"
echo "verify run wall_s=$(echo "$(date +%s.%N) $t0" | awk '{printf "%.1f", $1 - $2}')"

step "pytest -m gpu tests/gpu"
timeout 200 $PY -m pytest -m gpu tests/gpu -q -p no:cacheprovider 2>&1 | tee "$OUT/pytest-gpu.txt"; echo "pytest rc=${PIPESTATUS[0]}"

step "BERT: plain loop vs verify bench bert (bert-base seq 128 batch 64 bf16 SDPA fused AdamW, $STEPS steps x 3)"
for round in 1 2; do
  timeout 90 $PY scripts/gpu_bert_plain.py --steps "$STEPS" --json "$TMP/plain$round.json"
  timeout 90 $PY -m verify bench bert --size base --seq 128 --batch 64 --precision bf16 --steps "$STEPS" \
    --repeats 3 --json "$TMP/verify$round.json"
done

step "nccl: verify under torchrun (joins the job) and the plain all_reduce loop, $NGPU GPU(s)"
timeout 120 $PY -m torch.distributed.run --nproc-per-node "$NGPU" -m verify run --only nccl --json "$OUT/nccl-torchrun.json"; echo "rc=$?"
timeout 120 $PY -m torch.distributed.run --nproc-per-node "$NGPU" scripts/gpu_allreduce_plain.py | tee "$TMP/allreduce.json"

step "torch.compile: plain loop and verify bench --compile (warm-up reported apart)"
timeout 150 $PY scripts/gpu_bert_plain.py --compile --steps "$STEPS" --json "$TMP/plain-compile.json"
timeout 150 $PY -m verify bench bert --compile --steps "$STEPS" --json "$TMP/verify-compile.json"

step "reference figures: tf32 base, bf16 large seq 512 batch 16"
timeout 60 $PY -m verify bench bert --precision tf32 --steps 20 --json "$TMP/verify-tf32.json"
timeout 90 $PY -m verify bench bert --size large --seq 512 --batch 16 --steps 10 --json "$TMP/verify-large.json"

for f in "$TMP"/*.json; do echo "{\"file\": \"$(basename "$f")\", \"data\": $(cat "$f")}"; done > "$OUT/bench.jsonl"
step "summary"
$PY - "$OUT/bench.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
for r in rows:
    d = r["data"]
    if "samples_per_s" in d:
        print(f"{r['file']:24s} samples/s {d['samples_per_s']:>8} spread {d.get('spread')} first_step_s {d.get('first_step_s')}")
plain = [r["data"]["samples_per_s"] for r in rows if r["file"].startswith("plain") and "compile" not in r["file"]]
ours = [r["data"]["samples_per_s"] for r in rows if r["file"].startswith("verify") and r["file"][6:7].isdigit()]
if plain and ours:
    print(f"verify/plain = {min(ours)/max(plain):.4f} (worst case), {sum(ours)/sum(plain):.4f} (means)")
PYEOF
