#!/usr/bin/env bash
# Time `verify` on a GPU host in ONE device command (issues 18 and 19). From the repository root:
#   OUT=/tmp/out BEFORE=path/with/verify bash scripts/gpu_verify_timing.sh
# Writes under $OUT: session.log (everything, raw), nvml.json (scripts/record_nvml.py), bench-*.json
# (scripts/bench_verify.py: every run's wall, per-check times, figures and whole output), bench-bert.json,
# gate.json, prof.txt (at most 8 files: what a device call brings back). BEFORE (optional):
# a folder holding an older verify/ to time first, same host, same call (adds bench-before-quick.json).
# XID=1 also writes one XID line into the kernel log (/dev/kmsg, root only) and runs the xid check again:
# the line names a PCI address that is no GPU of this host, so no real GPU is named bad; on a host the xid
# check FAILs on it until the machine reboots (a lent machine starts fresh on its next loan).
set -u
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/gpu-timing}"
mkdir -p "$OUT"
exec > >(tee "$OUT/session.log") 2>&1
step() { echo; echo "=== $(date -u +%H:%M:%S) $* ==="; }
wall() { local t0; t0=$(date +%s.%N); "$@"; echo "rc=$? wall_s=$(echo "$(date +%s.%N) $t0" | awk '{printf "%.2f", $1 - $2}')"; }

step "host"
date -u; nvidia-smi -L; nproc; id
nvidia-smi --query-gpu=name,pci.bus_id,pcie.link.gen.current,pcie.link.gen.max,pcie.link.width.current,pcie.link.width.max --format=csv
python3 -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)'
ls -la /dev/kmsg; cat /proc/sys/kernel/dmesg_restrict; ls /sys/class/infiniband 2>&1
python3 scripts/record_nvml.py > "$OUT/nvml.json"; echo "record_nvml rc=$?"

step "verify gate (the torch-free tier), 3 runs"
for i in 1 2 3; do wall python3 -m verify gate --json "$OUT/gate.json"; done

if [ -n "${BEFORE:-}" ]; then
  step "before: $BEFORE, --quick"
  timeout 150 python3 scripts/bench_verify.py --runs 2 --source "$BEFORE" --out "$OUT/bench-before-quick.json" -- --quick
fi
step "after: --quick"
timeout 150 python3 scripts/bench_verify.py --runs 3 --out "$OUT/bench-after-quick.json" -- --quick
step "after: full"
timeout 170 python3 scripts/bench_verify.py --runs 2 --out "$OUT/bench-after-full.json"
step "verify bench bert, 60 steps x 5"
timeout 120 python3 -m verify bench bert --steps 60 --repeats 5 --json "$OUT/bench-bert.json" | tail -12
step "pinned copies, plain loop"
timeout 60 python3 scripts/gpu_pcie_plain.py
step "profiles"
for check in bert amp; do
  { echo "=== profile_check.py $check --quick"; timeout 60 python3 scripts/profile_check.py "$check" --quick --top 25; } >> "$OUT/prof.txt" 2>&1
  echo "$check rc=$?"
done

if [ "${XID:-0}" = 1 ]; then
  step "XID written into the kernel log, then the xid check"
  echo "<3>NVRM: Xid (PCI:0000:ff:1f): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus. (pytorch-cuda test line, no such GPU)" > /dev/kmsg; echo "write rc=$?"
  wall python3 -m verify run --only xid --json "$OUT/xid.json"
fi
date -u
