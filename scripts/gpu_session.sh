#!/usr/bin/env bash
# The whole GPU proof in ONE device command (issue 7). Run from the repository root on a GPU host:
#   OUT=/tmp/out bash scripts/gpu_session.sh        (OUT: the folder the results are written to)
# PARTS picks the parts (default: all): info verify pytest bert nccl compile refs.
# STEPS (default 100) timed steps per repeat and ROUNDS (default 2) alternations of plain loop / verify bench.
# Writes under $OUT (at most 8 files come back): session.log, verify.json, pytest-gpu.txt, bench.jsonl,
# nccl-torchrun.json. NVLink multicast stays off (NCCL_NVLS_ENABLE=0): the GPU host this ran on requires it;
# only this device script sets it, the product never overrides a user's NCCL settings.
set -u
export NCCL_NVLS_ENABLE="${NCCL_NVLS_ENABLE:-0}" TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
OUT="${OUT:-/tmp/gpu-session}"
PARTS="${PARTS:-info verify pytest bert nccl compile refs}"
STEPS="${STEPS:-100}"
ROUNDS="${ROUNDS:-2}"
mkdir -p "$OUT"
TMP=$(mktemp -d)
PY=python3
NGPU=$(nvidia-smi -L | wc -l)
exec > >(tee "$OUT/session.log") 2>&1
step() { echo; echo "=== $(date -u +%H:%M:%S) $* ==="; }
want() { [[ " $PARTS " == *" $1 "* ]]; }
clocks() { nvidia-smi --query-gpu=clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_event_reasons.active,pcie.link.gen.current,pcie.link.width.current --format=csv; }

if want info; then
  step "host and versions"
  date -u
  nvidia-smi
  clocks
  $PY -c 'import sys, torch, transformers; print("python", sys.version.split()[0]); print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "nccl", torch.cuda.nccl.version()); print("transformers", transformers.__version__); print("arch_list", torch.cuda.get_arch_list()); print("gpus", torch.cuda.device_count(), torch.cuda.get_device_name(0))'
  nproc; grep -m1 'model name' /proc/cpuinfo
fi

if want verify; then
  step "verify run (whole suite, wall time)"
  t0=$(date +%s.%N)
  timeout 170 $PY -m verify run --json "$OUT/verify.json"; echo "verify run rc=$?"
  echo "verify run wall_s=$(echo "$(date +%s.%N) $t0" | awk '{printf "%.1f", $1 - $2}')"
fi

if want pytest; then
  step "pytest -m gpu tests/gpu"
  timeout 200 $PY -m pytest -m gpu tests/gpu -q -p no:cacheprovider 2>&1 | tee "$OUT/pytest-gpu.txt"
  echo "pytest rc=${PIPESTATUS[0]}"
fi

if want bert; then
  step "BERT: plain loop vs verify bench bert (base seq 128 batch 64 bf16 SDPA fused AdamW, $STEPS steps x 3)"
  for round in $(seq "$ROUNDS"); do
    timeout 120 $PY scripts/gpu_bert_plain.py --steps "$STEPS" --json "$TMP/plain$round.json"
    timeout 120 $PY -m verify bench bert --size base --seq 128 --batch 64 --precision bf16 --steps "$STEPS" \
      --repeats 3 --json "$TMP/verify$round.json"
    clocks
  done
fi

if want nccl; then
  step "nccl: verify under torchrun (joins the job) and the plain all_reduce loop, $NGPU GPU(s)"
  timeout 120 $PY -m torch.distributed.run --nproc-per-node "$NGPU" -m verify run --only nccl \
    --json "$OUT/nccl-torchrun.json"; echo "rc=$?"
  timeout 120 $PY -m torch.distributed.run --nproc-per-node "$NGPU" scripts/gpu_allreduce_plain.py \
    | tee "$TMP/allreduce.json"
fi

if want compile; then
  step "torch.compile: plain loop and verify bench --compile (warm-up reported apart)"
  timeout 150 $PY scripts/gpu_bert_plain.py --compile --steps "$STEPS" --json "$TMP/plain-compile.json"
  timeout 150 $PY -m verify bench bert --compile --steps "$STEPS" --json "$TMP/verify-compile.json"
fi

if want refs; then
  step "reference figures: tf32 base, bf16 large seq 512 batch 16"
  timeout 60 $PY -m verify bench bert --precision tf32 --steps 20 --json "$TMP/verify-tf32.json"
  timeout 90 $PY -m verify bench bert --size large --seq 512 --batch 16 --steps 10 --json "$TMP/verify-large.json"
fi

step "summary"
$PY - "$TMP" "$OUT/bench.jsonl" <<'PYEOF'
import json, sys
from pathlib import Path
files = sorted(Path(sys.argv[1]).glob("*.json"))
with open(sys.argv[2], "w") as out:
    for f in files:
        try:
            data = json.loads(f.read_text())
        except ValueError:
            continue
        out.write(json.dumps({"file": f.name, "data": data}) + "\n")
        if "samples_per_s" in data:
            print(f"{f.name:22s} samples/s {data['samples_per_s']:>8} spread {data.get('spread')} "
                  f"first_step_s {data.get('first_step_s')} repeats {data.get('repeats') or data.get('samples_per_s_repeats')}")
def sps(prefix):
    return [json.loads(f.read_text())["samples_per_s"] for f in files if f.stem[len(prefix):].isdigit() and f.stem.startswith(prefix)]
plain, ours = sps("plain"), sps("verify")
if plain and ours:
    print(f"verify/plain: worst pair {min(ours) / max(plain):.4f}, means {sum(ours) / sum(plain):.4f}")
PYEOF
