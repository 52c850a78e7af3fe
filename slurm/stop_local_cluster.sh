#!/usr/bin/env bash
# Stop the cluster slurm/start_local_cluster.sh started from STATE_DIR: cancel its jobs, then end
# exactly the daemons recorded in STATE_DIR/pids (nothing found by name). The folder is kept (logs).
#
#   bash slurm/stop_local_cluster.sh [STATE_DIR]     default: $VISIONLAB_SLURM_DIR or /tmp/visionlab-slurm
set -uo pipefail

state="$(realpath -m "${1:-${VISIONLAB_SLURM_DIR:-/tmp/visionlab-slurm}}")"
pids="$state/pids"
export PATH="$PATH:/usr/sbin:/sbin"

if [[ ! -f "$pids" ]]; then
    echo "no local SLURM cluster recorded in $state"
    exit 0
fi

alive() { [[ -r "/proc/$2/comm" ]] && [[ "$(cat "/proc/$2/comm")" == "$1"* ]]; }

# Jobs first, while slurmctld and slurmd still run to end them.
if grep -q '^slurmctld ' "$pids"; then
    export SLURM_CONF="$state/slurm.conf"
    jobs="$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')"
    if [[ -n "${jobs// }" ]]; then
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null
        for _ in $(seq 40); do
            [[ -z "$(squeue -h -t running,completing -o %A 2>/dev/null)" ]] && break
            sleep 0.5
        done
    fi
fi

# Then the daemons, newest first: slurmd, slurmctld, munged.
status=0
tac "$pids" | while read -r name pid; do
    alive "$name" "$pid" || continue
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 40); do alive "$name" "$pid" || break; sleep 0.25; done
    if alive "$name" "$pid"; then
        echo "stop_local_cluster.sh: $name ($pid) ignored SIGTERM; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null
    fi
    echo "stopped $name ($pid)"
done
rm -f "$pids"
exit $status
