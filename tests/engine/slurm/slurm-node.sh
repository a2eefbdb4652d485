#!/bin/bash
# Start one role of the test cluster: munged first (every Slurm RPC is signed with the shared key), then
# slurmctld or slurmd in the foreground. The key comes in read-only at /slurm-test/munge.key; munged
# insists on its own copy, owned by munge and readable by nobody else.
set -euo pipefail
role="${1:-slurmd}"
install -o munge -g munge -m 0400 /slurm-test/munge.key /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
runuser -u munge -- /usr/sbin/munged
mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
case "$role" in
    slurmctld) exec /usr/sbin/slurmctld -D -i ;;
    slurmd)
        # Eight stand-in GPU device files (the script's default --gpus-per-node=8): character devices with
        # /dev/null's numbers, named so that verify does not take them for NVIDIA GPUs.
        for i in 0 1 2 3 4 5 6 7; do
            [[ -e /dev/fakegpu$i ]] || mknod -m 0666 "/dev/fakegpu$i" c 1 3
        done
        exec /usr/sbin/slurmd -D -N "$(hostname)"
        ;;
    *) echo "unknown role '$role'; expected slurmctld or slurmd" >&2; exit 2 ;;
esac
