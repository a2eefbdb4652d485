#!/bin/bash
# verify's node health gate for Slurm: drain a node that fails `verify gate`, return one that verify drained
# once it passes again, and never touch a node an admin drained.
#
# slurm.conf, on every node (slurmd runs it as root, outside any job):
#   HealthCheckProgram=/opt/verify/deploy/slurm/verify-health.sh
#   HealthCheckInterval=300
#   HealthCheckNodeState=ANY,CYCLE
# or as a Prolog (Prolog=...): a failing node is drained and the script exits 1, so Slurm requeues the job
# instead of starting it there.
#
# What it does: `verify gate` (driver and GPU health from NVML, the host's limits, XIDs in the kernel log,
# GPU count, NVLink, the NVSwitch fabric, InfiniBand ports; no torch, a few seconds) with --expect-gpus set
# to the GPUs slurm.conf gives this node (its Gres=gpu:N), then
#   FAIL      -> scontrol update State=DRAIN Reason="verify: <check>: <why and the fix>"; unless someone else
#                set the node's state already (drained, down or failed with a reason not starting with
#                "verify:"): that state and reason stay
#   pass      -> a node drained by verify (reason "verify: ...") -> State=RESUME; any other node: untouched
#   no answer -> (verify missing or crashed, no fresh report, a usage error) nothing changes; the reason is
#                printed; exit 2 as a health check, 0 as a Prolog (Slurm would drain the node on any
#                non-zero Prolog exit, and a broken health check is no verdict on the node)
#
# Settings (environment; for HealthCheckProgram put them in a wrapper or /etc/default file it sources):
#   VERIFY_VENV        a virtualenv with `pip install 'pytorch-cuda[harness]'` (default /opt/verify)
#   VERIFY_GATE_ARGS   extra `verify gate` arguments (e.g. --expect-ib-ports 8); an --expect-gpus here wins
#   VERIFY_STATE_DIR   the last gate report (gate.json, gate.log) and the InfiniBand error counters the next
#                      run compares with (--state-dir; default /var/lib/verify)
#   VERIFY_HEALTH_ENV  a file sourced first, if it exists (default /etc/default/verify-health)
set -uo pipefail

env_file="${VERIFY_HEALTH_ENV:-/etc/default/verify-health}"
# shellcheck source=/dev/null
[ -r "$env_file" ] && . "$env_file"
venv="${VERIFY_VENV:-/opt/verify}"
state_dir="${VERIFY_STATE_DIR:-/var/lib/verify}"
node="${SLURMD_NODENAME:-$(hostname -s)}"
read -r -a extra <<<"${VERIFY_GATE_ARGS:-}"

say() { echo "verify-health[$node]: $*" >&2; }
# No verdict: as a Prolog (SLURM_JOB_ID set) let the job start; Slurm drains on any non-zero Prolog exit.
no_verdict() { say "$*; nothing changed"; if [ -n "${SLURM_JOB_ID:-}" ]; then exit 0; fi; exit 2; }

if [ ! -x "$venv/bin/verify" ]; then
    no_verdict "no $venv/bin/verify; fix: python3 -m venv $venv && $venv/bin/pip install 'pytorch-cuda[harness]', or set VERIFY_VENV"
fi
mkdir -p "$state_dir" || no_verdict "cannot create $state_dir; fix: set VERIFY_STATE_DIR to a writable folder"

# The GPUs slurm.conf gives this node: Gres=gpu:8, gpu:h100:8(S:0-1), or several types (gpu:a:4,gpu:b:2).
node_line="$(scontrol -o show node "$node" 2>/dev/null)" || no_verdict "scontrol show node $node failed; is slurmctld up?"
expect=()
if [[ " ${extra[*]} " != *" --expect-gpus "* ]]; then
    gres="$(grep -o 'Gres=[^ ]*' <<<"$node_line" | head -n 1)"
    gpus="$(tr ',' '\n' <<<"${gres#Gres=}" | sed 's/(.*//' | awk -F: '$1 == "gpu" && $NF ~ /^[0-9]+$/ { n += $NF } END { print n + 0 }')"
    [ "$gpus" -gt 0 ] && expect=(--expect-gpus "$gpus")
fi

report="$state_dir/gate.json"
rm -f "$report"  # a verify that crashes must not leave the last run's verdict to be read as this one's
# ${a[@]+"${a[@]}"}: an empty array under `set -u` aborts bash before 4.4 (RHEL 7)
"$venv/bin/verify" gate --json "$report" --state-dir "$state_dir" ${expect[@]+"${expect[@]}"} ${extra[@]+"${extra[@]}"} \
    >"$state_dir/gate.log" 2>&1
rc=$?

# This node's state and reason as sinfo has them ("drained", "draining", "idle", ...; reason or "none").
IFS='|' read -r state current < <(sinfo -h -N -n "$node" -o '%T|%E' | head -n 1)
drained=0  # out of service: drained, draining, down or failed
case "$state" in *drain* | down* | fail*) drained=1 ;; esac

case "$rc" in
    0)
        if [ "$drained" = 1 ] && [[ "$current" == verify:* ]]; then
            scontrol update NodeName="$node" State=RESUME && say "gate passed; resumed (was drained: $current)"
        fi
        exit 0
        ;;
    1)
        # The reason from this run's own report: it must exist and name a FAIL (a crash exits 1 too).
        reason="$("$venv/bin/python" - "$report" 2>/dev/null <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
failed = [f"{r['name']}: {r['summary']}" for r in report["results"] if r["status"] == "fail"]
if report.get("exit_code") != 1 or not failed:
    sys.exit(1)
text = "verify: " + " | ".join(failed)
print((text[:250] + "...") if len(text) > 253 else text)
PY
)" || { tail -n 5 "$state_dir/gate.log" >&2; no_verdict "verify gate exited 1 without a report naming a FAIL"; }
        if [ "$drained" = 1 ] && [[ "$current" != verify:* ]]; then
            say "gate failed ($reason); left as drained by someone else: $current"
        else
            scontrol update NodeName="$node" State=DRAIN Reason="$reason" && say "drained: $reason"
        fi
        [ -n "${SLURM_JOB_ID:-}" ] && exit 1  # as a Prolog: the job must not start here
        exit 0
        ;;
    *)
        tail -n 5 "$state_dir/gate.log" >&2
        no_verdict "verify gate gave no verdict (exit $rc)"
        ;;
esac
