#!/usr/bin/env bash
# The examples' GPU measurements (issue 14) in ONE command, from the repository root on a GPU host:
#   OUT=/tmp/out bash scripts/gpu_examples.sh
# Trains the bert-base-sized BERT built from a config (102 M parameters, nothing downloaded) on a synthetic
# data set of 12000 reviews: bf16 on 1 GPU (with the export parity check), fp16 with a GradScaler on 1 GPU,
# torchrun with 1 process (world size 1: no process group, what torchrun itself costs) and, where the host has
# 2 or more GPUs, DDP over 2 (then the 2-GPU scaling efficiency: samples/s on 2 / (2 x bf16 samples/s on 1)). Then serves the bf16 model under
# examples/load_test.py's fixed load: --eager at concurrency 1, serve.py's default (eager on the GPU) at 32,
# and --torchscript (the traced file runs on the CPU only) at 32.
# Writes under $OUT: session.log, metrics.jsonl (one finetune metrics.json per run), loads.jsonl (one
# load_test report per load), smi.csv (GPU utilisation and memory each second).
# NVLink multicast stays off (the lent GPU hosts require it); nothing here overrides a user's settings.
set -u
export NCCL_NVLS_ENABLE="${NCCL_NVLS_ENABLE:-0}" TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-/tmp/gpu-examples}"
EPOCHS="${EPOCHS:-2}"
BATCH="${BATCH:-32}"
CONFIG="${CONFIG:-base}"  # tiny: a dry run of this script on a CPU host (with a stand-in nvidia-smi)
PER_LABEL="${PER_LABEL:-4000}"
RUNS="${RUNS:-bf16-1gpu fp16-1gpu torchrun-1proc ddp-2gpu}"  # which training runs (bf16-1gpu is the one served)
PY=python3
mkdir -p "$OUT"
WORK=$(mktemp -d)
NGPU=$(nvidia-smi -L | wc -l)
exec > >(tee "$OUT/session.log") 2>&1
step() { echo; echo "=== $(date -u +%H:%M:%S) $* ==="; }
health() { $PY -c 'import urllib.request as u; print(u.urlopen("http://127.0.0.1:8123/healthz", timeout=2).read().decode())'; }

step "host and versions"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$PY -c 'import sys, torch, transformers; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)'
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 1 >"$OUT/smi.csv" &
smi=$!

step "data: $PER_LABEL synthetic reviews per label"
$PY examples/data/make_synthetic.py --out "$WORK/reviews.csv" --per-label "$PER_LABEL"

train() {  # train NAME LAUNCHER... ARGS: one run (if RUNS names it), its metrics.json appended to metrics.jsonl
    local name=$1; shift
    [[ " $RUNS " == *" $name "* ]] || return 0
    step "train $name: $*"
    local t0; t0=$(date +%s.%N)
    timeout 300 "$@" --data "$WORK/reviews.csv" --from-config "$CONFIG" --epochs "$EPOCHS" --batch-size "$BATCH" \
        --output "$WORK/$name"
    echo "train $name rc=$? wall_s=$(echo "$(date +%s.%N) $t0" | awk '{printf "%.1f", $1 - $2}')"
    [ -f "$WORK/$name/metrics.json" ] && $PY -c 'import json, sys; m = json.load(open(sys.argv[1])); m["run"] = sys.argv[2]; print(json.dumps(m))' "$WORK/$name/metrics.json" "$name" >>"$OUT/metrics.jsonl"
}
train bf16-1gpu $PY examples/finetune_bert.py --precision bf16 --check-export
train fp16-1gpu $PY examples/finetune_bert.py --precision fp16
train torchrun-1proc torchrun --standalone --nproc-per-node 1 examples/finetune_bert.py --precision bf16
if [ "$NGPU" -ge 2 ]; then
    train ddp-2gpu torchrun --standalone --nproc-per-node 2 examples/finetune_bert.py --precision bf16
fi

step "throughput and scaling (last epoch of each run)"
$PY - "$OUT/metrics.jsonl" <<'EOF'
import json, sys
runs = {m["run"]: m for m in map(json.loads, open(sys.argv[1]))}
for name, m in runs.items():
    peak = m["peak_gpu_memory_bytes"]
    print(f"{name}: world {m['world_size']} {m['precision']} on {m['device']}: {m['samples_per_s']:.1f} samples/s, "
          f"peak {(peak or 0) / 2**30:.2f} GiB, accuracy {m['epochs'][-1]['accuracy']:.3f}")
if "ddp-2gpu" in runs and "bf16-1gpu" in runs:
    one, two = runs["bf16-1gpu"]["samples_per_s"], runs["ddp-2gpu"]["samples_per_s"]
    print(f"2-GPU scaling efficiency: {two / (2 * one):.1%} ({two:.1f} / (2 x {one:.1f}))")
else:
    print("2-GPU scaling: not measured (this host has fewer than 2 GPUs)")
EOF

serve() {  # serve NAME CONCURRENCY REQUESTS SERVE_ARGS...: start serve.py, load it, stop it
    local name=$1 concurrency=$2 requests=$3; shift 3
    step "serve $name ($*), load: concurrency $concurrency, $requests requests"
    $PY examples/serve.py --model-dir "$WORK/bf16-1gpu" --host 127.0.0.1 --port 8123 "$@" &
    local server=$!
    for _ in $(seq 120); do
        kill -0 "$server" 2>/dev/null || { echo "serve $name: serve.py exited"; return; }
        health >/dev/null 2>&1 && break
        sleep 1
    done
    health
    $PY examples/load_test.py --url http://127.0.0.1:8123 --concurrency "$concurrency" --requests "$requests" \
        --warmup 200 --data "$WORK/reviews.csv" --json "$WORK/load.json"
    echo "load $name rc=$?"
    [ -f "$WORK/load.json" ] && $PY -c 'import json, sys; r = json.load(open(sys.argv[1])); r["run"] = sys.argv[2]; print(json.dumps(r))' "$WORK/load.json" "$name" >>"$OUT/loads.jsonl"
    rm -f "$WORK/load.json"
    kill "$server"; wait "$server" 2>/dev/null
}
serve eager-gpu-c1 1 500 --eager
serve default-c32 32 5000
serve torchscript-c32 32 2000 --torchscript

kill "$smi" 2>/dev/null
step "done"
